"""The catalog in SQLite: buckets, versions, blobs and multipart uploads.

All methods are synchronous and run on the catalog's own thread (see
`meshd.catalog.Catalog`); each public write is one transaction, committed with
the WAL fsynced (synchronous=FULL), so an acknowledged write survives kill -9.

Keys are stored as BLOBs of their UTF-8 bytes, so SQLite's memcmp ordering is
S3's UTF-8 binary key order, and `prefix + b"\\xff"` (a byte that never occurs
in UTF-8) is an upper bound for every key that starts with `prefix`.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import msgpack
import sqlite_utils

from meshd.catalog.paging import KEY_END, walk
from meshd.catalog.records import (
    BlobInfo,
    BucketRecord,
    Event,
    InlineBlob,
    ListedVersion,
    PartRecord,
    UploadRecord,
    VersionRecord,
)
from meshd.conditions import WriteCondition, check_write
from meshd.errors import BucketExists, BucketNotEmpty, BucketNotFound, UploadNotFound

SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets(
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    cors BLOB
);
CREATE TABLE IF NOT EXISTS versions(
    bucket TEXT NOT NULL,
    key BLOB NOT NULL,
    version_id TEXT NOT NULL,
    hlc INTEGER NOT NULL,
    origin TEXT NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    sha256 TEXT,
    last_modified_ms INTEGER NOT NULL,
    delete_marker INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    meta BLOB NOT NULL,
    tags BLOB,
    backend TEXT,
    PRIMARY KEY(bucket, key, version_id DESC)
) WITHOUT ROWID;
-- The greatest version of each key: what GET without versionId and listings see.
CREATE TABLE IF NOT EXISTS current(
    bucket TEXT NOT NULL,
    key BLOB NOT NULL,
    version_id TEXT NOT NULL,
    delete_marker INTEGER NOT NULL,
    PRIMARY KEY(bucket, key)
) WITHOUT ROWID;
-- Bytes of small blobs, kept in the catalog (their blobs row has backend 'inline').
CREATE TABLE IF NOT EXISTS inline_blobs(
    content_id TEXT PRIMARY KEY,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS blobs(
    content_id TEXT NOT NULL,
    backend TEXT NOT NULL,
    size INTEGER NOT NULL,
    refcount INTEGER NOT NULL,
    encoding TEXT NOT NULL DEFAULT 'plain',
    stored_size INTEGER,
    damaged INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY(content_id, backend)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uploads(
    upload_id TEXT PRIMARY KEY,
    bucket TEXT NOT NULL,
    key BLOB NOT NULL,
    initiated_ms INTEGER NOT NULL,
    meta BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS uploads_by_key ON uploads(bucket, key, upload_id);
CREATE TABLE IF NOT EXISTS parts(
    upload_id TEXT NOT NULL,
    part_number INTEGER NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    last_modified_ms INTEGER NOT NULL,
    checksums BLOB NOT NULL,
    PRIMARY KEY(upload_id, part_number)
) WITHOUT ROWID;
-- What happened on this node, in order; streamed to subscribers (later) and read
-- by `meshd` admin commands.
CREATE TABLE IF NOT EXISTS events(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    bucket TEXT,
    key BLOB,
    version_id TEXT,
    detail BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS node_meta(
    k TEXT PRIMARY KEY,
    v TEXT NOT NULL
);
"""

VERSION_COLUMNS = (
    "bucket, key, version_id, hlc, origin, size, etag, sha256, last_modified_ms, "
    "delete_marker, content_type, meta, tags, backend"
)

_V_COLUMNS = "v." + VERSION_COLUMNS.replace(", ", ", v.")
INLINE_BACKEND = "inline"  # blobs whose bytes are kept in the catalog itself
BLOB_COLUMNS_ADDED = (
    ("encoding", "TEXT NOT NULL DEFAULT 'plain'"),
    ("stored_size", "INTEGER"),
    ("damaged", "INTEGER NOT NULL DEFAULT 0"),
)
_BLOB_COLUMNS = "content_id, backend, size, encoding, stored_size, refcount, damaged"


@dataclass(frozen=True)
class BlobRelease:
    """A blob whose last reference went away: its bytes may be deleted."""

    content_id: str
    backend: str
    size: int


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


