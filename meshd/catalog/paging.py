"""Paging through a key-ordered index as S3 listings do: a start position from
a marker, common prefixes rolled up by delimiter, and a seek past each prefix,
so a page costs its entries plus one seek per prefix, whatever lies under them.

Pure over a row source; `SqliteCatalog` supplies the SQL."""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass
from typing import Callable, Iterator

KEY_END = b"\xff"  # sorts after every UTF-8 continuation of a prefix


def start_position(prefix: bytes, delimiter: bytes, after: str | None) -> tuple[bytes, bool]:
    """Where a listing starts: (cursor, inclusive). A marker inside a common
    prefix moves past that whole prefix, since the prefix was already listed."""
    if after is None or after.encode() < prefix:
        return prefix, True
    ab = after.encode()
    cp = common_prefix(ab, prefix, delimiter)
    return (cp + KEY_END, True) if cp is not None else (ab, False)


def common_prefix(key: bytes, prefix: bytes, delimiter: bytes) -> bytes | None:
    if not delimiter or not key.startswith(prefix):
        return None
    i = key.find(delimiter, len(prefix))
    return key[: i + len(delimiter)] if i >= 0 else None


@dataclass
class Walked:
    rows: list[tuple]  # the entries that are not rolled up, in order
    prefixes: list[str]
    truncated: bool
    last_name: bytes  # the last key or common prefix returned
    last_row: tuple | None  # the last row returned, None if a common prefix came last


RowSource = Callable[[bytes, bool, "str | None"], Iterator[tuple]]


def walk(
    open_rows: RowSource, *, key_column: int, prefix: str, delimiter: str, after: str | None,
    resume: str | None, limit: int,
) -> Walked:
    """One page of a listing: rows in key order, rolled up by delimiter.

    `open_rows(cursor, inclusive, resume)` yields rows from the key `cursor` on
    (with `resume`, first the rest of key `cursor` after that id). Rows are
    stepped lazily, and on each new common prefix the walk seeks past all of
    it: a page costs its entries plus one seek per prefix, whatever lies under
    them. The page is truncated only if another entry follows its last one.
    """
    if limit <= 0:
        return Walked([], [], False, b"", None)  # S3: a limit of 0 is never truncated
    pb, db = prefix.encode(), delimiter.encode()
    cursor, inclusive = start_position(pb, db, after)
    # A secondary marker only applies to a key marker of its own: one under the
    # prefix and outside every common prefix (the listing then starts exclusively).
    resume = resume if resume and not inclusive and cursor.startswith(pb) else None
    rows: list[tuple] = []
    prefixes: list[str] = []
    last_name, last_row = b"", None
    while True:
        seek: bytes | None = None
        with closing(open_rows(cursor, inclusive, resume)) as source:
            for row in source:
                if len(rows) + len(prefixes) == limit:
                    return Walked(rows, prefixes, True, last_name, last_row)
                key: bytes = row[key_column]
                cp = common_prefix(key, pb, db)
                if cp is None:
                    rows.append(row)
                    last_name, last_row = key, row
                    continue
                prefixes.append(cp.decode())
                last_name, last_row = cp, None
                seek = cp + KEY_END
                break
        if seek is None:  # the index ran out before the page filled
            return Walked(rows, prefixes, False, b"", None)
        cursor, inclusive, resume = seek, True, None
