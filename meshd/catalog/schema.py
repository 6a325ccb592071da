"""The catalog's tables, and the migration of catalogs written by earlier releases.

Keys are stored as BLOBs of their UTF-8 bytes, so SQLite's memcmp ordering is
S3's UTF-8 binary key order, and `prefix + b"\\xff"` (a byte that never occurs
in UTF-8) is an upper bound for every key that starts with `prefix`.

`PRAGMA user_version` is the schema version: 0 for a catalog of the first
release (versions carried the backend of their bytes, blobs their own
reference counts), `SCHEMA_VERSION` now.
"""

from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets(
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    cors BLOB
);
-- Every version and delete marker this node knows, made here or merged from peers.
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
    tags_stamp TEXT NOT NULL DEFAULT '',
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
-- Versions deleted for good, so that no merge brings them back.
CREATE TABLE IF NOT EXISTS tombstones(
    bucket TEXT NOT NULL,
    key BLOB NOT NULL,
    version_id TEXT NOT NULL,
    deleted_hlc INTEGER NOT NULL,
    PRIMARY KEY(bucket, key, version_id)
) WITHOUT ROWID;
-- How many versions and parts refer to each content id.
CREATE TABLE IF NOT EXISTS refs(
    content_id TEXT PRIMARY KEY,
    count INTEGER NOT NULL
) WITHOUT ROWID;
-- Where this node keeps copies of each content id, and why (role).
CREATE TABLE IF NOT EXISTS blobs(
    content_id TEXT NOT NULL,
    backend TEXT NOT NULL,
    size INTEGER NOT NULL,
    encoding TEXT NOT NULL DEFAULT 'plain',
    stored_size INTEGER,
    damaged INTEGER NOT NULL DEFAULT 0,
    role TEXT NOT NULL DEFAULT 'origin',
    PRIMARY KEY(content_id, backend)
) WITHOUT ROWID;
-- Bytes of small blobs, kept in the catalog (their blobs row has backend 'inline').
CREATE TABLE IF NOT EXISTS inline_blobs(
    content_id TEXT PRIMARY KEY,
    data BLOB NOT NULL
);
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
-- The change feed: every catalog change and every operational event, in order.
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
-- Files ingested read-only in place: which file each ingested version is, as scanned.
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
CREATE INDEX IF NOT EXISTS ingested_by_sha256 ON ingested_files(sha256) WHERE sha256 IS NOT NULL;
"""


def create_or_migrate(conn: sqlite3.Connection) -> None:
    """Bring the catalog to SCHEMA_VERSION, in one transaction (two processes
    opening one new data dir at once do it once)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            if _columns(conn, "versions"):
                _migrate_from_0(conn)
            for statement in SCHEMA.split(";"):  # executescript would commit
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _migrate_from_0(conn: sqlite3.Connection) -> None:
    """The first release's catalog: every version named the backend of its bytes
    and each (content id, backend) counted its own references. Now references
    are counted per content id (`refs`), copies carry a role, and an ingested
    file with a digest is a copy of its content like any other."""
    blob_columns = _columns(conn, "blobs")
    for column, decl in (("encoding", "TEXT NOT NULL DEFAULT 'plain'"), ("stored_size", "INTEGER"),
                         ("damaged", "INTEGER NOT NULL DEFAULT 0"), ("role", "TEXT NOT NULL DEFAULT 'origin'")):
        if column not in blob_columns:
            conn.execute(f"ALTER TABLE blobs ADD COLUMN {column} {decl}")
    conn.execute("CREATE TABLE IF NOT EXISTS refs(content_id TEXT PRIMARY KEY, count INTEGER NOT NULL) WITHOUT ROWID")
    # Each version and part referred to exactly one (content id, backend) row.
    conn.execute("INSERT INTO refs(content_id, count) SELECT content_id, SUM(refcount) FROM blobs "
                 "GROUP BY content_id HAVING SUM(refcount) > 0")
    conn.execute("ALTER TABLE blobs DROP COLUMN refcount")
    hashed_files = conn.execute(
        "SELECT sha256, size FROM versions WHERE backend = 'ingest' AND sha256 IS NOT NULL").fetchall()
    for sha256, size in hashed_files:
        conn.execute("INSERT OR IGNORE INTO blobs(content_id, backend, size, encoding, stored_size, role) "
                     "VALUES(?, 'ingest', ?, 'plain', ?, 'ingested')", (sha256, size, size))
        conn.execute("INSERT INTO refs(content_id, count) VALUES(?, 1) "
                     "ON CONFLICT(content_id) DO UPDATE SET count = count + 1", (sha256,))
    conn.execute("ALTER TABLE versions DROP COLUMN backend")
    conn.execute("ALTER TABLE versions ADD COLUMN tags_stamp TEXT NOT NULL DEFAULT ''")
