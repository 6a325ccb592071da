"""aws-chunked decoding, through `s3gateway.body.request_body` (the path a real
PUT takes) over an aiohttp StreamReader, against the independent encoder in
tests/support/awschunked.py."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

import pytest
from aiohttp.streams import StreamReader
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from meshd.transfers import Expected
from s3gateway import errors as e
from meshd.digests import Digests
from meshd.errors import SizeMismatch
from meshd.transfers import verify_received
from registry_client.identity import Credential
from s3gateway.auth.chunked import (
    MAX_CHUNK_BYTES,
    MAX_LINE_BYTES,
    MAX_TRAILER_LINES,
    ChunkSigner,
    Trailers,
    decode_aws_chunked,
)
from s3gateway.auth.sigv4 import AuthResult
from s3gateway.body import request_body
from tests.support import awschunked as ac

pytestmark = pytest.mark.timeout(180)
HYP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEY = ac.derive_key("chunk-secret", "20240102", "us-east-1")
DATE, SCOPE = "20240102T030405Z", "20240102/us-east-1/s3/aws4_request"
SEED = hashlib.sha256(b"seed").hexdigest()
MODES = (ac.SIGNED, ac.SIGNED_TRAILER, ac.UNSIGNED_TRAILER)
ALGOS = ("crc32", "crc32c", "sha1", "sha256")


class _Protocol:
    """What StreamReader calls back on its transport for flow control."""

    _reading_paused = False

    def pause_reading(self, **_: object) -> None: ...
    def resume_reading(self, **_: object) -> None: ...


@dataclass
class _Request:
    """The three things request_body reads from an aiohttp request (aiohttp's
    make_mocked_request costs milliseconds, too slow for every-prefix tests)."""

    headers: CIMultiDict
    content: StreamReader

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        return int(value) if value is not None else None


def _auth(mode: str) -> AuthResult:
    cred = Credential("AK", "chunk-secret", "owner", "owner")
    return AuthResult(cred, mode, KEY, SCOPE, DATE, SEED, presigned=False)


def _headers(mode: str, decoded: int, algo: str | None, raw_len: int) -> CIMultiDict:
    h = CIMultiDict({"Content-Encoding": "aws-chunked", "x-amz-content-sha256": mode,
                     "x-amz-decoded-content-length": str(decoded), "Content-Length": str(raw_len)})
    if algo is not None and mode != ac.SIGNED:
        h["x-amz-trailer"] = f"x-amz-checksum-{algo}"
    return h


def encode(payload: bytes, sizes: list[int], mode: str, algo: str | None = "crc32") -> bytes:
    return b"".join(encode_frames(payload, sizes, mode, algo))


def encode_frames(payload: bytes, sizes: list[int], mode: str, algo: str | None = "crc32") -> list[bytes]:
    signer = ac.ChainSigner(KEY, DATE, SCOPE, SEED) if mode != ac.UNSIGNED_TRAILER else None
    trailers = [] if mode == ac.SIGNED or algo is None else [
        (f"x-amz-checksum-{algo}", ac.checksum_b64(algo, payload))]
    return ac.frames(ac.split(payload, sizes), mode, signer, trailers)


async def _decode_once(raw: bytes, headers: CIMultiDict, mode: str) -> tuple[bytes, Expected]:
    reader = StreamReader(_Protocol(), 2 ** 16, loop=asyncio.get_running_loop())
    if raw:
        reader.feed_data(raw)
    reader.feed_eof()
    chunks, expected = request_body(_Request(headers, reader), _auth(mode), 5.0)
    out = b"".join([c async for c in chunks])
    return out, expected


def decode(raw: bytes, mode: str, decoded: int = 0, algo: str | None = "crc32",
           headers: CIMultiDict | None = None) -> tuple[bytes, Expected]:
    h = headers if headers is not None else _headers(mode, decoded, algo, len(raw))
    return asyncio.run(_decode_once(raw, h, mode))


payloads = st.binary(max_size=3000)
chunk_sizes = st.lists(st.integers(1, 1500), min_size=1, max_size=4)


# --- round trips -----------------------------------------------------------------

@HYP
@given(payload=payloads, sizes=chunk_sizes, mode=st.sampled_from(MODES), algo=st.sampled_from(ALGOS))
def test_round_trip(payload, sizes, mode, algo):
    raw = encode(payload, sizes, mode, algo)
    out, expected = decode(raw, mode, len(payload), algo)
    assert out == payload
    assert expected.size == len(payload)
    if mode != ac.SIGNED:
        assert expected.checksums == {algo: ac.checksum_b64(algo, payload)}
        assert algo in expected.algorithms
    else:
        assert expected.checksums == {}


def test_botocore_unsigned_trailer_framing_is_accepted():
    """The exact bytes botocore's AwsChunkedWrapper produces (current botocore's
    default for PutObject is STREAMING-UNSIGNED-PAYLOAD-TRAILER)."""
    import io

    from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum

    payload = bytes(range(256)) * 50
    raw = AwsChunkedWrapper(io.BytesIO(payload), Crc32Checksum, "x-amz-checksum-crc32", chunk_size=1000).read()
    out, expected = decode(raw, ac.UNSIGNED_TRAILER, len(payload), "crc32")
    assert out == payload
    assert expected.checksums["crc32"] == ac.checksum_b64("crc32", payload)


def test_aws_documentation_chunk_signatures():
    """The chunk signatures of the S3 docs' "sigv4-streaming" example (65 KiB of
    'a' in 64 KiB chunks) verify with the server's ChunkSigner."""
    key = ac.derive_key("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "20130524", "us-east-1")
    signer = ChunkSigner(key, "20130524T000000Z", "20130524/us-east-1/s3/aws4_request",
                         "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9")
    signer.verify_chunk(hashlib.sha256(b"a" * 65536).hexdigest(),
                        "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648")
    signer.verify_chunk(hashlib.sha256(b"a" * 1024).hexdigest(),
                        "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497")
    signer.verify_chunk(hashlib.sha256(b"").hexdigest(),
                        "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9")


def test_large_chunk_is_hashed_off_loop_and_verified():
    payload = b"x" * (200 * 1024)  # above the inline-hash limit
    raw = encode(payload, [150 * 1024], ac.SIGNED)
    assert decode(raw, ac.SIGNED, len(payload))[0] == payload


# --- truncation: never accepted, never hangs -------------------------------------

async def _every_prefix(raw: bytes, mode: str, decoded: int, algo: str) -> list[tuple[int, str]]:
    """Decode every strict prefix of `raw`; return those that did not fail with IncompleteBody."""
    wrong = []
    for cut in range(len(raw)):
        h = _headers(mode, decoded, algo, len(raw))
        try:
            await _decode_once(raw[:cut], h, mode)
            wrong.append((cut, "accepted"))
        except e.IncompleteBody:
            pass
        except e.S3Error as err:
            wrong.append((cut, err.code))
    return wrong


@settings(max_examples=40, deadline=None)
@given(payload=st.binary(max_size=120), sizes=st.lists(st.integers(1, 60), min_size=1, max_size=3),
       mode=st.sampled_from(MODES), algo=st.sampled_from(ALGOS))
def test_truncation_at_every_position_is_incomplete_body(payload, sizes, mode, algo):
    raw = encode(payload, sizes, mode, algo)
    assert asyncio.run(_every_prefix(raw, mode, len(payload), algo)) == []


# --- tampering ---------------------------------------------------------------------

def _flip(data: bytes, index: int) -> bytes:
    i = index % len(data)
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]


