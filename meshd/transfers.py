"""What crosses the object service's interface: descriptions of new objects,
what a client declared about the bytes it sends (and the check of it), byte
ranges, and stream re-cutting. (The bytes of a GET: meshd/bodies.py.)"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import AsyncIterable, AsyncIterator

from meshd.digests import Digests, new_checksum
from meshd.errors import DigestMismatch, SizeMismatch
from meshd.model import PartRecord


@dataclass(frozen=True)
class NewObject:
    """What describes a new version besides its bytes."""

    content_type: str = "binary/octet-stream"
    headers: dict[str, str] = field(default_factory=dict)
    user_meta: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Expected:
    """Digests and length the client declared; checked before anything commits.

    `checksums` may be filled while the body streams (aws-chunked trailers)."""

    size: int | None = None
    md5_b64: str | None = None
    sha256_hex: str | None = None
    checksums: dict[str, str] = field(default_factory=dict)
    # Checksums to compute even if no value was sent (so they can be returned).
    algorithms: tuple[str, ...] = ()

    def checksum_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.algorithms, *self.checksums)))


@dataclass(frozen=True)
class ByteRange:
    start: int
    length: int

    @property
    def end(self) -> int:
        return self.start + self.length - 1


@dataclass(frozen=True)
class DeleteResult:
    version_id: str | None
    delete_marker: bool


@dataclass(frozen=True)
class CompletedPart:
    part_number: int
    etag: str
    # Checksums the client listed for the part ({"crc32c": b64}); each must match.
    checksums: dict[str, str] = field(default_factory=dict)


async def rechunk(source: AsyncIterable[bytes], size: int) -> AsyncIterator[bytes]:
    """Re-cut a stream into pieces of at least `size` bytes (but the last), so
    per-chunk work (hashing, thread hops, writes) happens in large steps."""
    buf: list[bytes] = []
    n = 0
    async for chunk in source:
        if not chunk:
            continue
        buf.append(chunk)
        n += len(chunk)
        if n >= size:
            yield buf[0] if len(buf) == 1 else b"".join(buf)
            buf, n = [], 0
    if buf:
        yield b"".join(buf)


def composite_checksums(algorithm: str | None, parts: list[PartRecord]) -> dict[str, str]:
    """S3's multipart checksum: the checksum of the parts' checksums, suffixed -N."""
    if not algorithm or not all(algorithm in p.checksums for p in parts):
        return {}
    h = new_checksum(algorithm)
    for p in parts:
        h.update(base64.b64decode(p.checksums[algorithm]))
    return {algorithm: f"{base64.b64encode(h.digest()).decode()}-{len(parts)}"}


def verify_received(expected: Expected, digests: Digests) -> None:
    """Every digest and the length the client declared, against what arrived."""
    if expected.size is not None and expected.size != digests.size:
        raise SizeMismatch(f"expected {expected.size} bytes, received {digests.size}")
    if expected.md5_b64 is not None:
        if base64.b64encode(digests.md5.digest()).decode() != expected.md5_b64:
            raise DigestMismatch("md5")
    if expected.sha256_hex is not None and expected.sha256_hex != digests.sha256_hex():
        # Not "sha256": that names the x-amz-checksum-sha256 checksum (BadDigest).
        raise DigestMismatch("content-sha256")
    actual = digests.checksum_values()
    for name, value in expected.checksums.items():
        if actual.get(name) != value:
            raise DigestMismatch(name)
