"""The catalog's record of ingested files: which file on disk each ingested
version is, as it was when it was scanned.

One row per ingested key: the configured root it came from, the path below
it, the version it is served as, and the stat the file must still have when it
is read (size, mtime_ns, inode). The version itself is an ordinary version
(made through the version table's own methods), so listings, HEAD and
conditions need nothing special; its sha256 is NULL until the background
hasher fills it in, and from then on the node records the file as a copy of
that content (backend "ingest", role "ingested").
"""

from __future__ import annotations

from meshd.catalog.records import INGEST_BACKEND, INGESTED, IngestedFile
from meshd.catalog.versions import VersionTable
from meshd.model import VersionRecord

_COLUMNS = "bucket, key, version_id, root, prefix, rel, size, mtime_ns, inode, sha256"


def _from_row(row: tuple) -> IngestedFile:
    bucket, key, version_id, root, prefix, rel, size, mtime_ns, inode, sha256 = row
    return IngestedFile(bucket, key.decode(), version_id, root, prefix, rel.decode(), size, mtime_ns, inode, sha256)


class IngestedFiles(VersionTable):
    def ingested_files(self, root: str, bucket: str, prefix: str) -> list[IngestedFile]:
        rows = self._conn.execute(
            f"SELECT {_COLUMNS} FROM ingested_files WHERE root=? AND bucket=? AND prefix=?", (root, bucket, prefix)
        ).fetchall()
        return [_from_row(r) for r in rows]

    def ingest_entries(self) -> list[tuple[str, str, str]]:
        """Every (root, bucket, prefix) some ingested row belongs to."""
        return [tuple(r) for r in self._conn.execute("SELECT DISTINCT root, bucket, prefix FROM ingested_files")]

    def get_ingested(self, bucket: str, key: str) -> IngestedFile | None:
        row = self._conn.execute(
            f"SELECT {_COLUMNS} FROM ingested_files WHERE bucket=? AND key=?", (bucket, key.encode())
        ).fetchone()
        return _from_row(row) if row else None

    def put_ingested(self, f: IngestedFile, version: VersionRecord, *, known_new: bool = False) -> None:
        """Record a (new or changed) file: the version it had before, if any, goes
        for good (the file is what it is now; no delete marker). `known_new`: the
        caller knows there is no row for it (a scan under the entry's lock)."""
        with self._tx():
            old = None if known_new else self.get_ingested(f.bucket, f.key)
            if old is not None:
                self._forget_file(old, version.hlc)
            self.put_version(version)
            self._conn.execute(
                f"INSERT OR REPLACE INTO ingested_files({_COLUMNS}) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (f.bucket, f.key.encode(), f.version_id, f.root, f.prefix, f.rel.encode(), f.size, f.mtime_ns,
                 f.inode, f.sha256),
            )

    def remove_ingested(self, bucket: str, key: str, version_id: str, deleted_hlc: int) -> bool:
        """A file gone from disk: its version goes too. False if the row changed meanwhile."""
        with self._tx():
            old = self.get_ingested(bucket, key)
            if old is None or old.version_id != version_id:
                return False
            self._forget_file(old, deleted_hlc)
            return True

    def unhashed_ingested(
        self, root: str, bucket: str, prefix: str, after: str, limit: int
    ) -> list[IngestedFile]:
        """Files still without a SHA-256, in key order after `after`."""
        rows = self._conn.execute(
            f"SELECT {_COLUMNS} FROM ingested_files WHERE root=? AND bucket=? AND prefix=? AND sha256 IS NULL "
            "AND key > ? ORDER BY key LIMIT ?",
            (root, bucket, prefix, after.encode(), limit),
        ).fetchall()
        return [_from_row(r) for r in rows]

    def set_ingested_sha256(self, bucket: str, key: str, version_id: str, sha256: str) -> bool:
        """Store a file's digest on its row and its version, if it is still that
        version; the file becomes a copy of that content on this node."""
        with self._tx():
            cur = self._conn.execute(
                "UPDATE ingested_files SET sha256=? WHERE bucket=? AND key=? AND version_id=? RETURNING size",
                (sha256, bucket, key.encode(), version_id),
            )
            row = cur.fetchone()
            if row is None or not self.fill_sha256(bucket, key, version_id, sha256):
                return False
            self.add_blob(sha256, INGEST_BACKEND, row[0], "plain", row[0], role=INGESTED)
            return True

    def ingest_totals(self, root: str, bucket: str, prefix: str) -> dict[str, int]:
        row = self._conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), COUNT(sha256), "
            "COALESCE(SUM(CASE WHEN sha256 IS NOT NULL THEN size ELSE 0 END), 0) "
            "FROM ingested_files WHERE root=? AND bucket=? AND prefix=?",
            (root, bucket, prefix),
        ).fetchone()
        return {"files": row[0], "bytes": row[1], "hashed_files": row[2], "hashed_bytes": row[3]}

    def _forget_file(self, old: IngestedFile, deleted_hlc: int) -> None:
        """The file's version goes for good, and the file stops being a copy of
        its content unless another ingested file has the same bytes."""
        self._conn.execute("DELETE FROM ingested_files WHERE bucket=? AND key=?", (old.bucket, old.key.encode()))
        self.delete_version(old.bucket, old.key, old.version_id, deleted_hlc)
        if old.sha256 is not None and not self._conn.execute(
            "SELECT 1 FROM ingested_files WHERE sha256=? LIMIT 1", (old.sha256,)
        ).fetchone():
            self.remove_blob(old.sha256, INGEST_BACKEND)