@HYP
@given(payload=st.binary(min_size=1, max_size=2000), sizes=chunk_sizes,
       mode=st.sampled_from((ac.SIGNED, ac.SIGNED_TRAILER)), pick=st.integers(0, 1000),
       index=st.integers(0, 10_000))
def test_tampered_chunk_data_breaks_the_chain(payload, sizes, mode, pick, index):
    frames = encode_frames(payload, sizes, mode)
    i = pick % (len(frames) - 2)  # a data frame
    head, rest = frames[i].split(b"\r\n", 1)
    data = rest[:-2]
    frames[i] = head + b"\r\n" + _flip(data, index) + b"\r\n"
    with pytest.raises(e.SignatureDoesNotMatch):
        decode(b"".join(frames), mode, len(payload))


@HYP
@given(payload=st.binary(min_size=1, max_size=2000), sizes=chunk_sizes,
       mode=st.sampled_from((ac.SIGNED, ac.SIGNED_TRAILER)), pick=st.integers(0, 1000),
       index=st.integers(0, 63), new=st.sampled_from("0123456789abcdef"))
def test_tampered_chunk_signature_is_rejected(payload, sizes, mode, pick, index, new):
    frames = encode_frames(payload, sizes, mode)
    i = pick % (len(frames) - 1)  # any chunk, the final zero-length one included
    head, sep, rest = frames[i].partition(b"\r\n")
    size, sig = head.split(b";chunk-signature=")
    if sig[index:index + 1] == new.encode():
        new = "0" if new != "0" else "1"
    sig = sig[:index] + new.encode() + sig[index + 1:]
    frames[i] = size + b";chunk-signature=" + sig + sep + rest
    with pytest.raises(e.SignatureDoesNotMatch):
        decode(b"".join(frames), mode, len(payload))


