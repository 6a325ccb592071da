"""The read-ahead loop the seekable codecs share (encryption segments, zstd frames).

A codec cuts its plaintext into units of `unit` bytes (segments, frames) and can
produce units [i, j] with `batch(i, j)`. `read_ahead` yields the plaintext
bytes [start, end) a batch at a time, starting the next batch while the caller
consumes the current one; a caller that stops early leaves no task behind.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Awaitable, Callable


async def read_ahead(
    batch: Callable[[int, int], Awaitable[bytes]],
    first: int, last: int, per_batch: int, unit: int, start: int, end: int,
) -> AsyncIterator[bytes]:
    """Units `first`..`last`, `per_batch` at a time, cut to [start, end)."""

    def launch(index: int) -> asyncio.Future[bytes] | None:
        if index > last:
            return None
        return asyncio.ensure_future(batch(index, min(last, index + per_batch - 1)))

    index = first
    ahead = launch(index)
    try:
        while ahead is not None:
            current, ahead = ahead, launch(index + per_batch)
            plain = await current
            base = index * unit
            lo, hi = max(start - base, 0), min(end - base, len(plain))
            if hi > lo:
                yield plain if lo == 0 and hi == len(plain) else plain[lo:hi]
            index += per_batch
    finally:
        drop(ahead)


def drop(task: asyncio.Future[Any] | None) -> None:
    """Abandon a task the caller no longer wants, without a stray warning."""
    if task is None:
        return
    if task.done():
        if not task.cancelled():
            task.exception()  # mark retrieved
    else:
        task.cancel()
