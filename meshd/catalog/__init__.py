"""The node's catalog: buckets, versions, blobs, uploads (SQLite by default).

`Catalog` runs the synchronous `SqliteCatalog` on one dedicated thread, so the
event loop never waits on SQLite and writes are serialised without locks.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

from meshd.catalog.records import (
    BlobInfo,
    BucketRecord,
    Event,
    ListedVersion,
    PartRecord,
    UploadRecord,
    VersionRecord,
)
from meshd.catalog.store import (
    BlobRelease,
    ObjectPage,
    PartPage,
    SqliteCatalog,
    UploadPage,
    VersionPage,
)

T = TypeVar("T")

__all__ = [
    "BlobInfo", "BlobRelease", "BucketRecord", "Catalog", "Event", "ListedVersion", "ObjectPage", "PartPage",
    "PartRecord", "UploadPage", "UploadRecord", "VersionPage", "VersionRecord",
]


class Catalog:
    """The catalog's three ways in:

    - `run(fn)`: a read on the writer connection's thread, for checks that must
      see the very latest state (a blob's reference count under its lock).
    - `write(fn)`: every write; it shares one transaction, and so one fsync, with the
      writes queued beside it (group commit: while one COMMIT waits on the disk,
      the next batch gathers). Each runs under its own SAVEPOINT, so a failing
      one is rolled back alone; results are handed out only after the COMMIT.
    - `read(fn)`: a read on a second connection with a thread of its own. WAL
      lets it run beside the writer, so a lookup never waits behind a commit's
      fsync; it sees every write whose `write` has returned.
    """

    def __init__(self, path: Path) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalog")
        self._store = self._executor.submit(SqliteCatalog, path).result()
        self._read_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalog-read")
        self._reader = self._read_executor.submit(SqliteCatalog, path).result()
        self._queue: list[_Queued] = []
        self._queue_lock = threading.Lock()
        self._draining = False

    async def run(self, fn: Callable[[SqliteCatalog], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, self._store)

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
                outcomes = _run_batch(self._store, batch)
            except BaseException as e:  # never leave a waiter hanging
                outcomes = [(False, e)] * len(batch)
            for q, (ok, value) in zip(batch, outcomes):
                try:
                    q.loop.call_soon_threadsafe(_settle, q.future, ok, value)
                except RuntimeError:  # the loop closed meanwhile
                    pass

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


@dataclass
class _Queued:
    fn: Callable[[SqliteCatalog], object]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


def _run_batch(store: SqliteCatalog, batch: list[_Queued]) -> list[tuple[bool, object]]:
    conn = store.db.conn
    outcomes: list[tuple[bool, object]] = []
    try:
        conn.execute("BEGIN IMMEDIATE")
        for q in batch:
            conn.execute("SAVEPOINT queued_write")
            try:
                outcomes.append((True, q.fn(store)))
            except Exception as e:
                conn.execute("ROLLBACK TO queued_write")
                outcomes.append((False, e))
            conn.execute("RELEASE queued_write")
        conn.execute("COMMIT")
    except Exception as e:  # BEGIN or COMMIT failed: nothing of the batch is durable
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        return [(False, e)] * len(batch)
    return outcomes


def _settle(fut: asyncio.Future, ok: bool, value: object) -> None:
    if fut.done():  # the caller was cancelled; the write stands, like any finished write
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)  # type: ignore[arg-type]