def _pack(value: object) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def _unpack(data: bytes | None) -> dict:
    return msgpack.unpackb(data, raw=False) if data else {}


def _version_from_row(row: tuple) -> VersionRecord:
    (bucket, key, version_id, hlc, origin, size, etag, sha256, last_modified_ms,
     delete_marker, content_type, meta, tags, backend) = row
    m = _unpack(meta)
    return VersionRecord(
        bucket=bucket,
        key=key.decode(),
        version_id=version_id,
        hlc=hlc,
        origin=origin,
        size=size,
        etag=etag,
        sha256=sha256,
        last_modified_ms=last_modified_ms,
        delete_marker=bool(delete_marker),
        content_type=content_type,
        headers=m.get("h", {}),
        user_meta=m.get("m", {}),
        checksums=m.get("c", {}),
        parts_count=m.get("p"),
        tags=_unpack(tags),
        backend=backend,
    )


def _blob_from_row(row: tuple) -> BlobInfo:
    content_id, backend, size, encoding, stored_size, refcount, damaged = row
    return BlobInfo(content_id, backend, size, encoding, size if stored_size is None else stored_size,
                    refcount, bool(damaged))


def _version_row(v: VersionRecord) -> tuple:
    meta = {"h": v.headers, "m": v.user_meta, "c": v.checksums}
    if v.parts_count is not None:
        meta["p"] = v.parts_count
    return (
        v.bucket, v.key.encode(), v.version_id, v.hlc, v.origin, v.size, v.etag,
        v.sha256, v.last_modified_ms, int(v.delete_marker), v.content_type,
        _pack(meta), _pack(v.tags) if v.tags else None, v.backend,
    )


def _upload_from_row(row: tuple) -> UploadRecord:
    upload_id, bucket, key, initiated_ms, meta = row
    m = _unpack(meta)
    return UploadRecord(
        upload_id=upload_id, bucket=bucket, key=key.decode(), initiated_ms=initiated_ms,
        owner=m.get("o", ""), content_type=m.get("t", "binary/octet-stream"),
        headers=m.get("h", {}), user_meta=m.get("m", {}), tags=m.get("g", {}),
        checksum_algorithm=m.get("a"), backend=m.get("b"),
    )


def _part_from_row(row: tuple) -> PartRecord:
    upload_id, part_number, size, etag, sha256, last_modified_ms, checksums = row
    return PartRecord(upload_id, part_number, size, etag, sha256, last_modified_ms, _unpack(checksums))


