"""Listings as S3 pages them: objects (current versions), versions and
uploads, each walked through `paging.walk` over an index in key order."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from typing import Iterator

from meshd.catalog.buckets import BucketTable
from meshd.catalog.paging import KEY_END, walk
from meshd.catalog.rows import UPLOAD_COLUMNS, V_COLUMNS, upload_from_row, version_from_row
from meshd.model import ListedVersion, ObjectPage, UploadPage, VersionPage

_U_COLUMNS = "v." + UPLOAD_COLUMNS.replace(", ", ", v.")


class Listings(BucketTable):
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
        return ObjectPage([version_from_row(r) for r in w.rows], w.prefixes, w.truncated,
                          w.last_name.decode() if w.truncated else None)

    def _current_rows(self, bucket: str, cursor: bytes, inclusive: bool, upper: bytes) -> sqlite3.Cursor:
        op = ">=" if inclusive else ">"
        # CROSS JOIN pins the plan: walk `current` by key, look each version up by
        # its primary key.
        return self._conn.execute(
            f"SELECT {V_COLUMNS} FROM current c CROSS JOIN versions v "
            "ON v.bucket=c.bucket AND v.key=c.key AND v.version_id=c.version_id "
            f"WHERE c.bucket=? AND c.key {op} ? AND c.key < ? AND c.delete_marker=0 "
            "ORDER BY c.key",
            (bucket, cursor, upper),
        )

    def list_versions(
        self, bucket: str, prefix: str, delimiter: str, key_marker: str | None,
        version_id_marker: str | None, limit: int,
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
        out = [ListedVersion(version_from_row(r[:-1]), bool(r[-1])) for r in w.rows]
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
            f"SELECT {V_COLUMNS}{latest} FROM versions v", "version_id", True,
            bucket, cursor, inclusive, resume, upper,
        )

    def list_uploads(
        self, bucket: str, prefix: str, delimiter: str, key_marker: str | None,
        upload_id_marker: str | None, limit: int,
    ) -> UploadPage:
        """Open uploads by key, then upload id; with an upload id marker, the
        listing resumes inside `key_marker` at the uploads after it."""
        self._require_bucket(bucket)
        upper = prefix.encode() + KEY_END
        w = walk(
            lambda cursor, inclusive, resume: self._resumable_rows(
                f"SELECT {_U_COLUMNS} FROM uploads v", "upload_id", False,
                bucket, cursor, inclusive, resume, upper),
            key_column=2, prefix=prefix, delimiter=delimiter, after=key_marker,
            resume=upload_id_marker, limit=limit,
        )
        uploads = [upload_from_row(r) for r in w.rows]
        if not w.truncated:
            return UploadPage(uploads, w.prefixes, False, None, None)
        last_id = w.last_row[0] if w.last_row is not None else None
        return UploadPage(uploads, w.prefixes, True, w.last_name.decode(), last_id)

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
