"""The node's catalog: buckets, versions, blobs, uploads (SQLite by default).

`Catalog` runs the synchronous `SqliteCatalog` on one dedicated thread, so the
event loop never waits on SQLite and writes are serialised without locks.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, TypeVar

from meshd.catalog.records import BucketRecord, ListedVersion, PartRecord, UploadRecord, VersionRecord
from meshd.catalog.store import BlobRelease, ObjectPage, PartPage, SqliteCatalog, UploadPage, VersionPage

T = TypeVar("T")

__all__ = [
    "BlobRelease", "BucketRecord", "Catalog", "ListedVersion", "ObjectPage", "PartPage",
    "PartRecord", "UploadPage", "UploadRecord", "VersionPage", "VersionRecord",
]


class Catalog:
    def __init__(self, path: Path) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalog")
        self._store = self._executor.submit(SqliteCatalog, path).result()

    async def run(self, fn: Callable[[SqliteCatalog], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, self._store)

    def run_sync(self, fn: Callable[[SqliteCatalog], T]) -> T:
        """For start-up code that runs before the event loop."""
        return self._executor.submit(fn, self._store).result()

    async def aclose(self) -> None:
        try:
            await self.run(lambda s: s.close())
        finally:
            self._executor.shutdown(wait=True)
