"""Request authentication against a real node: SigV4 headers and presigned URLs,
every payload mode (signed, unsigned, aws-chunked signed, unsigned with
checksum trailers), and what must happen when they are wrong or cut short.

Raw HTTP (http.client / sockets) where boto3 cannot produce the case; requests
are signed by botocore's own signers (tests/support/signing.py) and aws-chunked
bodies come from the independent encoder in tests/support/awschunked.py.

What current botocore (1.43) sends for put_object over plain http, observed
with a before-send hook: a signed payload, x-amz-content-sha256 = the body's
hex SHA-256, and the default CRC32 in an x-amz-checksum-crc32 *header*
(x-amz-sdk-checksum-algorithm: CRC32). Over https it switches to
STREAMING-UNSIGNED-PAYLOAD-TRAILER (aws-chunked, Transfer-Encoding: chunked,
x-amz-trailer: x-amz-checksum-crc32); `_force_trailer` below makes it do that
over http too, so that path is exercised with botocore's real encoder.
"""

from __future__ import annotations

import hashlib
import io
import socket
import time
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import pytest
import xmltodict
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from tests.support import awschunked as ac
from tests.support.process import ACCESS_KEY, REGION, SECRET_KEY
from tests.support.rawhttp import Reply, send
from tests.support.signing import Signed, sign, wire_path

pytestmark = pytest.mark.timeout(120)
ALGOS = ("CRC32", "CRC32C", "SHA1", "SHA256")


# --- raw HTTP ----------------------------------------------------------------------

def _hostport(endpoint: str) -> tuple[str, int]:
    u = urlsplit(endpoint)
    return u.hostname, u.port


def send_signed(endpoint: str, s: Signed, body: bytes | None = None) -> Reply:
    return send(endpoint, s.method, s.target, s.headers, s.body if body is None else body)


def signed(node, method: str, path: str, query=(), headers=(), body: bytes = b"", **kw) -> Signed:
    return sign(method, node.endpoint, path, query, headers, body, access_key=kw.pop("access_key", ACCESS_KEY),
                secret_key=kw.pop("secret_key", SECRET_KEY), region=kw.pop("region", REGION), **kw)


def send_url(url: str, method: str, body: bytes = b"", headers=()) -> Reply:
    u = urlsplit(url)
    target = u.path + ("?" + u.query if u.query else "")
    return send(f"{u.scheme}://{u.netloc}", method, target, list(headers), body)


def assert_absent(s3, bucket: str, key: str) -> None:
    """No version of `key` exists, now or a moment later (the failed request's
    handler may still be unwinding on the server)."""
    for _ in range(2):
        with pytest.raises(ClientError) as info:
            s3.head_object(Bucket=bucket, Key=key)
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
        versions = s3.list_object_versions(Bucket=bucket, Prefix=key)
        assert [v for v in versions.get("Versions", []) if v["Key"] == key] == []
        time.sleep(0.1)


def _set_botocore_clock(monkeypatch, when: datetime) -> None:
    """What botocore's signers (pure Python and, with awscrt installed, CRT) take as now."""
    def fake(remove_tzinfo: bool = True) -> datetime:
        return when.replace(tzinfo=None) if remove_tzinfo else when

    monkeypatch.setattr("botocore.auth.get_current_datetime", fake)
    monkeypatch.setattr("botocore.crt.auth.get_current_datetime", fake, raising=False)


def _key() -> str:
    return f"auth/{uuid.uuid4().hex}"


@pytest.fixture
def presigner(node):
    """boto3 presigns with SigV2 by default for a region that once supported it
    (us-east-1 among them) unless told otherwise; these tests are about SigV4
    (SigV2 has tests/integration/test_sigv2.py), so they ask for "s3v4"."""
    return node.client(signature_version="s3v4")


# --- signatures, keys, dates ---------------------------------------------------------

def test_anonymous_request_is_access_denied_xml(node, bucket):
    r = send(node.endpoint, "GET", f"/{bucket}?list-type=2", [])
    assert r.status == 403
    assert r.code == "AccessDenied"
    doc = xmltodict.parse(r.body)["Error"]
    assert doc["RequestId"] == r.headers["x-amz-request-id"]


