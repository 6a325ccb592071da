"""What every table module of the catalog builds on: the connection,
re-entrant transactions, and the list of changes written but not yet handed
to the feed's subscribers. `SqliteCatalog` (store.py) combines the table
modules; each one owns the SQL of its own tables."""

from __future__ import annotations

import sqlite3


class Tables:
    _conn: sqlite3.Connection
    # (seq, kind) of the events written since the last `take_changes`; the
    # async catalog hands them out once their transaction has committed.
    _pending: list[tuple[int, str]]

    def _tx(self) -> "Transaction":
        return Transaction(self)

    def change_mark(self) -> int:
        return len(self._pending)

    def drop_changes(self, mark: int = 0) -> None:
        """Forget changes written after `mark`: their transaction rolled back."""
        del self._pending[mark:]

    def take_changes(self) -> list[tuple[int, str]]:
        taken, self._pending = self._pending, []
        return taken


class Transaction:
    """BEGIN IMMEDIATE ... COMMIT, re-entrant so helpers can nest (inside a
    group-committed batch the outer transaction is the batch's)."""

    def __init__(self, tables: Tables) -> None:
        self._tables = tables
        self._conn = tables._conn
        self._outer = False
        self._mark = 0

    def __enter__(self) -> None:
        if not self._conn.in_transaction:
            self._conn.execute("BEGIN IMMEDIATE")
            self._outer = True
            self._mark = self._tables.change_mark()

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._outer:
            return
        if exc_type is None:
            self._conn.execute("COMMIT")
        else:
            self._conn.execute("ROLLBACK")
            self._tables.drop_changes(self._mark)
