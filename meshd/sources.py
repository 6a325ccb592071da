"""Where the bytes of a version can come from, asked in order.

`ObjectService.open_object` looks up this node's copies of a version's content
once, then asks each source in turn; the first that holds the bytes returns
the body. The node's order (meshd/node.py): the catalog itself (inline
copies), the node's backends, files ingested in place, and, with the mesh, the
peers. A source that does not hold the bytes returns None; one that holds them
but cannot read them now raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from meshd.bodies import ObjectBody
from meshd.blobs import BlobStore
from meshd.catalog.records import CACHE, INGESTED, INLINE_BACKEND, BlobInfo
from meshd.model import VersionRecord
from meshd.transfers import ByteRange

if TYPE_CHECKING:
    from meshd.ingest import IngestService


@dataclass(frozen=True)
class Wanted:
    """A read, as the sources see it: the version, the range, and the copies
    of its content this node records (looked up once for all sources)."""

    version: VersionRecord
    range: ByteRange | None
    copies: list[BlobInfo]

    @property
    def start(self) -> int:
        return self.range.start if self.range else 0

    @property
    def length(self) -> int:
        return self.range.length if self.range else self.version.size

    def body(self, chunks, local_file=None) -> ObjectBody:
        return ObjectBody(self.version, self.range, self.length, chunks, local_file)


class ByteSource(Protocol):
    async def open(self, wanted: Wanted) -> ObjectBody | None:
        """The body of the wanted bytes, or None when this source does not hold them."""


class InlineSource:
    """Small blobs kept in the catalog (their bytes came with the copy's record)."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    async def open(self, wanted: Wanted) -> ObjectBody | None:
        for info in wanted.copies:
            if info.backend == INLINE_BACKEND and not info.damaged:
                return wanted.body(self.blobs.read(info, wanted.start, wanted.length))
        return None


class BackendSource:
    """Copies on the node's backends: kept copies before caches, and copies on
    the node's own disks before those on remote services."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    async def open(self, wanted: Wanted) -> ObjectBody | None:
        usable = [c for c in wanted.copies
                  if c.backend in self.blobs.backends and c.role != INGESTED and not c.damaged]
        if not usable:
            return None
        info = min(usable, key=lambda c: (c.role == CACHE, c.backend in self.blobs.untrusted))
        return wanted.body(self.blobs.read(info, wanted.start, wanted.length),
                           self.blobs.file_region(info, wanted.start, wanted.length))


class IngestSource:
    """Files ingested read-only in place, served from the files themselves."""

    def __init__(self, ingest: IngestService) -> None:
        self.ingest = ingest

    async def open(self, wanted: Wanted) -> ObjectBody | None:
        return await self.ingest.open_object(wanted)