def test_bad_signature(node, bucket):
    s = signed(node, "GET", f"/{bucket}", [("list-type", "2")])
    auth = s.header("Authorization")
    bad = auth[:-1] + ("0" if auth[-1] != "0" else "1")
    r = send(node.endpoint, "GET", s.target, [(k, bad if k == "Authorization" else v) for k, v in s.headers])
    assert (r.status, r.code) == (403, "SignatureDoesNotMatch")
    assert send_signed(node.endpoint, s).status == 200


def test_wrong_secret(node, bucket):
    r = send_signed(node.endpoint, signed(node, "GET", f"/{bucket}", secret_key="wrong-secret-000000"))
    assert (r.status, r.code) == (403, "SignatureDoesNotMatch")


def test_unknown_access_key(node, bucket):
    r = send_signed(node.endpoint, signed(node, "GET", f"/{bucket}", access_key="AKIDOESNOTEXIST0000"))
    assert (r.status, r.code) == (403, "InvalidAccessKeyId")


def test_wrong_region(node, bucket):
    r = send_signed(node.endpoint, signed(node, "GET", f"/{bucket}", region="ap-south-1"))
    assert (r.status, r.code) == (400, "AuthorizationHeaderMalformed")


def test_sigv2_header_is_verified(node, bucket):
    """SigV2 is accepted (tests/integration/test_sigv2.py) and so checked: a
    wrong signature, a stale date."""
    now = datetime.now(timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")
    r = send(node.endpoint, "GET", f"/{bucket}", [("Date", now), ("Authorization", f"AWS {ACCESS_KEY}:c2lnbmF0dXJl")])
    assert (r.status, r.code) == (403, "SignatureDoesNotMatch")
    r = send(node.endpoint, "GET", f"/{bucket}", [
        ("Date", "Tue, 27 Mar 2007 19:36:42 +0000"), ("Authorization", f"AWS {ACCESS_KEY}:c2lnbmF0dXJl")])
    assert (r.status, r.code) == (403, "RequestTimeTooSkewed")


@pytest.mark.parametrize("offset", [timedelta(minutes=20), -timedelta(minutes=20)])
def test_skewed_date(node, bucket, monkeypatch, offset):
    _set_botocore_clock(monkeypatch, datetime.now(timezone.utc) + offset)
    r = send_signed(node.endpoint, signed(node, "GET", f"/{bucket}"))
    assert (r.status, r.code) == (403, "RequestTimeTooSkewed")


def test_unsigned_amz_header_is_refused(node, s3, bucket):
    key = _key()
    s = signed(node, "PUT", wire_path(bucket, key), body=b"payload")
    r = send(node.endpoint, "PUT", s.target, [*s.headers, ("x-amz-meta-sneaky", "1")], s.body)
    assert (r.status, r.code) == (403, "AccessDenied")
    assert_absent(s3, bucket, key)


@pytest.mark.parametrize("key", ["a b/c+d", "x/../y", "x//y", "ünïcödé/日本", "~tilde*'()!$"])
def test_boto3_signs_awkward_keys(s3, presigner, bucket, key):
    s3.put_object(Bucket=bucket, Key=key, Body=b"k")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"k"
    url = presigner.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=60)
    assert send_url(url, "GET").body == b"k"


# --- presigned URLs ----------------------------------------------------------------------

def test_default_boto3_presign_is_sigv2_and_accepted(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"v2 body")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=60)
    assert "AWSAccessKeyId=" in url and "X-Amz-Signature" not in url
    r = send_url(url, "GET")
    assert (r.status, r.body) == (200, b"v2 body")
    r = send_url(url.replace("/k?", "/other?"), "GET")
    assert (r.status, r.code) == (403, "SignatureDoesNotMatch")


def test_presigned_put_then_get(s3, presigner, bucket):
    key = _key()
    payload = b"presigned body \x00\xff" * 1000
    put_url = presigner.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=300)
    r = send_url(put_url, "PUT", payload)
    assert r.status == 200, r.body
    get_url = presigner.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=300)
    r = send_url(get_url, "GET")
    assert r.status == 200 and r.body == payload
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == payload


def test_presigned_url_is_bound_to_its_key(s3, presigner, bucket):
    key = _key()
    s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    url = presigner.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=300)
    r = send_url(url.replace(key, key + "x"), "GET")
    assert (r.status, r.code) == (403, "SignatureDoesNotMatch")


