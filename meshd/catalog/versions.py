"""Versions, the current version of each key, and tombstones; local writes
and merges of records from other nodes.

Merge laws (what makes every node converge on the same catalog, whatever the
order and however often records arrive; property-tested in
tests/unit/meshd/catalog/test_merge.py):

- a version is identified by (bucket, key, version id); its immutable fields
  are set once by the node that made it, so inserting a record that is
  already there changes nothing;
- a tombstone wins over its version: a merged tombstone removes the version
  and a version merged after its tombstone is ignored; of two tombstones of
  one version the earlier deletion time is kept;
- tags are last-writer-wins by `tags_stamp` ((HLC, node) as a string);
- an ingested file's SHA-256, unknown when it is first listed, is filled in
  once (None never replaces a digest);
- the current version of a key is its greatest version id (HLC timestamp, then
  origin node), so every node picks the same one.
"""

from __future__ import annotations

import base64
from dataclasses import replace

from meshd.catalog.blobs import BlobTable
from meshd.catalog.buckets import BucketTable
from meshd.catalog.records import BlobRelease
from meshd.catalog.rows import VERSION_COLUMNS, VERSION_PLACEHOLDERS, pack, version_from_row, version_meta, version_row
from meshd.conditions import WriteCondition, check_write
from meshd.model import VERSION_DELETED, VERSION_HASHED, VERSION_PUT, VERSION_TAGGED, Tombstone, VersionRecord


