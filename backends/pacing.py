"""Pacing of background reads (ingest hashing, scrubbing): at most `rate`
bytes per second, so foreground requests keep the disk."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Awaitable, Callable

# Falling further behind schedule than this (idle time, waiting for work) is
# not credit for a burst later: the schedule starts again.
MAX_CREDIT_SECONDS = 1.0


class Pacer:
    """`rate` bytes per second at most (0: no limit). Call `account(n)` from a
    worker thread (it waits there; setting `stop` ends a wait early) or
    `await spent(n)` on the event loop, after each n bytes of work."""

    def __init__(
        self,
        rate: int,
        stop: threading.Event | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self.stop = stop or threading.Event()
        self._clock = clock
        self._sleep = sleep
        self._start = clock()
        self._done = 0

    def delay(self, n: int) -> float:
        """Record n bytes done; the seconds to wait to stay on schedule."""
        if self.rate <= 0:
            return 0.0
        self._done += n
        ahead = self._start + self._done / self.rate - self._clock()
        if ahead < -MAX_CREDIT_SECONDS:
            self._start, self._done = self._clock(), 0
        return max(ahead, 0.0)

    def account(self, n: int) -> None:
        wait = self.delay(n)
        if wait > 0:
            self.stop.wait(wait)

    async def spent(self, n: int) -> None:
        wait = self.delay(n)
        if wait > 0:
            await self._sleep(wait)