def test_presigned_put_cannot_become_a_copy(s3, presigner, bucket):
    """Adding x-amz-copy-source to a presigned PUT would copy anything the
    signer can read: the unsigned x-amz-* header is refused."""
    secret = _key()
    s3.put_object(Bucket=bucket, Key=secret, Body=b"secret")
    target = _key()
    url = presigner.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": target}, ExpiresIn=300)
    r = send_url(url, "PUT", headers=[("x-amz-copy-source", f"/{bucket}/{secret}")])
    assert (r.status, r.code) == (403, "AccessDenied")
    assert_absent(s3, bucket, target)


def test_presigned_expired(s3, presigner, bucket, monkeypatch):
    key = _key()
    s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    _set_botocore_clock(monkeypatch, datetime.now(timezone.utc) - timedelta(hours=2))
    url = presigner.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=3600)
    r = send_url(url, "GET")
    assert (r.status, r.code) == (403, "AccessDenied")
    assert b"expired" in r.body


def test_presigned_expiry_over_a_week(s3, presigner, bucket):
    url = presigner.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=604801)
    r = send_url(url, "GET")
    assert (r.status, r.code) == (400, "AuthorizationQueryParametersError")


def test_presigned_missing_signature(s3, presigner, bucket):
    url = presigner.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=60)
    r = send_url(url.split("&X-Amz-Signature=")[0], "GET")
    assert (r.status, r.code) == (400, "AuthorizationQueryParametersError")


# --- payload modes -------------------------------------------------------------------------

def test_signed_payload_hash_mismatch(node, s3, bucket):
    key = _key()
    s = signed(node, "PUT", wire_path(bucket, key), body=b"what was signed")
    r = send_signed(node.endpoint, s, body=b"what was sent!!")  # same length
    assert (r.status, r.code) == (400, "XAmzContentSHA256Mismatch")
    assert_absent(s3, bucket, key)


def test_unsigned_payload_put(node, s3, bucket):
    key = _key()
    s = signed(node, "PUT", wire_path(bucket, key), body=b"unsigned", unsigned_payload=True)
    assert s.header("x-amz-content-sha256") == "UNSIGNED-PAYLOAD"
    assert send_signed(node.endpoint, s).status == 200
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"unsigned"


def _chunked_request(node, bucket: str, key: str, payload: bytes, mode: str, sizes: list[int],
                     trailers: list[tuple[str, str]] = (), declared: str | None = None,
                     decoded_length: int | None = None, cut_from_end: int = 0
                     ) -> tuple[Signed, list[bytes]]:
    """Sign the request head with botocore (x-amz-content-sha256 = `mode`), then
    frame the body, chaining chunk signatures from the request's signature."""
    chunks = ac.split(payload, sizes)
    dummy = ac.ChainSigner(b"k", "d", "s", "0" * 64) if mode != ac.UNSIGNED_TRAILER else None
    length = len(b"".join(ac.frames(chunks, mode, dummy, trailers)))
    headers = [("Content-Encoding", "aws-chunked"), ("Content-Length", str(length - cut_from_end)),
               ("x-amz-decoded-content-length", str(len(payload) if decoded_length is None else decoded_length))]
    if mode != ac.SIGNED:
        headers.append(("x-amz-trailer", declared or trailers[0][0]))
    s = signed(node, "PUT", wire_path(bucket, key), headers=headers, payload=mode)
    amz_date = s.header("x-amz-date")
    signer = None
    if mode != ac.UNSIGNED_TRAILER:
        seed = s.header("Authorization").rsplit("Signature=", 1)[1]
        signer = ac.ChainSigner(ac.derive_key(SECRET_KEY, amz_date[:8], REGION), amz_date,
                                f"{amz_date[:8]}/{REGION}/s3/aws4_request", seed)
    frames = ac.frames(chunks, mode, signer, trailers)
    assert len(b"".join(frames)) == length
    return s, frames


@pytest.mark.parametrize("mode", [ac.SIGNED, ac.SIGNED_TRAILER])
def test_signed_aws_chunked_put_reads_back_exact(node, s3, bucket, mode):
    key = _key()
    payload = bytes(range(256)) * 700 + b"tail"  # 179,204 bytes: several chunks and a short last one
    trailers = [("x-amz-checksum-crc32c", ac.checksum_b64("crc32c", payload))] if mode == ac.SIGNED_TRAILER else []
    s, frames = _chunked_request(node, bucket, key, payload, mode, [64 * 1024], trailers)
    r = send_signed(node.endpoint, s, b"".join(frames))
    assert r.status == 200, r.body
    got = s3.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert got["Body"].read() == payload
    assert got["ContentLength"] == len(payload)
    if trailers:
        assert got["ChecksumCRC32C"] == trailers[0][1]