@HYP
@given(payload=st.binary(min_size=2, max_size=2000), size=st.integers(1, 500),
       mode=st.sampled_from((ac.SIGNED, ac.SIGNED_TRAILER)), data=st.data())
def test_reordered_or_dropped_chunks_are_rejected(payload, size, mode, data):
    frames = encode_frames(payload, [size], mode)
    n_data = len(frames) - 2
    if n_data >= 2:
        i = data.draw(st.integers(0, n_data - 2))
        swapped = list(frames)
        swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
        with pytest.raises(e.SignatureDoesNotMatch):
            decode(b"".join(swapped), mode, len(payload))
    j = data.draw(st.integers(0, n_data - 1))
    dropped = frames[:j] + frames[j + 1:]
    with pytest.raises(e.SignatureDoesNotMatch):
        decode(b"".join(dropped), mode, len(payload))


@pytest.mark.parametrize("algo", ALGOS)
def test_signed_trailer_tampering(algo):
    payload = b"hello trailer" * 100
    frames = encode_frames(payload, [500], ac.SIGNED_TRAILER, algo)
    tail = frames[-1].decode()
    good = ac.checksum_b64(algo, payload)
    other = ac.checksum_b64(algo, payload + b"!")
    sig = tail.split("x-amz-trailer-signature:")[1].split("\r\n")[0]
    bad_sig = ("0" if sig[0] != "0" else "1") + sig[1:]
    cases = {
        "value changed": tail.replace(good, other),
        "signature changed": tail.replace(sig, bad_sig),
        "signature missing": tail.replace(f"x-amz-trailer-signature:{sig}\r\n", ""),
        "extra trailer line": tail.replace("x-amz-trailer-signature", "x-amz-meta-x:1\r\nx-amz-trailer-signature"),
    }
    for what, new_tail in cases.items():
        raw = b"".join(frames[:-1]) + new_tail.encode()
        with pytest.raises(e.SignatureDoesNotMatch):
            decode(raw, ac.SIGNED_TRAILER, len(payload), algo)
            pytest.fail(what)
    assert decode(b"".join(frames), ac.SIGNED_TRAILER, len(payload), algo)[0] == payload


def test_trailer_must_be_the_declared_one():
    payload = b"abc" * 10
    raw = encode(payload, [7], ac.UNSIGNED_TRAILER, "crc32c")
    with pytest.raises(e.MalformedTrailerError):
        decode(raw, ac.UNSIGNED_TRAILER, len(payload), headers=_headers(
            ac.UNSIGNED_TRAILER, len(payload), "crc32", len(raw)))


def test_missing_trailer_is_malformed():
    payload = b"abc" * 10
    raw = encode(payload, [7], ac.UNSIGNED_TRAILER, None)
    with pytest.raises(e.MalformedTrailerError):
        decode(raw, ac.UNSIGNED_TRAILER, len(payload), "crc32")


