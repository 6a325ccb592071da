"""Hybrid logical clock and version ids.

A timestamp is one 64-bit integer: milliseconds since the epoch in the high 48
bits, a logical counter in the low 16. It never goes backwards on a node, even
if the wall clock does, and (later) folds in timestamps seen from peers, so the
order of versions is the same answer at every node.

A version id is the timestamp and the origin node id, both fixed-width hex, so
sorting version ids as strings sorts them by (timestamp, origin node).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Callable

LOGICAL_BITS = 16
LOGICAL_MASK = (1 << LOGICAL_BITS) - 1
NODE_ID_HEX = 16
HLC_HEX = 16

_VERSION_ID = re.compile(f"[0-9a-f]{{{HLC_HEX + NODE_ID_HEX}}}")
_NODE_ID = re.compile(f"[0-9a-f]{{{NODE_ID_HEX}}}")


class HybridClock:
    def __init__(self, wall_ms: Callable[[], int] | None = None) -> None:
        self._wall_ms = wall_ms or (lambda: time.time_ns() // 1_000_000)
        self._last = 0
        self._lock = threading.Lock()

    def now(self) -> int:
        with self._lock:
            physical = self._wall_ms() << LOGICAL_BITS
            self._last = physical if physical > self._last else self._last + 1
            return self._last

    def observe(self, remote: int) -> int:
        """Fold in a timestamp from elsewhere; the next `now()` is greater than it."""
        with self._lock:
            self._last = max(self._last, remote)
            return self._last


def hlc_millis(ts: int) -> int:
    return ts >> LOGICAL_BITS


@dataclass(frozen=True, order=True)
class VersionId:
    hlc: int
    origin: str

    def __post_init__(self) -> None:
        # Fixed-width lower-case hex on both sides is what makes string order
        # equal (hlc, origin) order, and str() -> parse() a round trip.
        if not 0 <= self.hlc < 1 << (4 * HLC_HEX):
            raise ValueError(f"hlc timestamp out of range: {self.hlc}")
        if not _NODE_ID.fullmatch(self.origin):
            raise ValueError(f"origin must be {NODE_ID_HEX} lower-case hex digits: {self.origin!r}")

    def __str__(self) -> str:
        return f"{self.hlc:0{HLC_HEX}x}{self.origin}"

    @classmethod
    def parse(cls, text: str) -> "VersionId":
        # Strictly lower-case hex digits: int(text, 16) alone would also take
        # "+", "_", spaces and upper case, giving ids that print differently.
        if not _VERSION_ID.fullmatch(text):
            raise ValueError("bad version id")
        return cls(int(text[:HLC_HEX], 16), text[HLC_HEX:])
