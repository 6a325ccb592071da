"""Catalogs written by the first release (schema version 0) open in this one:
references move from each (content id, backend) to the content id, copies get
a role, hashed ingested files become copies, versions lose their backend."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import msgpack

from meshd.catalog.records import INGESTED, ORIGIN
from meshd.catalog.schema import SCHEMA_VERSION
from meshd.catalog.store import SqliteCatalog
from meshd.model import VERSION_PUT

# The tables as release 0.1.0 created them (meshd/catalog/store.py and ingested.py then).
SCHEMA_0 = """
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

INGESTED_0 = """
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

META = msgpack.packb({"h": {}, "m": {"a": "b"}, "c": {}}, use_bin_type=True)
A, B, SMALL, FILE = "aa" * 32, "bb" * 32, "cc" * 32, "dd" * 32
V = ["%016x00000000000000b2" % (n << 16) for n in range(1, 7)]


def write_release_0(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_0 + INGESTED_0)
    conn.execute("INSERT INTO buckets VALUES('bkt', 'owner', 1, NULL)")
    rows = [  # key, version id, sha256, delete marker, backend
        ("a", V[0], A, 0, "local"), ("a2", V[1], A, 0, "local"),  # two versions, one blob
        ("b", V[2], B, 0, "s3"), ("small", V[3], SMALL, 0, "inline"),
        ("raw/f", V[4], FILE, 0, "ingest"), ("a", V[5], None, 1, None),
    ]
    for key, vid, sha, dm, backend in rows:
        conn.execute("INSERT INTO versions VALUES(?, ?, ?, ?, ?, 3, '\"e\"', ?, 1, ?, 'text/plain', ?, NULL, ?)",
                     ("bkt", key.encode(), vid, int(vid[:16], 16), vid[16:], sha, dm, META, backend))
        conn.execute("INSERT OR REPLACE INTO current VALUES('bkt', ?, ?, ?)", (key.encode(), vid, dm))
    conn.execute("INSERT INTO blobs VALUES(?, 'local', 3, 3, 'aead', 31, 0)", (A,))  # 2 versions + 1 part
    conn.execute("INSERT INTO blobs VALUES(?, 's3', 3, 1, 'aead', 31, 1)", (B,))
    conn.execute("INSERT INTO blobs VALUES(?, 'inline', 3, 1, 'aead', 30, 0)", (SMALL,))
    conn.execute("INSERT INTO inline_blobs VALUES(?, x'00')", (SMALL,))
    conn.execute("INSERT INTO uploads VALUES('up', 'bkt', x'6d', 1, ?)", (msgpack.packb({"b": "local"}),))
    conn.execute("INSERT INTO parts VALUES('up', 1, 3, '\"p\"', ?, 1, x'80')", (A,))
    conn.execute("INSERT INTO ingested_files VALUES('bkt', ?, ?, '/data', 'raw/', x'66', 3, 5, 7, ?)",
                 (b"raw/f", V[4], FILE))
    conn.execute("INSERT INTO events(time_ms, kind, detail) VALUES(1, 'scrub.pass', x'80')")
    conn.commit()
    conn.close()


def test_a_release_0_catalog_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    write_release_0(path)
    cat = SqliteCatalog(path)
    try:
        assert cat.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        columns = {r[1] for r in cat.conn.execute("PRAGMA table_info(versions)")}
        assert "backend" not in columns and "tags_stamp" in columns
        assert {r[1] for r in cat.conn.execute("PRAGMA table_info(blobs)")} >= {"role"}
        # References per content id: what each (content id, backend) counted, summed;
        # a hashed ingested file now counts too.
        assert dict(cat.conn.execute("SELECT content_id, count FROM refs")) == {A: 3, B: 1, SMALL: 1, FILE: 1}
        [a] = cat.copies(A)
        assert (a.backend, a.role, a.encoding, a.stored_size, a.damaged) == ("local", ORIGIN, "aead", 31, False)
        assert cat.copies(B)[0].damaged
        assert cat.copies(SMALL)[0].data == b"\x00"
        [f] = cat.copies(FILE)
        assert (f.backend, f.role, f.size) == ("ingest", INGESTED, 3)
        # Versions read as before, meaning the same at every node now.
        v = cat.get_version("bkt", "a2", None)
        assert (v.version_id, v.sha256, v.user_meta, v.tags_stamp) == (V[1], A, {"a": "b"}, "")
        assert cat.get_version("bkt", "a", None).delete_marker
        assert [x.key for x in cat.list_objects("bkt", "", "", None, 10).versions] == ["a2", "b", "raw/f", "small"]
        assert cat.get_ingested("bkt", "raw/f").sha256 == FILE
        # Old events stay; new changes join the same feed after them.
        cat.put_version(replace(v, key="new", version_id="%016x00000000000000b2" % (99 << 16), sha256=None))
        assert [e.kind for e in cat.events_after(0)] == ["scrub.pass", VERSION_PUT]
        # Deleting works on the new references.
        cat.delete_version("bkt", "a2", V[1], 100 << 16)
        assert cat.blob_refs(A) == 2
    finally:
        cat.close()
    # Opening again migrates nothing twice.
    again = SqliteCatalog(path)
    try:
        assert dict(again.conn.execute("SELECT content_id, count FROM refs"))[A] == 2
    finally:
        again.close()


def test_a_new_catalog_starts_at_the_current_schema(tmp_path: Path) -> None:
    cat = SqliteCatalog(tmp_path / "new.db")
    try:
        assert cat.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert cat.last_seq() == 0 and cat.trimmed_through() == 0
    finally:
        cat.close()
