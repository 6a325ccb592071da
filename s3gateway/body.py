"""Request bodies as byte streams, with what the client declared about them.

Turns an aiohttp request into `(chunks, Expected)`: plain or aws-chunked
framing decoded, Content-MD5 / x-amz-checksum-* / x-amz-content-sha256 carried
into `Expected` for the object service to check once the bytes are in. Every
read has a deadline, and a client that goes away mid-body is an IncompleteBody.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import AsyncIterator

from aiohttp import http_exceptions, web

from meshd.digests import CHECKSUM_ALGORITHMS
from meshd.transfers import Expected
from s3gateway import errors as e
from s3gateway.auth.chunked import (
    MAX_LINE_BYTES,
    ChunkSigner,
    Trailers,
    decode_aws_chunked,
)
from s3gateway.auth.sigv4 import (
    STREAMING_MODES,
    STREAMING_SIGNED,
    STREAMING_SIGNED_TRAILER,
    UNSIGNED_PAYLOAD,
    AuthResult,
)

READ_SIZE = 256 * 1024
# What reading a request body raises when the client sends less than it said or
# goes away: aiohttp's parser errors (ContentLengthError, TransferEncodingError,
# LineTooLong ...) all derive from HttpProcessingError.
_BODY_ERRORS = (ConnectionError, asyncio.IncompleteReadError, web.HTTPException,
                http_exceptions.HttpProcessingError)
_CHECKSUM_LENGTHS = {"crc32": 4, "crc32c": 4, "sha1": 20, "sha256": 32}


def declared_checksums(headers) -> tuple[dict[str, str], tuple[str, ...]]:
    """x-amz-checksum-<algo> values, and the algorithms to compute (including
    one only named by x-amz-sdk-checksum-algorithm or x-amz-trailer)."""
    values: dict[str, str] = {}
    for algo in CHECKSUM_ALGORITHMS:
        v = headers.get(f"x-amz-checksum-{algo}")
        if v is not None:
            _check_b64(v, _CHECKSUM_LENGTHS[algo], f"x-amz-checksum-{algo}")
            values[algo] = v
    if len(values) > 1:
        raise e.InvalidRequest("Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.")
    algos: list[str] = list(values)
    named = (headers.get("x-amz-sdk-checksum-algorithm") or headers.get("x-amz-checksum-algorithm") or "").lower()
    if named:
        if named not in CHECKSUM_ALGORITHMS:
            raise e.InvalidRequest(f"Checksum algorithm {named} is not supported.")
        algos.append(named)
    trailer = (headers.get("x-amz-trailer") or "").strip().lower()
    if trailer:
        algo = trailer.removeprefix("x-amz-checksum-")
        if not trailer.startswith("x-amz-checksum-") or algo not in CHECKSUM_ALGORITHMS:
            raise e.InvalidRequest(f"The trailer {trailer} is not supported.")
        algos.append(algo)
    return values, tuple(dict.fromkeys(algos))


def _check_b64(value: str, length: int, name: str) -> None:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise e.InvalidArgument(f"Value for {name} header is invalid.") from None
    if len(raw) != length:
        raise e.InvalidArgument(f"Value for {name} header is invalid.")


def declared_md5(headers) -> str | None:
    md5 = headers.get("content-md5")
    if md5 is None:
        return None
    try:
        raw = base64.b64decode(md5, validate=True)
    except (binascii.Error, ValueError):
        raise e.InvalidDigest() from None
    if len(raw) != 16:
        raise e.InvalidDigest()
    return md5


def request_body(
    request: web.Request, auth: AuthResult | None, read_timeout: float
) -> tuple[AsyncIterator[bytes], Expected]:
    headers = request.headers
    payload = auth.payload_hash if auth else UNSIGNED_PAYLOAD
    checksums, algorithms = declared_checksums(headers)
    expected = Expected(md5_b64=declared_md5(headers), checksums=checksums, algorithms=algorithms)
    content = request.content

    async def read_exact(n: int) -> bytes:
        try:
            async with asyncio.timeout(read_timeout):
                return await content.readexactly(n)
        except asyncio.IncompleteReadError:
            raise e.IncompleteBody() from None
        except TimeoutError:
            raise e.RequestTimeout() from None
        except _BODY_ERRORS:
            raise e.IncompleteBody() from None

    if payload in STREAMING_MODES:
        declared = headers.get("x-amz-decoded-content-length")
        if declared is None or not (declared.isascii() and declared.isdigit()):
            raise e.MissingContentLength("x-amz-decoded-content-length is required for aws-chunked uploads.")
        try:
            expected.size = int(declared.lstrip("0") or "0")
        except ValueError:  # over 4300 digits, more than Python parses: more than any body holds
            raise e.IncompleteBody() from None
        signer = None
        if payload in (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER):
            assert auth is not None
            signer = ChunkSigner(auth.signing_key, auth.amz_date, auth.scope, auth.seed_signature)
        trailers = Trailers()

        async def read_line() -> bytes:
            try:
                async with asyncio.timeout(read_timeout):
                    line = await content.readuntil(b"\n", max_size=MAX_LINE_BYTES)
            except TimeoutError:
                raise e.RequestTimeout() from None
            except (ValueError, http_exceptions.LineTooLong):
                raise e.IncompleteBody("An aws-chunked line is too long.") from None
            except _BODY_ERRORS:
                raise e.IncompleteBody() from None
            if len(line) > MAX_LINE_BYTES:
                raise e.IncompleteBody("An aws-chunked line is too long.")
            return line

        async def chunked() -> AsyncIterator[bytes]:
            async for chunk in decode_aws_chunked(
                read_line, read_exact, signer=signer,
                expect_trailer=payload != STREAMING_SIGNED, trailers=trailers,
            ):
                yield chunk
            declared_trailer = (headers.get("x-amz-trailer") or "").strip().lower()
            if declared_trailer and declared_trailer not in trailers.values:
                raise e.MalformedTrailerError(f"The trailer {declared_trailer} was declared but not sent.")
            for name, value in trailers.values.items():
                algo = name.removeprefix("x-amz-checksum-")
                if name.startswith("x-amz-checksum-") and algo in _CHECKSUM_LENGTHS:
                    _check_b64(value, _CHECKSUM_LENGTHS[algo], name)
                    expected.checksums[algo] = value

        return chunked(), expected

    if payload != UNSIGNED_PAYLOAD:
        expected.sha256_hex = payload
    length = request.content_length
    if length is None and request.headers.get("transfer-encoding", "").lower() != "chunked":
        length = 0
    expected.size = length

    async def plain() -> AsyncIterator[bytes]:
        received = 0
        while True:
            try:
                async with asyncio.timeout(read_timeout):
                    chunk = await content.read(READ_SIZE)
            except TimeoutError:
                raise e.RequestTimeout() from None
            except _BODY_ERRORS:
                raise e.IncompleteBody() from None
            if not chunk:
                break
            received += len(chunk)
            yield chunk
        if length is not None and received != length:
            raise e.IncompleteBody()

    return plain(), expected


async def read_small_body(request: web.Request, auth: AuthResult | None, limit: int) -> bytes:
    """A bounded request body read whole (XML documents), with its digests checked."""
    import hashlib

    if request.content_length is not None and request.content_length > limit:
        raise e.MaxMessageLengthExceeded()
    chunks, expected = request_body(request, auth, 60.0)
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise e.MaxMessageLengthExceeded()
        parts.append(chunk)
    data = b"".join(parts)
    if expected.sha256_hex is not None and hashlib.sha256(data).hexdigest() != expected.sha256_hex:
        raise e.XAmzContentSHA256Mismatch()
    if expected.md5_b64 is not None:
        if base64.b64encode(hashlib.md5(data).digest()).decode() != expected.md5_b64:
            raise e.BadDigest()
    from meshd.digests import checksum_b64

    for algo, value in expected.checksums.items():
        if checksum_b64(algo, data) != value:
            raise e.BadDigest(f"The {algo.upper()} you specified did not match the calculated checksum.")
    return data