class VersionTable(BucketTable, BlobTable):
    # -- writes made at this node -----------------------------------------

    def put_version(self, v: VersionRecord, condition: WriteCondition | None = None) -> None:
        """Add a new version made here; with a condition, only if it holds for
        the key's current version at this moment (checked in the transaction,
        so two racing writers cannot both pass)."""
        with self._tx():
            self._require_bucket(v.bucket)
            if condition:
                check_write(self.get_version(v.bucket, v.key, None), condition, v.key)
            self._insert_version(v)

    def put_inline_version(
        self, v: VersionRecord, data: bytes, encoding: str, condition: WriteCondition | None = None
    ) -> None:
        """A small version together with its (encoded) bytes, in one transaction."""
        assert v.sha256 is not None
        with self._tx():
            self.put_inline_blob(v.sha256, v.size, data, encoding)
            self.put_version(v, condition)

    def delete_version(
        self, bucket: str, key: str, version_id: str, deleted_hlc: int
    ) -> tuple[VersionRecord | None, list[BlobRelease]]:
        """Remove one version for good, leaving a tombstone; the version and the
        copies its content released. An unknown version is left alone."""
        with self._tx():
            v = self.get_version(bucket, key, version_id)
            if v is None:
                return None, []
            return v, self._bury(Tombstone(bucket, key, version_id, deleted_hlc), v)

    def set_tags(self, bucket: str, key: str, version_id: str, tags: dict[str, str], stamp: str) -> bool:
        """Replace a version's tags if `stamp` is newer than theirs; True if it was."""
        with self._tx():
            cur = self._conn.execute(
                "UPDATE versions SET tags=?, tags_stamp=? WHERE bucket=? AND key=? AND version_id=? AND tags_stamp < ?",
                (pack(tags) if tags else None, stamp, bucket, key.encode(), version_id, stamp),
            )
            if cur.rowcount == 0:
                return False
            self.add_event(VERSION_TAGGED, bucket, key, version_id, {"stamp": stamp})
            return True

    def fill_sha256(self, bucket: str, key: str, version_id: str, sha256: str) -> bool:
        """Give a version that had none its SHA-256 (an ingested file, hashed
        after it was listed), also as its full-object `sha256` checksum so
        clients can verify the bytes; False if it has one or is gone."""
        with self._tx():
            v = self.get_version(bucket, key, version_id)
            if v is None or v.sha256 is not None or v.delete_marker:
                return False
            checksums = {**v.checksums, "sha256": base64.b64encode(bytes.fromhex(sha256)).decode()}
            meta = version_meta(replace(v, checksums=checksums))
            self._conn.execute(
                "UPDATE versions SET sha256=?, meta=? WHERE bucket=? AND key=? AND version_id=?",
                (sha256, meta, bucket, key.encode(), version_id),
            )
            self._ref(sha256)
            self.add_event(VERSION_HASHED, bucket, key, version_id)
            return True

    # -- merges of records from anywhere ------------------------------------

    def merge_version(self, v: VersionRecord) -> bool:
        """Fold in a version record from any node (this one included), in any
        order, any number of times; True if the catalog changed. A record for
        a bucket this node does not know is kept."""
        with self._tx():
            if self._tombstoned(v.bucket, v.key, v.version_id):
                return False
            existing = self.get_version(v.bucket, v.key, v.version_id)
            if existing is None:
                self._insert_version(v)
                return True
            changed = False
            if v.sha256 is not None and existing.sha256 is None:
                changed = self.fill_sha256(v.bucket, v.key, v.version_id, v.sha256)
            if v.tags_stamp > existing.tags_stamp:
                changed = self.set_tags(v.bucket, v.key, v.version_id, v.tags, v.tags_stamp) or changed
            return changed

    def merge_tombstone(self, t: Tombstone) -> list[BlobRelease]:
        """Fold in a permanent deletion from any node: the version goes (now or
        when it arrives: never); the copies its content released."""
        with self._tx():
            return self._bury(t, self.get_version(t.bucket, t.key, t.version_id))

    def get_tombstone(self, bucket: str, key: str, version_id: str) -> Tombstone | None:
        row = self._conn.execute(
            "SELECT deleted_hlc FROM tombstones WHERE bucket=? AND key=? AND version_id=?",
            (bucket, key.encode(), version_id),
        ).fetchone()
        return Tombstone(bucket, key, version_id, row[0]) if row else None

    # -- reads --------------------------------------------------------------

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
        return version_from_row(row) if row else None

    def versions_of_blob(self, content_id: str, limit: int = 100) -> list[VersionRecord]:
        rows = self._conn.execute(
            f"SELECT {VERSION_COLUMNS} FROM versions WHERE sha256=? LIMIT ?", (content_id, limit)
        ).fetchall()
        return [version_from_row(r) for r in rows]

    # -- the one way in and out ---------------------------------------------

    def _insert_version(self, v: VersionRecord) -> None:
        self._conn.execute(f"INSERT INTO versions({VERSION_COLUMNS}) VALUES({VERSION_PLACEHOLDERS})", version_row(v))
        if v.sha256 is not None:
            self._ref(v.sha256)
        self._conn.execute(
            "INSERT INTO current(bucket, key, version_id, delete_marker) VALUES(?, ?, ?, ?) "
            "ON CONFLICT(bucket, key) DO UPDATE SET version_id=excluded.version_id, "
            "delete_marker=excluded.delete_marker WHERE excluded.version_id > current.version_id",
            (v.bucket, v.key.encode(), v.version_id, int(v.delete_marker)),
        )
        self.add_event(VERSION_PUT, v.bucket, v.key, v.version_id)

    def _bury(self, t: Tombstone, v: VersionRecord | None) -> list[BlobRelease]:
        """Record a tombstone and remove its version if present (one transaction)."""
        kb = t.key.encode()
        known = self._conn.execute(
            "SELECT deleted_hlc FROM tombstones WHERE bucket=? AND key=? AND version_id=?",
            (t.bucket, kb, t.version_id),
        ).fetchone()
        if known is None or t.deleted_hlc < known[0]:
            self._conn.execute(
                "INSERT INTO tombstones(bucket, key, version_id, deleted_hlc) VALUES(?, ?, ?, ?) "
                "ON CONFLICT(bucket, key, version_id) DO UPDATE SET deleted_hlc=excluded.deleted_hlc",
                (t.bucket, kb, t.version_id, t.deleted_hlc),
            )
        released: list[BlobRelease] = []
        if v is not None:
            self._conn.execute(
                "DELETE FROM versions WHERE bucket=? AND key=? AND version_id=?", (t.bucket, kb, t.version_id))
            if v.sha256 is not None:
                released = self._unref(v.sha256)
            self._refresh_current(t.bucket, kb)
        if v is not None or known is None:
            self.add_event(VERSION_DELETED, t.bucket, t.key, t.version_id, {"hlc": t.deleted_hlc})
        return released

    def _refresh_current(self, bucket: str, kb: bytes) -> None:
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

    def _tombstoned(self, bucket: str, key: str, version_id: str) -> bool:
        return self._conn.execute(
            "SELECT 1 FROM tombstones WHERE bucket=? AND key=? AND version_id=?",
            (bucket, key.encode(), version_id),
        ).fetchone() is not None
