"""The bucket table."""

from __future__ import annotations

from meshd.catalog.feed import FeedTable
from meshd.errors import BucketExists, BucketNotEmpty, BucketNotFound
from meshd.model import BUCKET_CREATED, BUCKET_DELETED, BUCKET_UPDATED, BucketRecord

_COLUMNS = "name, owner, created_ms, cors"


class BucketTable(FeedTable):
    def create_bucket(self, bucket: BucketRecord) -> None:
        with self._tx():
            existing = self._conn.execute("SELECT owner FROM buckets WHERE name=?", (bucket.name,)).fetchone()
            if existing:
                raise BucketExists(bucket.name, owned_by_caller=existing[0] == bucket.owner)
            self._conn.execute(
                f"INSERT INTO buckets({_COLUMNS}) VALUES(?, ?, ?, ?)",
                (bucket.name, bucket.owner, bucket.created_ms, bucket.cors),
            )
            self.add_event(BUCKET_CREATED, bucket.name)

    def get_bucket(self, name: str) -> BucketRecord:
        row = self._conn.execute(f"SELECT {_COLUMNS} FROM buckets WHERE name=?", (name,)).fetchone()
        if row is None:
            raise BucketNotFound(name)
        return BucketRecord(*row)

    def list_buckets(self) -> list[BucketRecord]:
        rows = self._conn.execute(f"SELECT {_COLUMNS} FROM buckets ORDER BY name").fetchall()
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
            self.add_event(BUCKET_DELETED, name)

    def set_bucket_cors(self, name: str, cors: bytes | None) -> None:
        with self._tx():
            cur = self._conn.execute("UPDATE buckets SET cors=? WHERE name=?", (cors, name))
            if cur.rowcount == 0:
                raise BucketNotFound(name)
            self.add_event(BUCKET_UPDATED, name, detail={"changed": "cors"})

    def _require_bucket(self, bucket: str) -> None:
        if not self._conn.execute("SELECT 1 FROM buckets WHERE name=?", (bucket,)).fetchone():
            raise BucketNotFound(bucket)
