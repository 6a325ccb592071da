"""The catalog's record of ingested files: which file on disk each ingested
version is, as it was when it was scanned.

One row per ingested key: the configured root it came from, the path below
it, the version it is served as, and the stat the file must still have when it
is read (size, mtime_ns, inode). The version itself is an ordinary row of
`versions` (backend `ingest`), so listings, HEAD and conditions need nothing
special; its sha256 is NULL until the background hasher fills it in.

Functions take a `SqliteCatalog` and run on the catalog's thread, inside
`Catalog.write` (one transaction per batch) or `Catalog.read`.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, replace

import msgpack

from meshd.catalog.records import VersionRecord
from meshd.catalog.store import SqliteCatalog

INGEST_BACKEND = "ingest"

SCHEMA = """
CREATE TABLE IF NOT EXISTS ingested_files(
    bucket TEXT NOT NULL,
    key BLOB NOT NULL,
    version_id TEXT NOT NULL,
    root TEXT NOT NULL,
    prefix TEXT NOT NULL,
    rel BLOB NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    sha256 TEXT,
    PRIMARY KEY(bucket, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ingested_by_root ON ingested_files(root, bucket, prefix);
"""

_COLUMNS = "bucket, key, version_id, root, prefix, rel, size, mtime_ns, inode, sha256"


@dataclass(frozen=True)
class IngestedFile:
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


def _from_row(row: tuple) -> IngestedFile:
    bucket, key, version_id, root, prefix, rel, size, mtime_ns, inode, sha256 = row
    return IngestedFile(bucket, key.decode(), version_id, root, prefix, rel.decode(), size, mtime_ns, inode, sha256)


def ensure_schema(store: SqliteCatalog) -> None:
    # Statement by statement: executescript would COMMIT the write batch it runs in.
    for statement in SCHEMA.split(";"):
        if statement.strip():
            store.db.conn.execute(statement)


def files_of_entry(store: SqliteCatalog, root: str, bucket: str, prefix: str) -> list[IngestedFile]:
    rows = store.db.conn.execute(
        f"SELECT {_COLUMNS} FROM ingested_files WHERE root=? AND bucket=? AND prefix=?", (root, bucket, prefix)
    ).fetchall()
    return [_from_row(r) for r in rows]


def entries_recorded(store: SqliteCatalog) -> list[tuple[str, str, str]]:
    """Every (root, bucket, prefix) some ingested row belongs to."""
    return [tuple(r) for r in store.db.conn.execute("SELECT DISTINCT root, bucket, prefix FROM ingested_files")]


def get_file(store: SqliteCatalog, bucket: str, key: str) -> IngestedFile | None:
    row = store.db.conn.execute(
        f"SELECT {_COLUMNS} FROM ingested_files WHERE bucket=? AND key=?", (bucket, key.encode())
    ).fetchone()
    return _from_row(row) if row else None


def put_file(store: SqliteCatalog, f: IngestedFile, version: VersionRecord, *, known_new: bool = False) -> None:
    """Record a (new or changed) file: the version it had before, if any, goes
    for good (the file is what it is now; no delete marker). `known_new`: the
    caller knows there is no row for it (a scan under the entry's lock)."""
    old = None if known_new else get_file(store, f.bucket, f.key)
    if old is not None:
        store.delete_version(old.bucket, old.key, old.version_id)
    store.put_version(version)
    store.db.conn.execute(
        f"INSERT OR REPLACE INTO ingested_files({_COLUMNS}) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (f.bucket, f.key.encode(), f.version_id, f.root, f.prefix, f.rel.encode(), f.size, f.mtime_ns,
         f.inode, f.sha256),
    )


def remove_file(store: SqliteCatalog, bucket: str, key: str, version_id: str) -> bool:
    """A file gone from disk: its version goes too. False if the row changed meanwhile."""
    old = get_file(store, bucket, key)
    if old is None or old.version_id != version_id:
        return False
    store.delete_version(bucket, key, version_id)
    store.db.conn.execute("DELETE FROM ingested_files WHERE bucket=? AND key=?", (bucket, key.encode()))
    return True


def unhashed(store: SqliteCatalog, root: str, bucket: str, prefix: str, after: str, limit: int) -> list[IngestedFile]:
    """Files still without a SHA-256, in key order after `after`."""
    rows = store.db.conn.execute(
        f"SELECT {_COLUMNS} FROM ingested_files WHERE root=? AND bucket=? AND prefix=? AND sha256 IS NULL "
        "AND key > ? ORDER BY key LIMIT ?",
        (root, bucket, prefix, after.encode(), limit),
    ).fetchall()
    return [_from_row(r) for r in rows]


def set_sha256(store: SqliteCatalog, bucket: str, key: str, version_id: str, sha256: str) -> bool:
    """Store a file's digest on its row and its version, if it is still that
    version; the version also gets it as its full-object SHA-256 checksum, so
    `x-amz-checksum-sha256` (ChecksumMode=ENABLED) lets clients verify the bytes."""
    cur = store.db.conn.execute(
        "UPDATE ingested_files SET sha256=? WHERE bucket=? AND key=? AND version_id=?",
        (sha256, bucket, key.encode(), version_id),
    )
    if cur.rowcount == 0:
        return False
    v = store.get_version(bucket, key, version_id)
    if v is None:
        return False
    checksums = {**v.checksums, "sha256": base64.b64encode(bytes.fromhex(sha256)).decode()}
    store.db.conn.execute(
        "UPDATE versions SET sha256=?, meta=? WHERE bucket=? AND key=? AND version_id=?",
        (sha256, _version_meta(replace(v, checksums=checksums)), bucket, key.encode(), version_id),
    )
    return True


def _version_meta(v: VersionRecord) -> bytes:
    """The `versions.meta` column as `SqliteCatalog.put_version` writes it."""
    meta: dict = {"h": v.headers, "m": v.user_meta, "c": v.checksums}
    if v.parts_count is not None:
        meta["p"] = v.parts_count
    return msgpack.packb(meta, use_bin_type=True)


def totals(store: SqliteCatalog, root: str, bucket: str, prefix: str) -> dict[str, int]:
    row = store.db.conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(size), 0), COUNT(sha256), "
        "COALESCE(SUM(CASE WHEN sha256 IS NOT NULL THEN size ELSE 0 END), 0) "
        "FROM ingested_files WHERE root=? AND bucket=? AND prefix=?",
        (root, bucket, prefix),
    ).fetchone()
    return {"files": row[0], "bytes": row[1], "hashed_files": row[2], "hashed_bytes": row[3]}
