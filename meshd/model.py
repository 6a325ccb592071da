"""The records every layer shares: buckets, versions, uploads, tombstones,
changes, and the pages listings return.

A leaf module (dataclasses only, no SQLite, no I/O), so the S3 edge and the
mesh import it without importing the catalog. A `VersionRecord` means the same
at every node: it says nothing about where this node keeps the bytes (the
catalog's blob table does, per node).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class BucketRecord:
    name: str
    owner: str
    created_ms: int
    cors: bytes | None = None  # the CORS configuration XML as the client sent it


@dataclass(frozen=True)
class VersionRecord:
    """One immutable version of a key, or a delete marker.

    Everything but `tags` (and `tags_stamp`) is fixed by the node that created
    the version; `sha256` of an ingested file is filled in once when hashed.
    Tags are last-writer-wins by `tags_stamp`, a string that sorts like (HLC
    timestamp, node id) ("" for the tags the version was created with).
    """

    bucket: str
    key: str
    version_id: str
    hlc: int
    origin: str
    size: int
    etag: str  # quoted, as S3 returns it
    sha256: str | None  # hex of the plain bytes (the content id); None for delete markers
    last_modified_ms: int
    delete_marker: bool = False
    content_type: str = "binary/octet-stream"
    # Content-Encoding, Content-Disposition, Content-Language, Cache-Control, Expires
    headers: dict[str, str] = field(default_factory=dict)
    user_meta: dict[str, str] = field(default_factory=dict)  # x-amz-meta-* without prefix
    checksums: dict[str, str] = field(default_factory=dict)  # "crc32" -> base64 value
    tags: dict[str, str] = field(default_factory=dict)
    parts_count: int | None = None  # set for multipart objects
    tags_stamp: str = ""


@dataclass(frozen=True)
class Tombstone:
    """A version deleted for good: kept so that no merge brings it back."""

    bucket: str
    key: str
    version_id: str
    deleted_hlc: int


@dataclass(frozen=True)
class UploadRecord:
    upload_id: str
    bucket: str
    key: str
    initiated_ms: int
    owner: str
    content_type: str = "binary/octet-stream"
    headers: dict[str, str] = field(default_factory=dict)
    user_meta: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    checksum_algorithm: str | None = None
    backend: str | None = None  # where this node keeps the parts (uploads are node-local)


@dataclass(frozen=True)
class PartRecord:
    upload_id: str
    part_number: int
    size: int
    etag: str  # quoted md5 hex of the part
    sha256: str  # content id of the part's blob
    last_modified_ms: int
    checksums: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ListedVersion:
    """One row of a listing: the version plus whether it is the current one."""

    version: VersionRecord
    is_latest: bool


# -- the change feed ---------------------------------------------------------

# Kinds of the events every catalog change writes (in the same transaction).
VERSION_PUT = "version.put"  # a new version or delete marker, made here or merged
VERSION_DELETED = "version.deleted"  # a version removed for good (a tombstone)
VERSION_TAGGED = "version.tagged"
VERSION_HASHED = "version.hashed"  # an ingested file's SHA-256 filled in
BUCKET_CREATED = "bucket.created"
BUCKET_DELETED = "bucket.deleted"
BUCKET_UPDATED = "bucket.updated"
BUCKET_CHANGES = frozenset({BUCKET_CREATED, BUCKET_DELETED, BUCKET_UPDATED})
CATALOG_CHANGES = frozenset({VERSION_PUT, VERSION_DELETED, VERSION_TAGGED, VERSION_HASHED}) | BUCKET_CHANGES


@dataclass(frozen=True)
class Event:
    """Something that happened on this node, in order (per-node sequence number):
    a catalog change (the kinds above) or an operational record ("blob.corrupt",
    "ingest.scan", "scrub.pass", ...)."""

    seq: int
    time_ms: int
    kind: str
    bucket: str | None = None
    key: str | None = None
    version_id: str | None = None
    detail: dict = field(default_factory=dict)


# -- pages of listings -------------------------------------------------------


@dataclass(frozen=True)
class ObjectPage:
    versions: list[VersionRecord]
    common_prefixes: list[str]
    is_truncated: bool
    next_marker: str | None  # the last key or common prefix returned


@dataclass(frozen=True)
class VersionPage:
    versions: list[ListedVersion]
    common_prefixes: list[str]
    is_truncated: bool
    next_key_marker: str | None
    next_version_id_marker: str | None


@dataclass(frozen=True)
class UploadPage:
    uploads: list[UploadRecord]
    common_prefixes: list[str]
    is_truncated: bool
    next_key_marker: str | None
    next_upload_id_marker: str | None


@dataclass(frozen=True)
class PartPage:
    parts: list[PartRecord]
    is_truncated: bool
    next_part_number_marker: int | None
