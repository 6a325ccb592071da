"""Where this node keeps the bytes of each content id, and how many versions
and parts refer to it.

- `blobs`: one row per stored copy (content id, backend): its encoding, stored
  size, role (origin, replica, cache, ingested) and whether it was found
  damaged. Inline copies (backend "inline") keep their bytes in `inline_blobs`.
- `refs`: per content id, the number of versions and parts that refer to it.
  Versions merged from peers count like local ones: a reference says "this
  content is wanted", not "this node has it".

When the last reference goes, every copy's row goes in the same transaction
and the copies whose bytes live outside the catalog are returned as
`BlobRelease`s; the blob store deletes those bytes after the commit (inline
bytes go with the transaction; ingested files are never deleted).
"""

from __future__ import annotations

from meshd.catalog.feed import FeedTable
from meshd.catalog.records import INGEST_BACKEND, INLINE_BACKEND, ORIGIN, BlobInfo, BlobRelease, InlineBlob
from meshd.catalog.rows import BLOB_COLUMNS, blob_from_row

_B_COLUMNS = "b." + BLOB_COLUMNS.replace(", ", ", b.")
# SQLite's default bound-parameter limit is 999 (32766 since 3.32): stay well below.
_IN_BATCH = 500


class BlobTable(FeedTable):
    # -- references -------------------------------------------------------

    def _ref(self, content_id: str) -> None:
        self._conn.execute(
            "INSERT INTO refs(content_id, count) VALUES(?, 1) "
            "ON CONFLICT(content_id) DO UPDATE SET count = count + 1",
            (content_id,),
        )

    def _unref(self, content_id: str) -> list[BlobRelease]:
        row = self._conn.execute(
            "UPDATE refs SET count = count - 1 WHERE content_id=? RETURNING count", (content_id,)
        ).fetchone()
        if row is None or row[0] > 0:
            return []
        self._conn.execute("DELETE FROM refs WHERE content_id=?", (content_id,))
        copies = self._conn.execute(
            "DELETE FROM blobs WHERE content_id=? RETURNING backend, size", (content_id,)
        ).fetchall()
        released = []
        for backend, size in copies:
            if backend == INLINE_BACKEND:
                # The bytes live in this database: they go in the same transaction.
                self._conn.execute("DELETE FROM inline_blobs WHERE content_id=?", (content_id,))
            elif backend != INGEST_BACKEND:  # an ingested file is the operator's, never deleted
                released.append(BlobRelease(content_id, backend, size))
        return released

    def blob_refs(self, content_id: str) -> int:
        row = self._conn.execute("SELECT count FROM refs WHERE content_id=?", (content_id,)).fetchone()
        return row[0] if row else 0

    # -- copies -----------------------------------------------------------

    def add_blob(
        self, content_id: str, backend: str, size: int, encoding: str, stored_size: int, *,
        role: str = ORIGIN, replace: bool = False,
    ) -> None:
        """Record a stored copy, in the transaction that adds the first
        reference to it. An existing record is kept, unless `replace` (new
        bytes were just committed over damaged ones)."""
        self._conn.execute(
            "INSERT INTO blobs(content_id, backend, size, encoding, stored_size, role) "
            "VALUES(?, ?, ?, ?, ?, ?) ON CONFLICT(content_id, backend) DO "
            + ("UPDATE SET encoding=excluded.encoding, stored_size=excluded.stored_size, damaged=0"
               if replace else "NOTHING"),
            (content_id, backend, size, encoding, stored_size, role),
        )

    def remove_blob(self, content_id: str, backend: str) -> BlobRelease | None:
        """Forget one copy (e.g. an ingested file that is gone); its bytes are
        returned for deletion unless they are inline or ingested."""
        with self._tx():
            row = self._conn.execute(
                "DELETE FROM blobs WHERE content_id=? AND backend=? RETURNING size", (content_id, backend)
            ).fetchone()
            if row is None:
                return None
            if backend == INLINE_BACKEND:
                self._conn.execute("DELETE FROM inline_blobs WHERE content_id=?", (content_id,))
                return None
            return None if backend == INGEST_BACKEND else BlobRelease(content_id, backend, row[0])

    def get_blob(self, content_id: str, backend: str) -> BlobInfo | None:
        row = self._conn.execute(
            f"SELECT {BLOB_COLUMNS} FROM blobs WHERE content_id=? AND backend=?", (content_id, backend)
        ).fetchone()
        return blob_from_row(row) if row else None

    def copies(self, content_id: str) -> list[BlobInfo]:
        """Every copy of a content id on this node, inline bytes included (one read)."""
        rows = self._conn.execute(
            f"SELECT {_B_COLUMNS}, i.data FROM blobs b LEFT JOIN inline_blobs i "
            f"ON b.backend = '{INLINE_BACKEND}' AND i.content_id = b.content_id WHERE b.content_id=?",
            (content_id,),
        ).fetchall()
        return [blob_from_row(r[:-1], r[-1]) for r in rows]

    def blobs_after(self, after: tuple[str, str] | None, limit: int) -> list[BlobInfo]:
        """Every copy, in (backend, content id) order, a page at a time."""
        backend, content_id = after or ("", "")
        rows = self._conn.execute(
            f"SELECT {BLOB_COLUMNS} FROM blobs WHERE (backend, content_id) > (?, ?) "
            "ORDER BY backend, content_id LIMIT ?",
            (backend, content_id, limit),
        ).fetchall()
        return [blob_from_row(r) for r in rows]

    def stored_blobs(self, backend: str, content_ids: list[str]) -> set[str]:
        """Which of these content ids have a copy recorded on `backend`."""
        found: set[str] = set()
        for i in range(0, len(content_ids), _IN_BATCH):
            chunk = content_ids[i:i + _IN_BATCH]
            rows = self._conn.execute(
                f"SELECT content_id FROM blobs WHERE backend=? AND content_id IN ({','.join('?' * len(chunk))})",
                (backend, *chunk),
            )
            found.update(r[0] for r in rows)
        return found

    def mark_blob_damaged(self, content_id: str, backend: str, damaged: bool = True) -> bool:
        """Flag a copy's stored bytes as corrupt (or repaired); True if the flag changed."""
        with self._tx():
            cur = self._conn.execute(
                "UPDATE blobs SET damaged=? WHERE content_id=? AND backend=? AND damaged<>?",
                (int(damaged), content_id, backend, int(damaged)),
            )
            return cur.rowcount > 0

    # -- inline copies ----------------------------------------------------

    def put_inline_blob(self, content_id: str, size: int, data: bytes, encoding: str) -> None:
        """Keep a small blob's (encoded) bytes in the catalog, in the transaction
        that references them. Bytes already kept stay as they are, unless they
        were found damaged: then these (verified) bytes repair them."""
        known = self.get_blob(content_id, INLINE_BACKEND)
        repair = known is not None and known.damaged
        self._conn.execute(
            "INSERT INTO inline_blobs(content_id, data) VALUES(?, ?) ON CONFLICT(content_id) DO "
            + ("UPDATE SET data=excluded.data" if repair else "NOTHING"), (content_id, data)
        )
        self.add_blob(content_id, INLINE_BACKEND, size, encoding, len(data), replace=repair)

    def get_inline(self, content_id: str) -> InlineBlob | None:
        """An inline blob's stored bytes with its encoding and damaged flag, in one read."""
        row = self._conn.execute(
            "SELECT i.data, b.encoding, b.damaged FROM inline_blobs i JOIN blobs b "
            "ON b.content_id = i.content_id AND b.backend = ? WHERE i.content_id=?",
            (INLINE_BACKEND, content_id),
        ).fetchone()
        return InlineBlob(row[0], row[1], bool(row[2])) if row else None