def test_signed_aws_chunked_tampered_chunk(node, s3, bucket):
    key = _key()
    payload = b"a" * 20000
    s, frames = _chunked_request(node, bucket, key, payload, ac.SIGNED, [8192])
    frames[1] = frames[1].replace(b"aaaa", b"aaab", 1)
    r = send_signed(node.endpoint, s, b"".join(frames))
    assert (r.status, r.code) == (403, "SignatureDoesNotMatch")
    assert_absent(s3, bucket, key)


def test_signed_aws_chunked_reordered_chunks(node, s3, bucket):
    key = _key()
    payload = b"".join(bytes([i]) * 8192 for i in range(3))
    s, frames = _chunked_request(node, bucket, key, payload, ac.SIGNED, [8192])
    frames[0], frames[1] = frames[1], frames[0]
    r = send_signed(node.endpoint, s, b"".join(frames))
    assert (r.status, r.code) == (403, "SignatureDoesNotMatch")
    assert_absent(s3, bucket, key)


@pytest.mark.parametrize("algo", [a.lower() for a in ALGOS])
def test_unsigned_trailer_put_correct_then_wrong_checksum(node, s3, bucket, algo):
    payload = b"trailing checksum " * 5000
    name = f"x-amz-checksum-{algo}"
    key = _key()
    s, frames = _chunked_request(node, bucket, key, payload, ac.UNSIGNED_TRAILER, [30000],
                                 [(name, ac.checksum_b64(algo, payload))])
    r = send_signed(node.endpoint, s, b"".join(frames))
    assert r.status == 200, r.body
    assert r.headers[name] == ac.checksum_b64(algo, payload)
    got = s3.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert got["Body"].read() == payload
    assert got[f"Checksum{algo.upper()}"] == ac.checksum_b64(algo, payload)

    key = _key()
    s, frames = _chunked_request(node, bucket, key, payload, ac.UNSIGNED_TRAILER, [30000],
                                 [(name, ac.checksum_b64(algo, payload + b"x"))])
    r = send_signed(node.endpoint, s, b"".join(frames))
    assert (r.status, r.code) == (400, "BadDigest")
    assert_absent(s3, bucket, key)


def test_trailer_other_than_declared(node, s3, bucket):
    key = _key()
    payload = b"declared crc32, sent sha256"
    s, frames = _chunked_request(node, bucket, key, payload, ac.UNSIGNED_TRAILER, [10],
                                 [("x-amz-checksum-sha256", ac.checksum_b64("sha256", payload))],
                                 declared="x-amz-checksum-crc32")
    r = send_signed(node.endpoint, s, b"".join(frames))
    assert (r.status, r.code) == (400, "MalformedTrailerError")
    assert_absent(s3, bucket, key)


@pytest.mark.parametrize("declared", [999, 1001])
def test_decoded_length_mismatch(node, s3, bucket, declared):
    key = _key()
    payload = b"0123456789" * 100
    s, frames = _chunked_request(node, bucket, key, payload, ac.SIGNED, [300], decoded_length=declared)
    r = send_signed(node.endpoint, s, b"".join(frames))
    assert (r.status, r.code) == (400, "IncompleteBody")
    assert_absent(s3, bucket, key)


@pytest.mark.parametrize("mode", [ac.SIGNED, ac.SIGNED_TRAILER, ac.UNSIGNED_TRAILER])
def test_aws_chunked_body_ending_early_within_a_complete_http_body(node, s3, bucket, mode):
    """The HTTP body is complete (Content-Length says so) but the aws-chunked
    framing inside stops short: after the final chunk, or inside the trailer."""
    payload = b"q" * 5000
    trailers = [("x-amz-checksum-sha256", ac.checksum_b64("sha256", payload))] if mode != ac.SIGNED else []
    _, frames = _chunked_request(node, bucket, _key(), payload, mode, [2048], trailers)
    cuts = {1, 2, len(frames[-1])}  # lose the final CRLF, the trailer section, ...
    if trailers:
        cuts.add(len(frames[-1]) - 20)  # ... or stop inside the trailer line
    for cut in sorted(cuts):
        key = _key()
        s, frames = _chunked_request(node, bucket, key, payload, mode, [2048], trailers, cut_from_end=cut)
        r = send_signed(node.endpoint, s, b"".join(frames)[:-cut])
        assert (r.status, r.code) == (400, "IncompleteBody"), (cut, r.body)
        assert_absent(s3, bucket, key)


