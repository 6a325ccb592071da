"""Multipart uploads and their parts (node-local: an upload lives on the node
that started it until it completes into a version)."""

from __future__ import annotations

from meshd.catalog.records import BlobRelease
from meshd.catalog.rows import PART_COLUMNS, UPLOAD_COLUMNS, pack, part_from_row, upload_from_row, upload_meta
from meshd.catalog.versions import VersionTable
from meshd.conditions import WriteCondition
from meshd.errors import UploadNotFound
from meshd.model import PartPage, PartRecord, UploadRecord, VersionRecord


class UploadTable(VersionTable):
    def create_upload(self, u: UploadRecord) -> None:
        with self._tx():
            self._require_bucket(u.bucket)
            self._conn.execute(
                f"INSERT INTO uploads({UPLOAD_COLUMNS}) VALUES(?, ?, ?, ?, ?)",
                (u.upload_id, u.bucket, u.key.encode(), u.initiated_ms, upload_meta(u)),
            )

    def get_upload(self, bucket: str, key: str, upload_id: str) -> UploadRecord:
        row = self._conn.execute(
            f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE upload_id=? AND bucket=? AND key=?",
            (upload_id, bucket, key.encode()),
        ).fetchone()
        if row is None:
            raise UploadNotFound(upload_id)
        return upload_from_row(row)

    def put_part(self, part: PartRecord) -> list[BlobRelease]:
        """Record a part (replacing an earlier upload of the same number); the
        copies the replaced part's content released."""
        with self._tx():
            self._require_upload(part.upload_id)
            old = self._conn.execute(
                "SELECT sha256 FROM parts WHERE upload_id=? AND part_number=?",
                (part.upload_id, part.part_number),
            ).fetchone()
            self._ref(part.sha256)
            self._conn.execute(
                f"INSERT OR REPLACE INTO parts({PART_COLUMNS}) VALUES(?, ?, ?, ?, ?, ?, ?)",
                (part.upload_id, part.part_number, part.size, part.etag, part.sha256,
                 part.last_modified_ms, pack(part.checksums)),
            )
            return self._unref(old[0]) if old else []

    def list_parts(self, upload_id: str, after: int = 0, limit: int = 10000) -> PartPage:
        rows = self._conn.execute(
            f"SELECT {PART_COLUMNS} FROM parts WHERE upload_id=? AND part_number > ? ORDER BY part_number LIMIT ?",
            (upload_id, after, limit + 1),
        ).fetchall()
        parts = [part_from_row(r) for r in rows[:limit]]
        truncated = len(rows) > limit
        return PartPage(parts, truncated, parts[-1].part_number if truncated and parts else None)

    def finish_upload(
        self, upload: UploadRecord, version: VersionRecord | None, condition: WriteCondition | None = None,
    ) -> list[BlobRelease]:
        """Complete (with the assembled version) or abort (version None) an
        upload: drop its parts; the copies their content released."""
        with self._tx():
            self._require_upload(upload.upload_id)
            part_blobs = self._conn.execute(
                "SELECT sha256 FROM parts WHERE upload_id=?", (upload.upload_id,)
            ).fetchall()
            self._conn.execute("DELETE FROM parts WHERE upload_id=?", (upload.upload_id,))
            self._conn.execute("DELETE FROM uploads WHERE upload_id=?", (upload.upload_id,))
            if version is not None:
                self.put_version(version, condition)  # nested: joins this transaction
            return [r for (sha,) in part_blobs for r in self._unref(sha)]

    def _require_upload(self, upload_id: str) -> None:
        if not self._conn.execute("SELECT 1 FROM uploads WHERE upload_id=?", (upload_id,)).fetchone():
            raise UploadNotFound(upload_id)
