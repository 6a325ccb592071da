"""Rows of the catalog's tables to records and back (msgpack for the maps)."""

from __future__ import annotations

import msgpack

from meshd.catalog.records import BlobInfo
from meshd.model import PartRecord, UploadRecord, VersionRecord

VERSION_COLUMNS = (
    "bucket, key, version_id, hlc, origin, size, etag, sha256, last_modified_ms, "
    "delete_marker, content_type, meta, tags, tags_stamp"
)
V_COLUMNS = "v." + VERSION_COLUMNS.replace(", ", ", v.")  # the same, for a table aliased `v`
VERSION_PLACEHOLDERS = ",".join("?" * len(VERSION_COLUMNS.split(", ")))
BLOB_COLUMNS = "content_id, backend, size, encoding, stored_size, role, damaged"
UPLOAD_COLUMNS = "upload_id, bucket, key, initiated_ms, meta"
PART_COLUMNS = "upload_id, part_number, size, etag, sha256, last_modified_ms, checksums"


def pack(value: object) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def unpack(data: bytes | None) -> dict:
    return msgpack.unpackb(data, raw=False) if data else {}


def version_meta(v: VersionRecord) -> bytes:
    """The `meta` column: the maps a version is created with."""
    meta: dict = {"h": v.headers, "m": v.user_meta, "c": v.checksums}
    if v.parts_count is not None:
        meta["p"] = v.parts_count
    return pack(meta)


def version_row(v: VersionRecord) -> tuple:
    return (
        v.bucket, v.key.encode(), v.version_id, v.hlc, v.origin, v.size, v.etag,
        v.sha256, v.last_modified_ms, int(v.delete_marker), v.content_type,
        version_meta(v), pack(v.tags) if v.tags else None, v.tags_stamp,
    )


def version_from_row(row: tuple) -> VersionRecord:
    (bucket, key, version_id, hlc, origin, size, etag, sha256, last_modified_ms,
     delete_marker, content_type, meta, tags, tags_stamp) = row
    m = unpack(meta)
    return VersionRecord(
        bucket=bucket, key=key.decode(), version_id=version_id, hlc=hlc, origin=origin, size=size,
        etag=etag, sha256=sha256, last_modified_ms=last_modified_ms, delete_marker=bool(delete_marker),
        content_type=content_type, headers=m.get("h", {}), user_meta=m.get("m", {}),
        checksums=m.get("c", {}), parts_count=m.get("p"), tags=unpack(tags), tags_stamp=tags_stamp,
    )


def blob_from_row(row: tuple, data: bytes | None = None) -> BlobInfo:
    content_id, backend, size, encoding, stored_size, role, damaged = row
    return BlobInfo(content_id, backend, size, encoding, size if stored_size is None else stored_size,
                    role, bool(damaged), data)


def upload_meta(u: UploadRecord) -> bytes:
    return pack({"o": u.owner, "t": u.content_type, "h": u.headers, "m": u.user_meta,
                 "g": u.tags, "a": u.checksum_algorithm, "b": u.backend})


def upload_from_row(row: tuple) -> UploadRecord:
    upload_id, bucket, key, initiated_ms, meta = row
    m = unpack(meta)
    return UploadRecord(
        upload_id=upload_id, bucket=bucket, key=key.decode(), initiated_ms=initiated_ms,
        owner=m.get("o", ""), content_type=m.get("t", "binary/octet-stream"),
        headers=m.get("h", {}), user_meta=m.get("m", {}), tags=m.get("g", {}),
        checksum_algorithm=m.get("a"), backend=m.get("b"),
    )


def part_from_row(row: tuple) -> PartRecord:
    upload_id, part_number, size, etag, sha256, last_modified_ms, checksums = row
    return PartRecord(upload_id, part_number, size, etag, sha256, last_modified_ms, unpack(checksums))
