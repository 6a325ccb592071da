"""The change feed's table: every catalog change (and every operational event)
is a row with a per-node sequence number, written in the transaction of the
change itself, so a reader in any process sees a change exactly when it sees
its event, and a subscriber that was away resumes from the last number it saw.

Old rows are trimmed (`trim_events`); `trimmed_through` is the last sequence
number removed, so a subscriber that fell further behind learns that it missed
changes (and repairs by other means, e.g. anti-entropy) instead of silently
skipping them.
"""

from __future__ import annotations

import time

from meshd.catalog.rows import pack, unpack
from meshd.catalog.tables import Tables
from meshd.model import Event

_TRIMMED_THROUGH = "feed_trimmed_through"


class FeedTable(Tables):
    def add_event(
        self, kind: str, bucket: str | None = None, key: str | None = None,
        version_id: str | None = None, detail: dict | None = None, *, time_ms: int | None = None,
    ) -> int:
        """Append an event; its sequence number."""
        with self._tx():
            cur = self._conn.execute(
                "INSERT INTO events(time_ms, kind, bucket, key, version_id, detail) VALUES(?, ?, ?, ?, ?, ?)",
                (time_ms if time_ms is not None else time.time_ns() // 1_000_000, kind, bucket,
                 key.encode() if key is not None else None, version_id, pack(detail or {})),
            )
            seq = int(cur.lastrowid or 0)
            self._pending.append((seq, kind))
            return seq

    def events_after(self, seq: int, limit: int = 1000, kind: str | None = None) -> list[Event]:
        rows = self._conn.execute(
            "SELECT seq, time_ms, kind, bucket, key, version_id, detail FROM events "
            "WHERE seq > ? AND (? IS NULL OR kind = ?) ORDER BY seq LIMIT ?",
            (seq, kind, kind, limit),
        ).fetchall()
        return [Event(r[0], r[1], r[2], r[3], r[4].decode() if r[4] is not None else None, r[5], unpack(r[6]))
                for r in rows]

    def last_seq(self) -> int:
        """The newest sequence number handed out (0 before the first event)."""
        row = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        return int(row[0]) if row else 0

    def trimmed_through(self) -> int:
        row = self._conn.execute("SELECT v FROM node_meta WHERE k = ?", (_TRIMMED_THROUGH,)).fetchone()
        return int(row[0]) if row else 0

    def trim_events(self, *, keep: int, before_ms: int, limit: int = 10_000) -> int:
        """Remove up to `limit` of the oldest events, as long as each is beyond
        the newest `keep` or older than `before_ms`; how many were removed.
        Only a prefix goes, so the feed never has holes."""
        with self._tx():
            cutoff_seq = self.last_seq() - keep
            through = 0
            for seq, time_ms in self._conn.execute(
                "SELECT seq, time_ms FROM events ORDER BY seq LIMIT ?", (limit,)
            ).fetchall():
                if seq > cutoff_seq and time_ms >= before_ms:
                    break
                through = seq
            if not through:
                return 0
            cur = self._conn.execute("DELETE FROM events WHERE seq <= ?", (through,))
            self._conn.execute(
                "INSERT INTO node_meta(k, v) VALUES(?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
                (_TRIMMED_THROUGH, str(through)),
            )
            return cur.rowcount