def _send_partial_and_close(endpoint: str, s: Signed, body: bytes, cut: int, *, half_close: bool) -> bytes:
    """Send the request head and body[:cut], then stop sending. Returns what the
    server answered before closing (often nothing). A hang fails by timeout."""
    host, port = _hostport(endpoint)
    head = f"{s.method} {s.target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in s.headers) + "\r\n"
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(head.encode() + body[:cut])
        if not half_close:
            return b""
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while True:
            data = sock.recv(65536)  # socket.timeout here means the server hung
            if not data:
                return received
            received += data


@pytest.mark.parametrize("mode", [ac.SIGNED, ac.UNSIGNED_TRAILER])
@pytest.mark.parametrize("half_close", [True, False])
def test_truncated_aws_chunked_body(node, s3, bucket, mode, half_close):
    payload = b"z" * 100_000
    trailers = [("x-amz-checksum-crc32", ac.checksum_b64("crc32", payload))] if mode != ac.SIGNED else []
    for cut_at in (0.5, 0.999):
        key = _key()
        s, frames = _chunked_request(node, bucket, key, payload, mode, [16384], trailers)
        body = b"".join(frames)
        answer = _send_partial_and_close(node.endpoint, s, body, int(len(body) * cut_at), half_close=half_close)
        assert b"200 OK" not in answer.split(b"\r\n", 1)[0]
        assert_absent(s3, bucket, key)
    # the node is still serving
    assert s3.head_bucket(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_truncated_plain_body(node, s3, bucket):
    key = _key()
    s = signed(node, "PUT", wire_path(bucket, key), body=b"p" * 50_000, unsigned_payload=True)
    answer = _send_partial_and_close(node.endpoint, s, s.body, 25_000, half_close=True)
    assert b"200 OK" not in answer.split(b"\r\n", 1)[0]
    assert_absent(s3, bucket, key)


# --- what boto3 sends ------------------------------------------------------------------------

def _force_trailer(params, **_):
    """Make botocore put the checksum in an aws-chunked trailer, as it does over https."""
    algorithm = params["context"].get("checksum", {}).get("request_algorithm")
    if isinstance(algorithm, dict):
        algorithm["in"] = "trailer"


def test_boto3_default_put_over_http_is_signed_payload_with_crc32_header(s3, bucket):
    seen = []
    s3.meta.events.register("before-send.s3.PutObject", lambda request, **_: seen.append(dict(request.headers)))
    try:
        s3.put_object(Bucket=bucket, Key="default", Body=b"hello")
    finally:
        s3.meta.events.unregister("before-send.s3.PutObject")
    headers = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in seen[0].items()}
    assert headers["x-amz-content-sha256"] == hashlib.sha256(b"hello").hexdigest()
    assert headers["x-amz-checksum-crc32"] == ac.checksum_b64("crc32", b"hello")


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("trailer", [False, True], ids=["header", "trailer"])
def test_boto3_checksums_round_trip(s3, bucket, algo, trailer):
    if trailer:
        s3.meta.events.register("before-call.s3.PutObject", _force_trailer)
    try:
        payload = b"checksummed " * 3000
        key = _key()
        r = s3.put_object(Bucket=bucket, Key=key, Body=io.BytesIO(payload), ChecksumAlgorithm=algo)
        expected = ac.checksum_b64(algo.lower(), payload)
        assert r[f"Checksum{algo}"] == expected
        got = s3.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        assert got["Body"].read() == payload  # botocore also validates the checksum while reading
        assert got[f"Checksum{algo}"] == expected
        assert s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")[f"Checksum{algo}"] == expected

        key2 = _key()
        s3.upload_fileobj(io.BytesIO(payload), bucket, key2, ExtraArgs={"ChecksumAlgorithm": algo})
        got = s3.get_object(Bucket=bucket, Key=key2, ChecksumMode="ENABLED")
        assert got["Body"].read() == payload
        assert got[f"Checksum{algo}"] == expected
    finally:
        if trailer:
            s3.meta.events.unregister("before-call.s3.PutObject", _force_trailer)


