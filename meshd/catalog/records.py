"""Records only this node's catalog knows: where it keeps the bytes of each
content id. (Records every node shares are in `meshd.model`.)"""

from __future__ import annotations

from dataclasses import dataclass

# Roles of a stored copy (the `role` column of the blob table).
ORIGIN = "origin"  # written at this node by a client
REPLICA = "replica"  # pushed here by a replication rule
CACHE = "cache"  # pulled from a peer on a read; may be evicted
INGESTED = "ingested"  # a file ingested in place; never deleted by the node
ROLES = (ORIGIN, REPLICA, CACHE, INGESTED)

INLINE_BACKEND = "inline"  # copies whose bytes are kept in the catalog itself
INGEST_BACKEND = "ingest"  # copies that are ingested files (served by the ingest service)


@dataclass(frozen=True)
class BlobInfo:
    """One stored copy of a content id on this node."""

    content_id: str
    backend: str
    size: int  # plain bytes
    encoding: str  # "plain", "aead", "zstd", "zstd+aead" (backends/encoded.py)
    stored_size: int  # bytes stored
    role: str = ORIGIN
    damaged: bool = False  # scrubbing or a read found the stored bytes corrupt
    data: bytes | None = None  # the stored bytes of an inline copy, when read with it


@dataclass(frozen=True)
class InlineBlob:
    """A small blob kept in the catalog: its stored (encoded) bytes."""

    data: bytes
    encoding: str
    damaged: bool = False


@dataclass(frozen=True)
class BlobRelease:
    """A stored copy no version or part refers to any more: its bytes may be deleted."""

    content_id: str
    backend: str
    size: int


@dataclass(frozen=True)
class IngestedFile:
    """Which file on disk an ingested version is, as it was when scanned: the
    configured root it came from, the path below it, and the stat the file
    must still have when it is read."""

    bucket: str
    key: str
    version_id: str
    root: str
    prefix: str
    rel: str
    size: int
    mtime_ns: int
    inode: int
    sha256: str | None = None
