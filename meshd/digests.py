"""Streaming digests of object bytes: MD5 (ETag), SHA-256 (content id) and the
optional S3 additional checksum (CRC32, CRC32C, SHA-1, SHA-256).

Large chunks are hashed in a worker thread (hashlib releases the GIL), small
ones inline, where a thread hop would cost more than the hash.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import zlib
from typing import Protocol

import crc32c as _crc32c

INLINE_LIMIT = 64 * 1024

CHECKSUM_ALGORITHMS = ("crc32", "crc32c", "sha1", "sha256")


class _Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...


class _Crc32:
    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes) -> None:
        self.value = zlib.crc32(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(4, "big")


class _Crc32c:
    def __init__(self) -> None:
        self._h = _crc32c.CRC32CHash()

    def update(self, data: bytes) -> None:
        self._h.update(data)

    def digest(self) -> bytes:
        return self._h.digest()


def new_checksum(algorithm: str) -> _Hasher:
    if algorithm == "crc32":
        return _Crc32()
    if algorithm == "crc32c":
        return _Crc32c()
    if algorithm in ("sha1", "sha256"):
        return hashlib.new(algorithm)
    raise ValueError(f"unknown checksum algorithm {algorithm}")


def checksum_b64(algorithm: str, data: bytes) -> str:
    h = new_checksum(algorithm)
    h.update(data)
    return base64.b64encode(h.digest()).decode()


class Digests:
    """MD5 + SHA-256 + the requested checksums, fed chunk by chunk.

    `md5=False` leaves MD5 out where no one needs it (an assembled multipart
    object's ETag comes from its parts): it is the slowest of the hashes."""

    def __init__(self, checksums: tuple[str, ...] = (), *, md5: bool = True) -> None:
        self.md5 = hashlib.md5() if md5 else None
        self.sha256 = hashlib.sha256()
        self.checksums = {name: new_checksum(name) for name in checksums}
        self.size = 0

    def add_checksum(self, name: str) -> None:
        """Start a checksum late is not possible; callers decide up front."""
        if name not in self.checksums:
            raise ValueError(f"checksum {name} requested after data started")

    def update(self, data: bytes) -> None:
        if self.md5 is not None:
            self.md5.update(data)
        self.sha256.update(data)
        for h in self.checksums.values():
            h.update(data)
        self.size += len(data)

    async def aupdate(self, data: bytes) -> None:
        if len(data) <= INLINE_LIMIT:
            self.update(data)
        else:
            await asyncio.to_thread(self.update, data)

    def md5_hex(self) -> str:
        if self.md5 is None:
            raise ValueError("MD5 was not computed")
        return self.md5.hexdigest()

    def sha256_hex(self) -> str:
        return self.sha256.hexdigest()

    def checksum_values(self) -> dict[str, str]:
        return {name: base64.b64encode(h.digest()).decode() for name, h in self.checksums.items()}