def test_trailer_after_plain_signed_stream_is_refused():
    """STREAMING-AWS4-HMAC-SHA256-PAYLOAD has no trailer: unsigned lines after
    the final chunk must not be accepted (they would be trusted checksums)."""
    payload = b"abc" * 10
    frames = encode_frames(payload, [7], ac.SIGNED)
    raw = b"".join(frames[:-1]) + f"x-amz-checksum-crc32:{ac.checksum_b64('crc32', b'x')}\r\n\r\n".encode()
    with pytest.raises(e.MalformedTrailerError):
        decode(raw, ac.SIGNED, len(payload), None)


@pytest.mark.parametrize("algo", ALGOS)
def test_bad_trailer_checksum_encoding_is_invalid_argument(algo):
    payload = b"abc"
    raw = b"3\r\nabc\r\n0\r\n" + f"x-amz-checksum-{algo}:not base64!\r\n\r\n".encode()
    with pytest.raises(e.InvalidArgument):
        decode(raw, ac.UNSIGNED_TRAILER, len(payload), algo)


# --- malformed framing ---------------------------------------------------------------

@pytest.mark.parametrize("raw, code", [
    pytest.param(b"1" * 300_000, "IncompleteBody", id="endless-line"),  # past the reader limit
    (b"zz\r\n", "IncompleteBody"),                           # not hex
    (b"\xff\xfe\r\n", "IncompleteBody"),                     # not ASCII
    (b"5\nhello\r\n0\r\n\r\n", "IncompleteBody"),            # bare LF
    (b"5\r\nhelloXX0\r\n\r\n", "IncompleteBody"),            # no CRLF after data
    (b"2000000\r\n", "InvalidArgument"),                     # 32 MiB chunk
    (b"5;foo=bar\r\nhello\r\n0\r\n\r\n", "IncompleteBody"),  # unknown extension
])
def test_malformed_framing(raw, code):
    with pytest.raises(e.S3Error) as info:
        decode(raw, ac.UNSIGNED_TRAILER, 5, "crc32")
    assert info.value.code == code


def test_signed_chunk_without_signature():
    with pytest.raises(e.SignatureDoesNotMatch):
        decode(b"5\r\nhello\r\n0\r\n\r\n", ac.SIGNED, 5, None)


@pytest.mark.parametrize("value", [None, "", "abc", "-1", "²", "1e3"])
def test_decoded_length_is_required_and_numeric(value):
    h = CIMultiDict({"x-amz-content-sha256": ac.UNSIGNED_TRAILER, "x-amz-trailer": "x-amz-checksum-crc32"})
    if value is not None:
        h["x-amz-decoded-content-length"] = value
    with pytest.raises(e.MissingContentLength):
        decode(b"0\r\n\r\n", ac.UNSIGNED_TRAILER, headers=h)


# --- hex case and limits: each at the limit and one past it -------------------------

def _with_size_lines(frames: list[bytes], fmt) -> bytes:
    """The frames with each chunk-size field rewritten by fmt(size) (signatures
    cover the chunk data, not how its size is written)."""
    out = []
    for f in frames:
        head, sep, rest = f.partition(b"\r\n")
        size, semi, ext = head.partition(b";")
        if size.strip() and all(c in b"0123456789abcdefABCDEF" for c in size):
            head = fmt(int(size, 16)).encode() + semi + ext
        out.append(head + sep + rest)
    return b"".join(out)


@pytest.mark.parametrize("fmt", [lambda n: f"{n:X}", lambda n: f"{n:x}".capitalize(),
                                 lambda n: f"{n:x}".swapcase()], ids=["upper", "first-upper", "swapped"])
@pytest.mark.parametrize("mode", MODES)
def test_upper_case_hex_chunk_sizes(mode: str, fmt) -> None:
    """S3 reads the chunk size's hex digits in either case (botocore writes lower case)."""
    payload = bytes(range(256)) * 12  # chunks of 0xABC and 0x3D4 bytes: letters in both
    raw = _with_size_lines(encode_frames(payload, [0xABC], mode), fmt)
    assert b"ABC" in raw or b"Abc" in raw
    assert decode(raw, mode, len(payload))[0] == payload


