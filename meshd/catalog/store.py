"""The catalog in SQLite: one connection, and the tables' methods combined.

All methods are synchronous and run on the catalog's own threads (see
`meshd.catalog.Catalog`); each public write is one transaction (or joins the
group-committed batch it runs in), committed with the WAL fsynced
(synchronous=FULL), so an acknowledged write survives kill -9. Every write
that changes the catalog also writes its change-feed event in the same
transaction (feed.py).

Each table module owns its SQL: buckets.py, versions.py (versions, current,
tombstones, merges), blobs.py (copies and references), uploads.py,
listing.py, feed.py, ingested.py; schema.py creates and migrates them.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from meshd.catalog.ingested import IngestedFiles
from meshd.catalog.listing import Listings
from meshd.catalog.schema import create_or_migrate
from meshd.catalog.uploads import UploadTable


# How long a connection waits for another one's write lock before it fails.
BUSY_TIMEOUT_MS = 60_000


class SqliteCatalog(UploadTable, IngestedFiles, Listings):
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._pending = []
        # Other processes of the node write to this file too: wait for them.
        self._conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=OFF")
        create_or_migrate(self._conn)

    @property
    def conn(self) -> sqlite3.Connection:
        return self._conn

    def close(self) -> None:
        self._conn.close()

    # -- node metadata --------------------------------------------------

    def get_meta(self, k: str) -> str | None:
        row = self._conn.execute("SELECT v FROM node_meta WHERE k=?", (k,)).fetchone()
        return row[0] if row else None

    def set_meta(self, k: str, v: str) -> None:
        with self._tx():
            self._conn.execute("INSERT OR REPLACE INTO node_meta(k, v) VALUES(?, ?)", (k, v))
