"""Locks by key: `KeyedLock` between the tasks of one process, created on
demand and dropped when idle; `ContentLocks` by content id across processes."""

from __future__ import annotations

import asyncio
import fcntl
import os
import zlib
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator


class KeyedLock:
    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


# Content ids map onto this many byte-range locks in the lock file: two ids
# share one only by chance (and then merely wait for each other).
STRIPES = 1 << 16
# Waits between tries for a stripe another process holds (contention is rare).
_RETRY_SECONDS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05)


class ContentLocks:
    """A lock per content id that holds across every process sharing the data
    directory (the node's S3 workers and its supervisor), not only between the
    tasks of one.

    Each id maps to one byte of a lock file, locked with fcntl. Such locks
    belong to the process, so within it the tasks first queue on an asyncio
    lock per byte; the byte is then taken without blocking, tried again after
    short waits while another process holds it, so a waiting task stays
    cancellable and never holds a thread. Without a lock file the locks are
    this process's only.
    """

    def __init__(self, path: Path | None = None) -> None:
        self._local = KeyedLock()
        self._fd: int | None = None
        if path is not None:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    @asynccontextmanager
    async def hold(self, content_id: str) -> AsyncIterator[None]:
        stripe = _stripe(content_id)
        async with self._local.hold(str(stripe)):
            if self._fd is None:
                yield
                return
            await self._take(stripe)
            try:
                yield
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, stripe)

    async def _take(self, stripe: int) -> None:
        assert self._fd is not None
        attempt = 0
        while True:
            try:
                fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, stripe)
                return
            except (BlockingIOError, PermissionError):  # held by another process
                await asyncio.sleep(_RETRY_SECONDS[min(attempt, len(_RETRY_SECONDS) - 1)])
                attempt += 1

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _stripe(content_id: str) -> int:
    try:
        return int(content_id[:8], 16) % STRIPES
    except ValueError:  # not a hex digest: still a stable choice
        return zlib.crc32(content_id.encode()) % STRIPES
