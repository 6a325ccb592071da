"""The node's catalog: buckets, versions, blobs, uploads, the change feed (SQLite by default).

`Catalog` runs the synchronous `SqliteCatalog` on dedicated threads, so the
event loop never waits on SQLite and writes are serialised without locks.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Callable, TypeVar

from meshd.catalog.records import BlobInfo, BlobRelease
from meshd.catalog.store import SqliteCatalog
from meshd.model import BUCKET_CHANGES, Event

T = TypeVar("T")

__all__ = ["BlobInfo", "BlobRelease", "Catalog", "ChangesLost", "SqliteCatalog"]

# How often a feed subscriber looks for changes committed by other processes
# (changes committed by this process wake it at once).
FEED_POLL_SECONDS = 1.0


class ChangesLost(Exception):
    """A feed subscriber asked for changes older than the feed still keeps."""

    def __init__(self, since: int, trimmed_through: int) -> None:
        super().__init__(f"changes after {since} were asked for; the feed keeps those after {trimmed_through}")
        self.since = since
        self.trimmed_through = trimmed_through


class Catalog:
    """The catalog's three ways in:

    - `run(fn)`: a read on the writer connection's thread, for checks that must
      see the very latest state (a blob's reference count under its lock).
    - `write(fn)`: every write; it shares one transaction, and so one fsync, with the
      writes queued beside it (group commit: while one COMMIT waits on the disk,
      the next batch gathers). Each runs under its own SAVEPOINT, so a failing
      one is rolled back alone; results are handed out only after the COMMIT.
      Processes sharing the catalog take turns by a file lock held from BEGIN
      to COMMIT: a waiting writer wakes the moment the lock is free (SQLite's
      own busy handler would sleep and poll), and gathers a bigger batch meanwhile.
    - `read(fn)`: a read on a second connection with a thread of its own. WAL
      lets it run beside the writer, so a lookup never waits behind a commit's
      fsync; it sees every write whose `write` has returned.

    And one way to follow it: `changes(since)`, every event after a sequence
    number, as they commit. `bucket_epoch` changes whenever a committed write
    changed a bucket, so caches of bucket records know when to let go.
    """

    def __init__(self, path: Path) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalog")
        self._store = self._executor.submit(SqliteCatalog, path).result()
        self._read_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalog-read")
        self._reader = self._read_executor.submit(SqliteCatalog, path).result()
        self._turns = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._queue: list[_Queued] = []
        self._queue_lock = threading.Lock()
        self._draining = False
        self.bucket_epoch = 0
        self._wakeup = _Wakeup()

    async def run(self, fn: Callable[[SqliteCatalog], T]) -> T:
        loop = asyncio.get_running_loop()

        def call(store: SqliteCatalog) -> T:
            try:
                return fn(store)
            finally:  # a write made here (outside the batches) is published too
                self._publish(store.take_changes(), loop)

        return await loop.run_in_executor(self._executor, call, self._store)

    async def read(self, fn: Callable[[SqliteCatalog], T]) -> T:
        """`fn` must only read."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._read_executor, fn, self._reader)

    async def write(self, fn: Callable[[SqliteCatalog], T]) -> T:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        with self._queue_lock:
            self._queue.append(_Queued(fn, fut, loop))
            start, self._draining = not self._draining, True
        if start:
            self._executor.submit(self._drain)
        return await fut

    def _drain(self) -> None:
        """On the writer thread: commit queued writes, a batch per transaction."""
        while True:
            with self._queue_lock:
                batch, self._queue = self._queue, []
                if not batch:
                    self._draining = False
                    return
            try:
                fcntl.flock(self._turns, fcntl.LOCK_EX)  # this process's turn to write
                try:
                    outcomes = _run_batch(self._store, batch)
                finally:
                    fcntl.flock(self._turns, fcntl.LOCK_UN)
            except BaseException as e:  # never leave a waiter hanging
                outcomes = [(False, e)] * len(batch)
            self._publish(self._store.take_changes(), batch[0].loop)
            for q, (ok, value) in zip(batch, outcomes):
                try:
                    q.loop.call_soon_threadsafe(_settle, q.future, ok, value)
                except RuntimeError:  # the loop closed meanwhile
                    pass

    def _publish(self, changes: list[tuple[int, str]], loop: asyncio.AbstractEventLoop) -> None:
        """On the writer thread, after a commit, before any writer resumes (so
        its next read of a bucket misses the cache): tell the caches and wake
        the feed's subscribers."""
        if not changes:
            return
        if any(kind in BUCKET_CHANGES for _, kind in changes):
            self.bucket_epoch += 1
        _call_soon(loop, self._wakeup.fire)

    async def changes(
        self, since: int = 0, *, kinds: frozenset[str] | None = None, batch: int = 256,
        poll_seconds: float = FEED_POLL_SECONDS,
    ) -> AsyncIterator[Event]:
        """Every event after sequence number `since`, in order, then each new
        one as it commits, for as long as the caller iterates. Changes
        committed in this process are seen at once, those of other processes
        within `poll_seconds`. Raises ChangesLost if events after `since` were
        trimmed already."""
        seq = since
        while True:
            woken = self._wakeup.current()  # before the read: a commit after it still wakes us
            events, trimmed = await self.read(lambda c: (c.events_after(seq, batch), c.trimmed_through()))
            if seq < trimmed:
                raise ChangesLost(seq, trimmed)
            for event in events:
                seq = event.seq
                if kinds is None or event.kind in kinds:
                    yield event
            if len(events) < batch:
                try:
                    await asyncio.wait_for(woken.wait(), poll_seconds)
                except TimeoutError:
                    pass

    async def last_seq(self) -> int:
        """The newest event's sequence number: `changes(since=...)` from here sees only what comes next."""
        return await self.read(lambda c: c.last_seq())

    def run_sync(self, fn: Callable[[SqliteCatalog], T]) -> T:
        """For start-up code that runs before the event loop."""
        return self._executor.submit(fn, self._store).result()

    async def aclose(self) -> None:
        try:
            await self.read(lambda s: s.close())
            await self.run(lambda s: s.close())
        finally:
            self._read_executor.shutdown(wait=True)
            self._executor.shutdown(wait=True)
            os.close(self._turns)


@dataclass
class _Queued:
    fn: Callable[[SqliteCatalog], object]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class _Wakeup:
    """Wakes this process's feed subscribers when a write commits: each waits
    on the current event, which a commit sets and replaces."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def current(self) -> asyncio.Event:
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    def fire(self) -> None:
        event, self._event = self._event, None
        if event is not None:
            event.set()


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[[], None]) -> None:
    try:
        loop.call_soon_threadsafe(fn)
    except RuntimeError:  # the loop closed meanwhile
        pass


def _run_batch(store: SqliteCatalog, batch: list[_Queued]) -> list[tuple[bool, object]]:
    conn = store.conn
    outcomes: list[tuple[bool, object]] = []
    try:
        conn.execute("BEGIN IMMEDIATE")
        for q in batch:
            conn.execute("SAVEPOINT queued_write")
            mark = store.change_mark()
            try:
                outcomes.append((True, q.fn(store)))
            except Exception as e:
                conn.execute("ROLLBACK TO queued_write")
                store.drop_changes(mark)
                outcomes.append((False, e))
            conn.execute("RELEASE queued_write")
        conn.execute("COMMIT")
    except Exception as e:  # BEGIN or COMMIT failed: nothing of the batch is durable
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        store.drop_changes()
        return [(False, e)] * len(batch)
    return outcomes


def _settle(fut: asyncio.Future, ok: bool, value: object) -> None:
    if fut.done():  # the caller was cancelled; the write stands, like any finished write
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)  # type: ignore[arg-type]
