"""The contract every storage backend keeps.

A blob is written in two steps so that nothing partial is ever visible:

1. `write(chunks)` streams bytes to a staging area and returns a `StagedBlob`
   once they are durable (fsynced). The caller hashes the same stream.
2. `commit(staged, content_id)` moves the staged bytes to their permanent,
   content-addressed place (atomic rename + directory fsync), replacing
   whatever is stored under that id (a blob a crash left unreferenced, or one
   found damaged). Dedup is the caller's decision: the object service, which
   knows from its catalog whether the content is already stored, discards the
   staged copy instead of committing it.

`discard(staged)` drops a staged blob that will not be committed (bad checksum,
client went away). A crash leaves only staged files behind, and
`cleanup_staging()` removes them at start-up.

Reads: `open(ref, start, length)` yields the bytes of a range; `read_at` returns
one range whole (for codecs that read a header, then segments); `file_region`
returns a (path, offset, length) when the bytes sit plain in a local file, so
the S3 edge can use sendfile.

Backends store bytes as given. Encryption and compression wrap a backend
(backends/encoded.py): what a blob's stored bytes are is its `encoding`,
recorded per blob in the catalog.

Backends raise `BackendError` subclasses; the object service maps them to S3
errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterable, AsyncIterator, Protocol


class BackendError(Exception):
    """The backend could not do what was asked (I/O error, unreachable, ...)."""


class BackendFull(BackendError):
    """No space left for this blob."""


class BlobMissing(BackendError):
    """The blob the catalog points to is not there."""


class BlobTruncated(BackendError):
    """The blob is there but holds fewer bytes than the catalog recorded."""


# How a blob's bytes are stored: as written, or through codecs (backends/encoded.py).
PLAIN = "plain"


@dataclass(frozen=True)
class StagedBlob:
    backend: str
    token: str  # backend-private handle, e.g. a temp file path
    size: int  # plain bytes
    encoding: str = PLAIN
    stored_size: int | None = None  # bytes stored; None: the same as size

    @property
    def stored(self) -> int:
        return self.size if self.stored_size is None else self.stored_size


@dataclass(frozen=True)
class BlobRef:
    backend: str
    content_id: str  # sha256 hex of the plain bytes
    size: int  # plain bytes
    encoding: str = PLAIN
    stored_size: int | None = None  # bytes stored; None: the same as size

    @property
    def stored(self) -> int:
        return self.size if self.stored_size is None else self.stored_size


@dataclass(frozen=True)
class FileRegion:
    path: Path
    offset: int
    length: int
    # (size, mtime_ns) the opened file must still have, before and after it is
    # sent; set for files that are not the node's own (ingested data).
    expect: tuple[int, int] | None = None


class Backend(Protocol):
    name: str

    async def write(self, chunks: AsyncIterable[bytes]) -> StagedBlob: ...

    async def commit(self, staged: StagedBlob, content_id: str) -> BlobRef: ...

    async def discard(self, staged: StagedBlob) -> None: ...

    def open(self, ref: BlobRef, start: int = 0, length: int | None = None) -> AsyncIterator[bytes]: ...

    async def read_at(self, ref: BlobRef, offset: int, length: int) -> bytes:
        """Exactly `length` stored bytes at `offset` (fewer: the blob is truncated)."""
        ...

    def file_region(self, ref: BlobRef, start: int, length: int) -> FileRegion | None: ...

    async def stat(self, ref: BlobRef) -> int | None:
        """The blob's stored size, or None when it is not there."""
        ...

    async def delete(self, ref: BlobRef) -> None: ...

    async def cleanup_staging(self) -> int: ...

    def blob_ids(self) -> AsyncIterator[list[str]]:
        """Every committed content id, in batches (for the orphan sweep)."""
        ...

    async def aclose(self) -> None: ...
