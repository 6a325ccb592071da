"""A test-side aws-chunked encoder, written from the AWS documentation
(S3 API reference, "sigv4-streaming" and "sigv4-streaming-trailers"), kept
independent of `s3gateway.auth.chunked` so the two can check each other.

Framing:

    signed:            <hex-size>;chunk-signature=<sig>\\r\\n<data>\\r\\n ...
                       0;chunk-signature=<sig>\\r\\n
                       [<trailer>:<value>\\r\\n x-amz-trailer-signature:<sig>\\r\\n]
                       \\r\\n
    unsigned trailer:  <hex-size>\\r\\n<data>\\r\\n ... 0\\r\\n<trailer>:<value>\\r\\n\\r\\n

Chunk string to sign: "AWS4-HMAC-SHA256-PAYLOAD", the request date, the scope,
the previous signature (the request's own for the first chunk), the SHA-256 of
the empty string, the SHA-256 of the chunk's data. Trailer string to sign:
"AWS4-HMAC-SHA256-TRAILER", date, scope, the final chunk's signature, and the
SHA-256 of the trailer lines as "name:value\\n".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import zlib
from dataclasses import dataclass
from typing import Iterable, Sequence

import crc32c

SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def checksum_b64(algorithm: str, data: bytes) -> str:
    """The value of an x-amz-checksum-<algorithm> header or trailer."""
    if algorithm == "crc32":
        raw = zlib.crc32(data).to_bytes(4, "big")
    elif algorithm == "crc32c":
        raw = crc32c.crc32c(data).to_bytes(4, "big")
    elif algorithm == "sha1":
        raw = hashlib.sha1(data).digest()
    elif algorithm == "sha256":
        raw = hashlib.sha256(data).digest()
    else:
        raise ValueError(algorithm)
    return base64.b64encode(raw).decode()


def derive_key(secret: str, date: str, region: str, service: str = "s3") -> bytes:
    key = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


@dataclass
class ChainSigner:
    """Signs chunks one after another, each signature seeding the next."""

    key: bytes
    amz_date: str
    scope: str
    previous: str

    def _sign(self, string_to_sign: str) -> str:
        self.previous = hmac.new(self.key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        return self.previous

    def chunk(self, data: bytes) -> str:
        return self._sign("\n".join((
            "AWS4-HMAC-SHA256-PAYLOAD", self.amz_date, self.scope, self.previous,
            EMPTY_SHA256, hashlib.sha256(data).hexdigest(),
        )))

    def trailer(self, trailers: Sequence[tuple[str, str]]) -> str:
        text = "".join(f"{name}:{value}\n" for name, value in trailers)
        return self._sign("\n".join((
            "AWS4-HMAC-SHA256-TRAILER", self.amz_date, self.scope, self.previous,
            hashlib.sha256(text.encode()).hexdigest(),
        )))


def split(payload: bytes, sizes: Iterable[int]) -> list[bytes]:
    """Cut `payload` into chunks of the given sizes (cycled; at least 1 byte each)."""
    sizes = [max(1, s) for s in sizes] or [len(payload) or 1]
    out, pos, i = [], 0, 0
    while pos < len(payload):
        n = sizes[i % len(sizes)]
        out.append(payload[pos:pos + n])
        pos += n
        i += 1
    return out


def frames(
    chunks: Sequence[bytes],
    mode: str,
    signer: ChainSigner | None = None,
    trailers: Sequence[tuple[str, str]] = (),
) -> list[bytes]:
    """The encoded body as a list of frames: one per data chunk, then the final
    (zero-length) chunk, then the trailer section. b"".join() them to send."""
    signed = mode in (SIGNED, SIGNED_TRAILER)
    if signed and signer is None:
        raise ValueError("signed modes need a signer")
    out = []
    for data in [*chunks, b""]:
        if signed:
            assert signer is not None
            head = f"{len(data):x};chunk-signature={signer.chunk(data)}\r\n".encode()
        else:
            head = f"{len(data):x}\r\n".encode()
        out.append(head + data + (b"\r\n" if data else b""))
    tail = b""
    if mode != SIGNED:
        tail += b"".join(f"{name}:{value}\r\n".encode() for name, value in trailers)
        if mode == SIGNED_TRAILER:
            assert signer is not None
            tail += f"x-amz-trailer-signature:{signer.trailer(trailers)}\r\n".encode()
    out.append(tail + b"\r\n")
    return out


def encode(
    payload: bytes,
    sizes: Iterable[int],
    mode: str,
    signer: ChainSigner | None = None,
    trailers: Sequence[tuple[str, str]] = (),
) -> bytes:
    return b"".join(frames(split(payload, sizes), mode, signer, trailers))
