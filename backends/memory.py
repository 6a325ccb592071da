"""Blobs in a dict: for unit tests of code above the backend interface."""

from __future__ import annotations

import secrets
from typing import AsyncIterable, AsyncIterator

from backends.base import (
    BackendError,
    BackendFull,
    BlobMissing,
    BlobRef,
    BlobTruncated,
    FileRegion,
    StagedBlob,
)

READ_CHUNK = 1024 * 1024


class MemoryBackend:
    def __init__(self, name: str = "memory", capacity: int | None = None) -> None:
        self.name = name
        self.capacity = capacity
        self._staged: dict[str, bytes] = {}
        self._blobs: dict[str, bytes] = {}

    def _used(self) -> int:
        return sum(map(len, self._staged.values())) + sum(map(len, self._blobs.values()))

    async def write(self, chunks: AsyncIterable[bytes]) -> StagedBlob:
        parts: list[bytes] = []
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if self.capacity is not None and self._used() + size > self.capacity:
                raise BackendFull("memory backend is full")
            parts.append(bytes(chunk))
        token = secrets.token_hex(8)
        self._staged[token] = b"".join(parts)
        return StagedBlob(self.name, token, size)

    async def commit(self, staged: StagedBlob, content_id: str) -> BlobRef:
        try:
            data = self._staged.pop(staged.token)
        except KeyError:  # discarded or cleaned up: the filesystem's rename fails the same way
            raise BackendError(f"staged blob {staged.token} is gone") from None
        self._blobs[content_id] = data
        return BlobRef(self.name, content_id, staged.size)

    async def discard(self, staged: StagedBlob) -> None:
        self._staged.pop(staged.token, None)

    async def open(self, ref: BlobRef, start: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        try:
            data = self._blobs[ref.content_id]
        except KeyError:
            raise BlobMissing(ref.content_id) from None
        end = ref.size if length is None else start + length
        if end > len(data):
            raise BlobTruncated(f"blob {ref.content_id} is shorter than recorded")
        # In steps, like a real backend, so callers meet chunk boundaries in tests.
        for offset in range(start, end, READ_CHUNK):
            yield data[offset:min(offset + READ_CHUNK, end)]

    async def read_at(self, ref: BlobRef, offset: int, length: int) -> bytes:
        try:
            return self._blobs[ref.content_id][offset:offset + length]
        except KeyError:
            raise BlobMissing(ref.content_id) from None

    def file_region(self, ref: BlobRef, start: int, length: int) -> FileRegion | None:
        return None

    async def stat(self, ref: BlobRef) -> int | None:
        data = self._blobs.get(ref.content_id)
        return None if data is None else len(data)

    async def delete(self, ref: BlobRef) -> None:
        self._blobs.pop(ref.content_id, None)

    async def blob_ids(self) -> AsyncIterator[list[str]]:
        yield list(self._blobs)

    async def cleanup_staging(self) -> int:
        n = len(self._staged)
        self._staged.clear()
        return n

    async def aclose(self) -> None:
        return None