def test_boto3_multipart_upload_with_checksum(s3, bucket):
    payload = bytes(range(256)) * (11 * 4096)  # 11 MiB: three parts of 5, 5, 1 MiB
    key = _key()
    config = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
    s3.meta.events.register("before-call.s3.UploadPart", _force_trailer)
    try:
        s3.upload_fileobj(io.BytesIO(payload), bucket, key, ExtraArgs={"ChecksumAlgorithm": "CRC32C"},
                          Config=config)
    finally:
        s3.meta.events.unregister("before-call.s3.UploadPart", _force_trailer)
    got = s3.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert got["Body"].read() == payload
    assert got["ChecksumCRC32C"].endswith("-3")


def test_boto3_tampered_trailer_checksum_is_bad_digest(s3, bucket):
    """botocore's own trailer encoder, with the trailer's value replaced."""
    def corrupt(request, **_):
        body = request.body
        if hasattr(body, "_make_chunk"):
            original = body._make_chunk

            def make_chunk():
                chunk = original()
                if chunk.startswith(b"0\r\nx-amz-checksum-crc32:"):
                    return b"0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n"
                return chunk
            body._make_chunk = make_chunk

    key = _key()
    s3.meta.events.register("before-call.s3.PutObject", _force_trailer)
    s3.meta.events.register("request-created.s3.PutObject", corrupt)
    try:
        with pytest.raises(ClientError) as info:
            s3.put_object(Bucket=bucket, Key=key, Body=io.BytesIO(b"x" * 1000), ChecksumAlgorithm="CRC32")
    finally:
        s3.meta.events.unregister("before-call.s3.PutObject", _force_trailer)
        s3.meta.events.unregister("request-created.s3.PutObject", corrupt)
    assert info.value.response["Error"]["Code"] == "BadDigest"
    assert_absent(s3, bucket, key)


def test_refused_request_never_gets_100_continue(node, bucket):
    """A client that waits for `100 Continue` before sending its body: a request
    that fails authentication is answered at once with the final error and the
    connection is closed (the body never comes, so nothing else may follow on
    it); a good request gets its 100 first and then its 200."""
    host, port = _hostport(node.endpoint)
    key = _key()

    def exchange(headers: dict[str, str]) -> bytes:
        """Send the head; send the body only if asked to continue; return every
        response head and the final response's body."""
        with socket.create_connection((host, port), timeout=10) as sock:
            lines = [f"PUT /{bucket}/{key} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            data = b""
            while b"\r\n\r\n" not in data:
                data += sock.recv(65536)
            if data.startswith(b"HTTP/1.1 100"):
                sock.sendall(b"hello")
                while data.count(b"\r\n\r\n") < 2:
                    data += sock.recv(65536)
            head = data.rsplit(b"\r\n\r\n", 1)[0]
            length = int(next(v for k, _, v in (h.partition(b": ") for h in head.split(b"\r\n"))
                              if k.lower() == b"content-length"))
            while len(data) - len(head) - 4 < length:
                data += sock.recv(65536)
            return data

    now = datetime.now(timezone.utc)
    refused = exchange({"Host": f"{host}:{port}", "Content-Length": "5", "Expect": "100-continue",
                        "Authorization": f"AWS4-HMAC-SHA256 Credential=NOPE/{now:%Y%m%d}/us-east-1/s3/aws4_request, "
                                         "SignedHeaders=host, Signature=" + "0" * 64,
                        "x-amz-date": now.strftime("%Y%m%dT%H%M%SZ"),
                        "x-amz-content-sha256": "UNSIGNED-PAYLOAD", "Connection": "keep-alive"})
    assert not refused.startswith(b"HTTP/1.1 100")
    assert refused.startswith(b"HTTP/1.1 403")
    assert b"InvalidAccessKeyId" in refused
    assert b"Connection: close" in refused.split(b"\r\n\r\n")[0]

    s = signed(node, "PUT", f"/{bucket}/{key}", headers=[("Expect", "100-continue"),
                                                          ("Content-Length", "5")], body=b"hello")
    accepted = exchange({**dict(s.headers), "Connection": "close"})
    assert accepted.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200")
