"""Records of the catalog: what a node knows about buckets, versions and blobs."""

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
    bucket: str
    key: str
    version_id: str
    hlc: int
    origin: str
    size: int
    etag: str  # quoted, as S3 returns it
    sha256: str | None  # hex of the plain bytes; None for delete markers
    last_modified_ms: int
    delete_marker: bool = False
    content_type: str = "binary/octet-stream"
    # Content-Encoding, Content-Disposition, Content-Language, Cache-Control, Expires
    headers: dict[str, str] = field(default_factory=dict)
    user_meta: dict[str, str] = field(default_factory=dict)  # x-amz-meta-* without prefix
    checksums: dict[str, str] = field(default_factory=dict)  # "crc32" -> base64 value
    tags: dict[str, str] = field(default_factory=dict)
    parts_count: int | None = None  # set for multipart objects
    backend: str | None = None  # where the bytes are on this node


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
    backend: str | None = None


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


@dataclass(frozen=True)
class BlobInfo:
    """How one stored blob is kept on one backend of this node."""

    content_id: str
    backend: str
    size: int  # plain bytes
    encoding: str  # "plain", "aead", "zstd", "zstd+aead" (backends/encoded.py)
    stored_size: int  # bytes stored
    refcount: int
    damaged: bool = False  # scrubbing or a read found the stored bytes corrupt


@dataclass(frozen=True)
class InlineBlob:
    """A small blob kept in the catalog: its stored (encoded) bytes."""

    data: bytes
    encoding: str
    damaged: bool = False


@dataclass(frozen=True)
class Event:
    """Something that happened on this node, in order (per-node sequence number)."""

    seq: int
    time_ms: int
    kind: str  # "blob.corrupt", "ingest.scan", ...
    bucket: str | None = None
    key: str | None = None
    version_id: str | None = None
    detail: dict = field(default_factory=dict)