@pytest.mark.parametrize("digits,ok", [(1, True), (15, True), (16, True), (17, False), (40, False)])
def test_chunk_size_field_has_at_most_16_hex_digits(digits: int, ok: bool) -> None:
    size_field = "5".zfill(digits)  # leading zeros count: the field's length is the limit
    raw = f"{size_field}\r\nhello\r\n{'0' * digits}\r\n".encode() + _crc32_trailer(b"hello")
    if ok:
        assert decode(raw, ac.UNSIGNED_TRAILER, 5)[0] == b"hello"
    else:
        with pytest.raises(e.IncompleteBody):
            decode(raw, ac.UNSIGNED_TRAILER, 5)


def _crc32_trailer(payload: bytes) -> bytes:
    return f"x-amz-checksum-crc32:{ac.checksum_b64('crc32', payload)}\r\n\r\n".encode()


def test_max_chunk_bytes_is_16_mib() -> None:
    assert MAX_CHUNK_BYTES == 16 * 1024 * 1024


@pytest.mark.parametrize("mode", [ac.SIGNED, ac.UNSIGNED_TRAILER])
def test_a_chunk_of_exactly_the_maximum_size_is_accepted(mode: str) -> None:
    payload = b"\x5a" * MAX_CHUNK_BYTES
    raw = encode(payload, [MAX_CHUNK_BYTES], mode)
    assert raw.startswith(b"1000000")
    assert decode(raw, mode, len(payload))[0] == payload


@pytest.mark.parametrize("size", [MAX_CHUNK_BYTES + 1, 0xFFFFFFFFFFFFFFFF])
def test_a_chunk_one_byte_over_the_maximum_is_refused_before_its_data(size: int) -> None:
    # Only the size line is sent: the refusal does not wait for (or buffer) the data.
    with pytest.raises(e.InvalidArgument):
        decode(f"{size:x}\r\n".encode(), ac.UNSIGNED_TRAILER, size)


def _padded_trailer_line(length: int) -> bytes:
    """A valid checksum trailer line of exactly `length` bytes (CRLF included):
    optional whitespace after the colon, as in any HTTP field."""
    head, value = "x-amz-checksum-crc32:", ac.checksum_b64("crc32", b"hello")
    pad = length - len(head) - len(value) - 2
    assert pad >= 0
    return f"{head}{' ' * pad}{value}\r\n".encode()


@pytest.mark.parametrize("length,ok", [(MAX_LINE_BYTES - 1, True), (MAX_LINE_BYTES, True),
                                       (MAX_LINE_BYTES + 1, False), (MAX_LINE_BYTES * 3, False)])
def test_line_length_limit(length: int, ok: bool) -> None:
    assert MAX_LINE_BYTES == 4096
    line = _padded_trailer_line(length)
    assert len(line) == length
    raw = b"5\r\nhello\r\n0\r\n" + line + b"\r\n"
    if ok:
        out, expected = decode(raw, ac.UNSIGNED_TRAILER, 5)
        assert out == b"hello" and expected.checksums["crc32"] == ac.checksum_b64("crc32", b"hello")
    else:
        with pytest.raises(e.IncompleteBody):
            decode(raw, ac.UNSIGNED_TRAILER, 5)


@pytest.mark.parametrize("mode", [ac.UNSIGNED_TRAILER, ac.SIGNED_TRAILER])
@pytest.mark.parametrize("n,ok", [(1, True), (MAX_TRAILER_LINES, True), (MAX_TRAILER_LINES + 1, False),
                                  (MAX_TRAILER_LINES + 5, False)])
def test_trailer_line_limit(mode: str, n: int, ok: bool) -> None:
    """At most 16 trailer lines; a signed trailer's x-amz-trailer-signature line is not counted."""
    assert MAX_TRAILER_LINES == 16
    payload = b"trailers"
    trailers = [("x-amz-checksum-crc32", ac.checksum_b64("crc32", payload))]
    trailers += [(f"x-amz-meta-t{i}", str(i)) for i in range(n - 1)]
    signer = ac.ChainSigner(KEY, DATE, SCOPE, SEED) if mode == ac.SIGNED_TRAILER else None
    raw = b"".join(ac.frames([payload], mode, signer, trailers))
    if ok:
        out, expected = decode(raw, mode, len(payload))
        assert out == payload and expected.checksums == {"crc32": trailers[0][1]}
    else:
        with pytest.raises(e.MalformedTrailerError):
            decode(raw, mode, len(payload))