class SqliteCatalog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db = sqlite_utils.Database(self._conn)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=OFF")
        self._conn.executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Columns added after a catalog was first created (CREATE TABLE IF NOT
        EXISTS leaves an existing table as it was)."""
        have = {row[1] for row in self._conn.execute("PRAGMA table_info(blobs)")}
        for column, decl in BLOB_COLUMNS_ADDED:
            if column not in have:
                self._conn.execute(f"ALTER TABLE blobs ADD COLUMN {column} {decl}")

    def close(self) -> None:
        self._conn.close()

    # -- transactions ---------------------------------------------------

    def _tx(self) -> "_Transaction":
        return _Transaction(self._conn)

    # -- node metadata --------------------------------------------------

    def get_meta(self, k: str) -> str | None:
        row = self._conn.execute("SELECT v FROM node_meta WHERE k=?", (k,)).fetchone()
        return row[0] if row else None

    def set_meta(self, k: str, v: str) -> None:
        with self._tx():
            self._conn.execute("INSERT OR REPLACE INTO node_meta(k, v) VALUES(?, ?)", (k, v))

    # -- buckets --------------------------------------------------------

    def create_bucket(self, bucket: BucketRecord) -> None:
        with self._tx():
            existing = self._conn.execute(
                "SELECT owner FROM buckets WHERE name=?", (bucket.name,)
            ).fetchone()
            if existing:
                raise BucketExists(bucket.name, owned_by_caller=existing[0] == bucket.owner)
            self._conn.execute(
                "INSERT INTO buckets(name, owner, created_ms, cors) VALUES(?, ?, ?, ?)",
                (bucket.name, bucket.owner, bucket.created_ms, bucket.cors),
            )

    def get_bucket(self, name: str) -> BucketRecord:
        row = self._conn.execute(
            "SELECT name, owner, created_ms, cors FROM buckets WHERE name=?", (name,)
        ).fetchone()
        if row is None:
            raise BucketNotFound(name)
        return BucketRecord(*row)

    def list_buckets(self) -> list[BucketRecord]:
        rows = self._conn.execute(
            "SELECT name, owner, created_ms, cors FROM buckets ORDER BY name"
        ).fetchall()
        return [BucketRecord(*r) for r in rows]

    def delete_bucket(self, name: str) -> None:
        with self._tx():
            self.get_bucket(name)
            if self._conn.execute(
                "SELECT 1 FROM versions WHERE bucket=? LIMIT 1", (name,)
            ).fetchone() or self._conn.execute(
                "SELECT 1 FROM uploads WHERE bucket=? LIMIT 1", (name,)
            ).fetchone():
                raise BucketNotEmpty(name)
            self._conn.execute("DELETE FROM buckets WHERE name=?", (name,))

    def set_bucket_cors(self, name: str, cors: bytes | None) -> None:
        with self._tx():
            cur = self._conn.execute("UPDATE buckets SET cors=? WHERE name=?", (cors, name))
            if cur.rowcount == 0:
                raise BucketNotFound(name)

    # -- blobs ----------------------------------------------------------

    def _ref_blob(self, content_id: str, backend: str, size: int) -> None:
        self._conn.execute(
            "INSERT INTO blobs(content_id, backend, size, refcount) VALUES(?, ?, ?, 1) "
            "ON CONFLICT(content_id, backend) DO UPDATE SET refcount = refcount + 1",
            (content_id, backend, size),
        )

    def _unref_blob(self, content_id: str, backend: str) -> BlobRelease | None:
        row = self._conn.execute(
            "UPDATE blobs SET refcount = refcount - 1 WHERE content_id=? AND backend=? "
            "RETURNING refcount, size",
            (content_id, backend),
        ).fetchone()
        if row is None or row[0] > 0:
            return None
        self._conn.execute(
            "DELETE FROM blobs WHERE content_id=? AND backend=?", (content_id, backend)
        )
        if backend == INLINE_BACKEND:
            # The bytes live in this database: they go in the same transaction.
            self._conn.execute("DELETE FROM inline_blobs WHERE content_id=?", (content_id,))
            return None
        return BlobRelease(content_id, backend, row[1])

    def put_inline_version(
        self, v: VersionRecord, data: bytes, encoding: str, condition: WriteCondition | None = None
    ) -> None:
        """A small version together with its (encoded) bytes, in one transaction.
        Bytes already kept under this content id stay as they are, unless they
        were found damaged: then these (verified) bytes repair them."""
        assert v.sha256 is not None
        with self._tx():
            known = self.get_blob(v.sha256, INLINE_BACKEND)
            repair = known is not None and known.damaged
            self._conn.execute(
                "INSERT INTO inline_blobs(content_id, data) VALUES(?, ?) ON CONFLICT(content_id) DO "
                + ("UPDATE SET data=excluded.data" if repair else "NOTHING"), (v.sha256, data)
            )
            self.add_blob(v.sha256, INLINE_BACKEND, v.size, encoding, len(data), replace=repair)
            self.put_version(v, condition)

    def get_inline(self, content_id: str) -> InlineBlob | None:
        """An inline blob's stored bytes with its blob record's encoding and
        damaged flag, in one read."""
        row = self._conn.execute(
            "SELECT i.data, b.encoding, b.damaged FROM inline_blobs i JOIN blobs b "
            "ON b.content_id = i.content_id AND b.backend = ? WHERE i.content_id=?",
            (INLINE_BACKEND, content_id),
        ).fetchone()
        return InlineBlob(row[0], row[1], bool(row[2])) if row else None

    def add_blob(
        self, content_id: str, backend: str, size: int, encoding: str, stored_size: int, *,
        replace: bool = False,
    ) -> None:
        """Record how a blob is stored, before the first reference to it is
        added in the same transaction. An existing record is kept, unless
        `replace` (new bytes were just committed over damaged ones)."""
        self._conn.execute(
            "INSERT INTO blobs(content_id, backend, size, refcount, encoding, stored_size) "
            "VALUES(?, ?, ?, 0, ?, ?) ON CONFLICT(content_id, backend) DO "
            + ("UPDATE SET encoding=excluded.encoding, stored_size=excluded.stored_size, damaged=0"
               if replace else "NOTHING"),
            (content_id, backend, size, encoding, stored_size),
        )

    def get_blob(self, content_id: str, backend: str) -> BlobInfo | None:
        row = self._conn.execute(
            f"SELECT {_BLOB_COLUMNS} FROM blobs WHERE content_id=? AND backend=?", (content_id, backend)
        ).fetchone()
        return _blob_from_row(row) if row else None

    def blobs_after(self, after: tuple[str, str] | None, limit: int) -> list[BlobInfo]:
        """Every blob record, in (backend, content id) order, a page at a time."""
        backend, content_id = after or ("", "")
        rows = self._conn.execute(
            f"SELECT {_BLOB_COLUMNS} FROM blobs WHERE (backend, content_id) > (?, ?) "
            "ORDER BY backend, content_id LIMIT ?",
            (backend, content_id, limit),
        ).fetchall()
        return [_blob_from_row(r) for r in rows]

    def mark_blob_damaged(self, content_id: str, backend: str, damaged: bool = True) -> bool:
        """Flag a blob's stored bytes as corrupt (or repaired); True if the flag changed."""
        with self._tx():
            cur = self._conn.execute(
                "UPDATE blobs SET damaged=? WHERE content_id=? AND backend=? AND damaged<>?",
                (int(damaged), content_id, backend, int(damaged)),
            )
            return cur.rowcount > 0

    def versions_of_blob(self, content_id: str, backend: str, limit: int = 100) -> list[VersionRecord]:
        rows = self._conn.execute(
            f"SELECT {VERSION_COLUMNS} FROM versions WHERE sha256=? AND backend=? LIMIT ?",
            (content_id, backend, limit),
        ).fetchall()
        return [_version_from_row(r) for r in rows]

    # -- events ---------------------------------------------------------

    def add_event(
        self, kind: str, bucket: str | None = None, key: str | None = None,
        version_id: str | None = None, detail: dict | None = None, *, time_ms: int | None = None,
    ) -> int:
        with self._tx():
            cur = self._conn.execute(
                "INSERT INTO events(time_ms, kind, bucket, key, version_id, detail) VALUES(?, ?, ?, ?, ?, ?)",
                (time_ms if time_ms is not None else int(time.time() * 1000), kind, bucket,
                 key.encode() if key is not None else None, version_id, _pack(detail or {})),
            )
            return int(cur.lastrowid or 0)

    def events_after(self, seq: int, limit: int = 1000, kind: str | None = None) -> list[Event]:
        rows = self._conn.execute(
            "SELECT seq, time_ms, kind, bucket, key, version_id, detail FROM events "
            "WHERE seq > ? AND (? IS NULL OR kind = ?) ORDER BY seq LIMIT ?",
            (seq, kind, kind, limit),
        ).fetchall()
        return [Event(r[0], r[1], r[2], r[3], r[4].decode() if r[4] is not None else None, r[5], _unpack(r[6]))
                for r in rows]

    def blob_refcount(self, content_id: str, backend: str) -> int:
        row = self._conn.execute(
            "SELECT refcount FROM blobs WHERE content_id=? AND backend=?", (content_id, backend)
        ).fetchone()
        return row[0] if row else 0

    def blob_ids(self, backend: str) -> set[str]:
        rows = self._conn.execute("SELECT content_id FROM blobs WHERE backend=?", (backend,))
        return {r[0] for r in rows}

    def referenced_blobs(self, backend: str, content_ids: list[str]) -> set[str]:
        """Which of these content ids some version or part refers to."""
        found: set[str] = set()
        for i in range(0, len(content_ids), 500):  # SQLite's bound-parameter limit
            chunk = content_ids[i:i + 500]
            rows = self._conn.execute(
                f"SELECT content_id FROM blobs WHERE backend=? AND content_id IN ({','.join('?' * len(chunk))})",
                (backend, *chunk),
            )
            found.update(r[0] for r in rows)
        return found

    # -- versions -------------------------------------------------------

    def put_version(self, v: VersionRecord, condition: WriteCondition | None = None) -> None:
        """Insert a version (with its blob reference) and make it current if it is
        the greatest version of its key; with a condition, only if it holds for
        the key's current version at this moment."""
        with self._tx():
            self._require_bucket(v.bucket)
            if condition:
                check_write(self.get_version(v.bucket, v.key, None), condition)
            self._conn.execute(
                f"INSERT INTO versions({VERSION_COLUMNS}) VALUES({','.join('?' * 14)})",
                _version_row(v),
            )
            if v.sha256 is not None and v.backend is not None:
                self._ref_blob(v.sha256, v.backend, v.size)
            self._conn.execute(
                "INSERT INTO current(bucket, key, version_id, delete_marker) VALUES(?, ?, ?, ?) "
                "ON CONFLICT(bucket, key) DO UPDATE SET version_id=excluded.version_id, "
                "delete_marker=excluded.delete_marker WHERE excluded.version_id > current.version_id",
                (v.bucket, v.key.encode(), v.version_id, int(v.delete_marker)),
            )

    def get_version(self, bucket: str, key: str, version_id: str | None) -> VersionRecord | None:
        kb = key.encode()
        if version_id is None:
            row = self._conn.execute(
                f"SELECT {VERSION_COLUMNS} FROM versions WHERE bucket=? AND key=? "
                "ORDER BY version_id DESC LIMIT 1",
                (bucket, kb),
            ).fetchone()
        else:
            row = self._conn.execute(
                f"SELECT {VERSION_COLUMNS} FROM versions WHERE bucket=? AND key=? AND version_id=?",
                (bucket, kb, version_id),
            ).fetchone()
        return _version_from_row(row) if row else None

    def delete_version(self, bucket: str, key: str, version_id: str) -> tuple[VersionRecord | None, BlobRelease | None]:
        """Remove one version for good; returns it and the blob it released, if any."""
        with self._tx():
            v = self.get_version(bucket, key, version_id)
            if v is None:
                return None, None
            kb = key.encode()
            self._conn.execute(
                "DELETE FROM versions WHERE bucket=? AND key=? AND version_id=?",
                (bucket, kb, version_id),
            )
            release = None
            if v.sha256 is not None and v.backend is not None:
                release = self._unref_blob(v.sha256, v.backend)
            top = self._conn.execute(
                "SELECT version_id, delete_marker FROM versions WHERE bucket=? AND key=? "
                "ORDER BY version_id DESC LIMIT 1",
                (bucket, kb),
            ).fetchone()
            if top is None:
                self._conn.execute("DELETE FROM current WHERE bucket=? AND key=?", (bucket, kb))
            else:
                self._conn.execute(
                    "UPDATE current SET version_id=?, delete_marker=? WHERE bucket=? AND key=?",
                    (top[0], top[1], bucket, kb),
                )
            return v, release

    def set_tags(self, bucket: str, key: str, version_id: str, tags: dict[str, str]) -> None:
        with self._tx():
            self._conn.execute(
                "UPDATE versions SET tags=? WHERE bucket=? AND key=? AND version_id=?",
                (_pack(tags) if tags else None, bucket, key.encode(), version_id),
            )

    def _require_bucket(self, bucket: str) -> None:
        if not self._conn.execute("SELECT 1 FROM buckets WHERE name=?", (bucket,)).fetchone():
            raise BucketNotFound(bucket)

    # -- listing (every listing pages through `_walk`) ---------------------

    def list_objects(
        self, bucket: str, prefix: str, delimiter: str, after: str | None, limit: int
    ) -> ObjectPage:
        """Current, non-deleted versions in key order, rolled up by delimiter.

        `after` is an exclusive lower bound (marker, start-after or continuation
        key); when it lies inside a common prefix, that whole prefix is skipped.
        """
        self._require_bucket(bucket)
        upper = prefix.encode() + KEY_END
        w = walk(
            lambda cursor, inclusive, _: self._current_rows(bucket, cursor, inclusive, upper),
            key_column=1, prefix=prefix, delimiter=delimiter, after=after, resume=None, limit=limit,
        )
        return ObjectPage([_version_from_row(r) for r in w.rows], w.prefixes, w.truncated,
                          w.last_name.decode() if w.truncated else None)

    def _current_rows(self, bucket: str, cursor: bytes, inclusive: bool, upper: bytes) -> sqlite3.Cursor:
        op = ">=" if inclusive else ">"
        # CROSS JOIN pins the plan: walk `current` by key, look each version up by
        # its primary key.
        return self._conn.execute(
            f"SELECT {_V_COLUMNS} FROM current c CROSS JOIN versions v "
            "ON v.bucket=c.bucket AND v.key=c.key AND v.version_id=c.version_id "
            f"WHERE c.bucket=? AND c.key {op} ? AND c.key < ? AND c.delete_marker=0 "
            "ORDER BY c.key",
            (bucket, cursor, upper),
        )

    def list_versions(
        self,
        bucket: str,
        prefix: str,
        delimiter: str,
        key_marker: str | None,
        version_id_marker: str | None,
        limit: int,
    ) -> VersionPage:
        """Every version and delete marker, keys ascending, newest version first.

        With a version id marker, the listing resumes inside `key_marker` at the
        versions older than it; without, after the whole key.
        """
        self._require_bucket(bucket)
        upper = prefix.encode() + KEY_END
        w = walk(
            lambda cursor, inclusive, resume: self._version_rows(bucket, cursor, inclusive, resume, upper),
            key_column=1, prefix=prefix, delimiter=delimiter, after=key_marker,
            resume=version_id_marker, limit=limit,
        )
        out = [ListedVersion(_version_from_row(r[:-1]), bool(r[-1])) for r in w.rows]
        if not w.truncated:
            return VersionPage(out, w.prefixes, False, None, None)
        # After a common prefix there is no version to resume from.
        last_version = w.last_row[2] if w.last_row is not None else None
        return VersionPage(out, w.prefixes, True, w.last_name.decode(), last_version)

    def _version_rows(
        self, bucket: str, cursor: bytes, inclusive: bool, resume: str | None, upper: bytes
    ) -> Iterator[tuple]:
        """Version rows from `cursor` on, plus whether each is its key's current one;
        with `resume`, first the versions of key `cursor` older than it."""
        latest = (
            ", (SELECT c.version_id FROM current c WHERE c.bucket=v.bucket AND c.key=v.key) "
            "= v.version_id"
        )
        return self._resumable_rows(
            f"SELECT {_V_COLUMNS}{latest} FROM versions v", "version_id", True,
            bucket, cursor, inclusive, resume, upper,
        )

    def _resumable_rows(
        self, select: str, id_column: str, newest_first: bool,
        bucket: str, cursor: bytes, inclusive: bool, resume: str | None, upper: bytes,
    ) -> Iterator[tuple]:
        """Rows of `select` (a table aliased `v`, keyed by bucket, key, id) in key
        order from `cursor` on; with `resume`, first the rest of key `cursor`
        after id `resume` (ids descending when `newest_first`)."""
        after, order = ("<", "DESC") if newest_first else (">", "ASC")
        if resume is not None:
            with closing(self._conn.execute(
                f"{select} WHERE v.bucket=? AND v.key=? AND v.{id_column} {after} ? "
                f"ORDER BY v.{id_column} {order}",
                (bucket, cursor, resume),
            )) as same_key:
                yield from same_key
        op = ">=" if inclusive else ">"
        with closing(self._conn.execute(
            f"{select} WHERE v.bucket=? AND v.key {op} ? AND v.key < ? ORDER BY v.key, v.{id_column} {order}",
            (bucket, cursor, upper),
        )) as rows:
            yield from rows

    # -- multipart uploads ----------------------------------------------

    def create_upload(self, u: UploadRecord) -> None:
        meta = {"o": u.owner, "t": u.content_type, "h": u.headers, "m": u.user_meta,
                "g": u.tags, "a": u.checksum_algorithm, "b": u.backend}
        with self._tx():
            self._require_bucket(u.bucket)
            self._conn.execute(
                "INSERT INTO uploads(upload_id, bucket, key, initiated_ms, meta) VALUES(?, ?, ?, ?, ?)",
                (u.upload_id, u.bucket, u.key.encode(), u.initiated_ms, _pack(meta)),
            )

    def get_upload(self, bucket: str, key: str, upload_id: str) -> UploadRecord:
        row = self._conn.execute(
            "SELECT upload_id, bucket, key, initiated_ms, meta FROM uploads "
            "WHERE upload_id=? AND bucket=? AND key=?",
            (upload_id, bucket, key.encode()),
        ).fetchone()
        if row is None:
            raise UploadNotFound(upload_id)
        return _upload_from_row(row)

    def put_part(self, part: PartRecord, backend: str) -> BlobRelease | None:
        """Record a part (replacing an earlier upload of the same number)."""
        with self._tx():
            if not self._conn.execute(
                "SELECT 1 FROM uploads WHERE upload_id=?", (part.upload_id,)
            ).fetchone():
                raise UploadNotFound(part.upload_id)
            old = self._conn.execute(
                "SELECT sha256 FROM parts WHERE upload_id=? AND part_number=?",
                (part.upload_id, part.part_number),
            ).fetchone()
            self._ref_blob(part.sha256, backend, part.size)
            self._conn.execute(
                "INSERT OR REPLACE INTO parts(upload_id, part_number, size, etag, sha256, "
                "last_modified_ms, checksums) VALUES(?, ?, ?, ?, ?, ?, ?)",
                (part.upload_id, part.part_number, part.size, part.etag, part.sha256,
                 part.last_modified_ms, _pack(part.checksums)),
            )
            return self._unref_blob(old[0], backend) if old else None

    def list_parts(self, upload_id: str, after: int = 0, limit: int = 10000) -> PartPage:
        rows = self._conn.execute(
            "SELECT upload_id, part_number, size, etag, sha256, last_modified_ms, checksums "
            "FROM parts WHERE upload_id=? AND part_number > ? ORDER BY part_number LIMIT ?",
            (upload_id, after, limit + 1),
        ).fetchall()
        parts = [_part_from_row(r) for r in rows[:limit]]
        truncated = len(rows) > limit
        return PartPage(parts, truncated, parts[-1].part_number if truncated and parts else None)

    def finish_upload(
        self, upload: UploadRecord, backend: str, version: VersionRecord | None,
        condition: WriteCondition | None = None,
    ) -> list[BlobRelease]:
        """Complete (with the assembled version) or abort (version None) an upload:
        drop its parts and return the part blobs released."""
        with self._tx():
            if not self._conn.execute(
                "SELECT 1 FROM uploads WHERE upload_id=?", (upload.upload_id,)
            ).fetchone():
                raise UploadNotFound(upload.upload_id)
            part_blobs = self._conn.execute(
                "SELECT sha256 FROM parts WHERE upload_id=?", (upload.upload_id,)
            ).fetchall()
            self._conn.execute("DELETE FROM parts WHERE upload_id=?", (upload.upload_id,))
            self._conn.execute("DELETE FROM uploads WHERE upload_id=?", (upload.upload_id,))
            if version is not None:
                self.put_version(version, condition)  # nested: joins this transaction
            released = [self._unref_blob(sha, backend) for (sha,) in part_blobs]
            return [r for r in released if r is not None]

    def list_uploads(
        self,
        bucket: str,
        prefix: str,
        delimiter: str,
        key_marker: str | None,
        upload_id_marker: str | None,
        limit: int,
    ) -> UploadPage:
        """Open uploads by key, then upload id; with an upload id marker, the
        listing resumes inside `key_marker` at the uploads after it."""
        self._require_bucket(bucket)
        upper = prefix.encode() + KEY_END
        w = walk(
            lambda cursor, inclusive, resume: self._upload_rows(bucket, cursor, inclusive, resume, upper),
            key_column=2, prefix=prefix, delimiter=delimiter, after=key_marker,
            resume=upload_id_marker, limit=limit,
        )
        uploads = [_upload_from_row(r) for r in w.rows]
        if not w.truncated:
            return UploadPage(uploads, w.prefixes, False, None, None)
        last_id = w.last_row[0] if w.last_row is not None else None
        return UploadPage(uploads, w.prefixes, True, w.last_name.decode(), last_id)

    def _upload_rows(
        self, bucket: str, cursor: bytes, inclusive: bool, resume: str | None, upper: bytes
    ) -> Iterator[tuple]:
        return self._resumable_rows(
            "SELECT v.upload_id, v.bucket, v.key, v.initiated_ms, v.meta FROM uploads v", "upload_id", False,
            bucket, cursor, inclusive, resume, upper,
        )


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, re-entrant so helpers can nest."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._outer = False

    def __enter__(self) -> None:
        if not self._conn.in_transaction:
            self._conn.execute("BEGIN IMMEDIATE")
            self._outer = True

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._outer:
            return
        if exc_type is None:
            self._conn.execute("COMMIT")
        else:
            self._conn.execute("ROLLBACK")
