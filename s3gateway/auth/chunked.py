"""aws-chunked payload decoding (S3 streaming uploads).

    <hex-size>[;chunk-signature=<sig>]\\r\\n<bytes>\\r\\n ... 0[;chunk-signature=<sig>]\\r\\n
    [<trailer-name>:<value>\\r\\n ... [x-amz-trailer-signature:<sig>\\r\\n]]\\r\\n

Signed modes chain every chunk's signature from the previous one (seeded by
the request signature), so a dropped, reordered or altered chunk fails. The
parser is pure over an async `read_line` / `read_exact` source so it can be
fuzzed without a server.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, Callable

from s3gateway import errors as e
from s3gateway.auth.sigv4 import EMPTY_SHA256, sign

MAX_CHUNK_BYTES = 16 * 1024 * 1024
MAX_LINE_BYTES = 4096
MAX_TRAILER_LINES = 16
INLINE_HASH_LIMIT = 64 * 1024


@dataclass
class ChunkSigner:
    """State for verifying a chain of chunk signatures."""

    key: bytes
    amz_date: str
    scope: str
    previous: str

    def verify_chunk(self, data_sha256: str, given: str) -> None:
        sts = "\n".join(("AWS4-HMAC-SHA256-PAYLOAD", self.amz_date, self.scope, self.previous,
                         EMPTY_SHA256, data_sha256))
        self._check(sts, given)

    def verify_trailer(self, trailer_text: str, given: str) -> None:
        digest = hashlib.sha256(trailer_text.encode()).hexdigest()
        sts = "\n".join(("AWS4-HMAC-SHA256-TRAILER", self.amz_date, self.scope, self.previous, digest))
        self._check(sts, given)

    def _check(self, sts: str, given: str) -> None:
        expected = sign(self.key, sts)
        if not hmac.compare_digest(expected.encode(), given.encode()):
            raise e.SignatureDoesNotMatch("The chunk signature does not match.")
        self.previous = given


@dataclass
class Trailers:
    values: dict[str, str] = field(default_factory=dict)


ReadLine = Callable[[], Awaitable[bytes]]
ReadExact = Callable[[int], Awaitable[bytes]]


async def _sha256_hex(data: bytes) -> str:
    if len(data) <= INLINE_HASH_LIMIT:
        return hashlib.sha256(data).hexdigest()
    return await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())


def _parse_header_line(line: bytes, signed: bool) -> tuple[int, str | None]:
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise e.IncompleteBody("The aws-chunked header is not ASCII.") from None
    size_text, _, ext = text.partition(";")
    size_text = size_text.strip()
    if not size_text or len(size_text) > 16 or any(c not in "0123456789abcdefABCDEF" for c in size_text):
        raise e.IncompleteBody("Invalid aws-chunked chunk size.")
    size = int(size_text, 16)
    if size > MAX_CHUNK_BYTES:
        raise e.InvalidArgument("aws-chunked chunk is too large.")
    sig = None
    if ext:
        name, _, value = ext.partition("=")
        if name.strip() != "chunk-signature":
            raise e.IncompleteBody("Invalid aws-chunked chunk extension.")
        sig = value.strip()
    if signed and not sig:
        raise e.SignatureDoesNotMatch("A chunk is missing its signature.")
    return size, sig


async def decode_aws_chunked(
    read_line: ReadLine,
    read_exact: ReadExact,
    *,
    signer: ChunkSigner | None,
    expect_trailer: bool,
    trailers: Trailers,
) -> AsyncIterator[bytes]:
    """Yield the payload bytes; fill `trailers` at the end. Raises S3 errors for
    malformed framing, bad signatures and truncation."""
    while True:
        line = await read_line()
        if not line.endswith(b"\r\n"):
            raise e.IncompleteBody("The aws-chunked body ended early.")
        size, sig = _parse_header_line(line[:-2], signer is not None)
        data = await read_exact(size) if size else b""
        if signer is not None:
            assert sig is not None
            signer.verify_chunk(await _sha256_hex(data), sig)
        if size == 0:
            break
        if await read_exact(2) != b"\r\n":
            raise e.IncompleteBody("An aws-chunked chunk is not followed by CRLF.")
        yield data
    # After the last chunk: trailer lines (if any), then an empty line. The
    # empty line is required: without it a cut-off trailer would pass.
    trailer_lines: list[str] = []
    trailer_sig: str | None = None
    for _ in range(MAX_TRAILER_LINES + 2):
        line = await read_line()
        if line == b"\r\n":
            break
        if not line.endswith(b"\r\n"):
            raise e.IncompleteBody("The aws-chunked trailer ended early.")
        if not expect_trailer:
            raise e.MalformedTrailerError("The request did not declare a trailer.")
        try:
            text = line[:-2].decode("ascii")
        except UnicodeDecodeError:
            raise e.MalformedTrailerError() from None
        name, sep, value = text.partition(":")
        if not sep:
            raise e.MalformedTrailerError()
        name = name.strip().lower()
        if name == "x-amz-trailer-signature":
            trailer_sig = value.strip()
        else:
            trailers.values[name] = value.strip()
            trailer_lines.append(f"{name}:{value.strip()}\n")
            if len(trailer_lines) > MAX_TRAILER_LINES:  # the signature line is not one of them
                raise e.MalformedTrailerError()
    else:
        raise e.MalformedTrailerError()
    if expect_trailer and not trailers.values:
        raise e.MalformedTrailerError("The request declared a trailer but none was sent.")
    if signer is not None and expect_trailer:
        if trailer_sig is None:
            raise e.SignatureDoesNotMatch("The trailer is missing its signature.")
        signer.verify_trailer("".join(trailer_lines), trailer_sig)