@pytest.mark.parametrize("declared", [0, 9, 10, 11, 10**30])
@pytest.mark.parametrize("mode", MODES)
def test_decoded_length_is_checked_against_the_bytes(mode: str, declared: int) -> None:
    """x-amz-decoded-content-length becomes the expected size; the object service
    refuses anything but exactly that many decoded bytes (S3: IncompleteBody)."""
    payload = b"0123456789"
    out, expected = decode(encode(payload, [4], mode), mode, declared)
    assert out == payload and expected.size == declared
    digests = Digests(expected.checksum_names())
    digests.update(out)
    if declared == len(payload):
        verify_received(expected, digests)
    else:
        with pytest.raises(SizeMismatch):
            verify_received(expected, digests)


@pytest.mark.parametrize("value,size", [("0" * 5000 + "5", 5), ("9" * 4300, int("9" * 4300))],
                         ids=["5000-leading-zeros", "4300-nines"])
def test_decoded_length_digits_python_can_read(value: str, size: int) -> None:
    h = _headers(ac.UNSIGNED_TRAILER, 0, "crc32", 0)
    h["x-amz-decoded-content-length"] = value
    raw = encode(b"hello", [5], ac.UNSIGNED_TRAILER)
    assert decode(raw, ac.UNSIGNED_TRAILER, headers=h)[1].size == size


@pytest.mark.parametrize("digits", [4301, 5000, 100_000])
def test_a_decoded_length_too_long_to_parse_is_incomplete_body(digits: int) -> None:
    """More digits than int() takes (4300): no body has that many bytes. Not a 500."""
    h = _headers(ac.UNSIGNED_TRAILER, 0, "crc32", 0)
    h["x-amz-decoded-content-length"] = "9" * digits
    with pytest.raises(e.IncompleteBody):
        decode(encode(b"hello", [5], ac.UNSIGNED_TRAILER), ac.UNSIGNED_TRAILER, headers=h)


_pieces = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"\r\n", b"0\r\n", b"5\r\nhello\r\n", b";chunk-signature=", b"ffffff\r\n", b":",
                     b"x-amz-checksum-crc32:AAAAAA==\r\n", b"x-amz-trailer-signature:00\r\n",
                     b"\n", b"\r", b"0;chunk-signature=" + b"0" * 64 + b"\r\n"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.one_of(st.binary(max_size=300), st.lists(_pieces, max_size=12).map(b"".join)),
       mode=st.sampled_from(MODES))
def test_garbage_only_raises_s3_errors(raw, mode):
    try:
        decode(raw, mode, 5, "crc32" if mode != ac.SIGNED else None)
    except e.S3Error:
        pass


@settings(max_examples=150, deadline=None)
@given(raw=st.binary(max_size=200), signed=st.booleans(), expect_trailer=st.booleans())
def test_decoder_alone_only_raises_s3_errors(raw, signed, expect_trailer):
    """The pure parser over a bare in-memory source (no aiohttp underneath)."""
    async def run() -> None:
        pos = 0

        async def read_line() -> bytes:
            nonlocal pos
            end = raw.find(b"\n", pos)
            end = len(raw) if end < 0 else end + 1
            line, pos = raw[pos:end], end
            return line

        async def read_exact(n: int) -> bytes:
            nonlocal pos
            if pos + n > len(raw):
                raise e.IncompleteBody()
            out, pos = raw[pos:pos + n], pos + n
            return out

        signer = ChunkSigner(KEY, DATE, SCOPE, SEED) if signed else None
        async for _ in decode_aws_chunked(read_line, read_exact, signer=signer,
                                          expect_trailer=expect_trailer, trailers=Trailers()):
            pass

    try:
        asyncio.run(run())
    except e.S3Error:
        pass
