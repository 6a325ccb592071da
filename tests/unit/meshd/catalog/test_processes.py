"""The catalog and the content locks across processes, as the node's S3
workers and supervisor share one data directory: concurrent writers from two
processes all commit (they take turns by the catalog's file lock, never
"database is locked"), and a content id locked in one process waits in the
other until it is released."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meshd.catalog import Catalog
from meshd.locks import ContentLocks
from meshd.model import BucketRecord
from tests.support.records import version

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[4]

WRITER = """
import asyncio, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from meshd.catalog import Catalog
from tests.support.records import version

async def main():
    catalog = Catalog(Path({path!r}))
    print("ready", flush=True)
    sys.stdin.readline()
    await asyncio.gather(*(catalog.write(lambda c, i=i: c.put_version(version(f"child/{{i}}")))
                           for i in range({n})))
    await catalog.aclose()
    print("done", flush=True)

asyncio.run(main())
"""

HOLDER = """
import fcntl, os, sys
sys.path.insert(0, {root!r})
from meshd.locks import _stripe
fd = os.open({path!r}, os.O_RDWR | os.O_CREAT, 0o600)
fcntl.lockf(fd, fcntl.LOCK_EX, 1, _stripe({content_id!r}))
print("held", flush=True)
sys.stdin.readline()
"""


def child(script: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


async def test_two_processes_write_one_catalog_at_once(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    catalog = Catalog(path)
    n = 300
    try:
        await catalog.write(lambda c: c.create_bucket(BucketRecord("bkt", "o", 1)))
        proc = child(WRITER.format(root=str(ROOT), path=str(path), n=n))
        assert proc.stdout.readline().strip() == "ready"
        proc.stdin.write("go\n")
        proc.stdin.flush()
        await asyncio.gather(*(catalog.write(lambda c, i=i: c.put_version(version(f"parent/{i}")))
                               for i in range(n)))
        assert (await asyncio.to_thread(proc.stdout.readline)).strip() == "done"
        assert proc.wait(30) == 0
        page = await catalog.read(lambda c: c.list_objects("bkt", "", "/", None, 1000))
        assert page.common_prefixes == ["child/", "parent/"]
        for prefix in ("child/", "parent/"):
            listed = await catalog.read(lambda c, p=prefix: c.list_objects("bkt", p, "", None, 1000))
            assert len(listed.versions) == n
        # Every write of both processes is in the one feed, each once.
        events = await catalog.read(lambda c: c.events_after(0, 10_000))
        assert len(events) == 2 * n + 1 and len({e.seq for e in events}) == 2 * n + 1
    finally:
        await catalog.aclose()


async def test_a_content_id_locked_elsewhere_waits(tmp_path: Path) -> None:
    path = tmp_path / "blobs.lock"
    content_id = "ab" * 32
    locks = ContentLocks(path)
    proc = child(HOLDER.format(root=str(ROOT), path=str(path), content_id=content_id))
    try:
        assert proc.stdout.readline().strip() == "held"
        entered = asyncio.Event()

        async def take() -> None:
            async with locks.hold(content_id):
                entered.set()

        task = asyncio.create_task(take())
        async with locks.hold("cd" * 32):  # another content id is free meanwhile
            pass
        await asyncio.sleep(0.2)
        assert not entered.is_set()  # still held by the other process
        proc.stdin.write("release\n")
        proc.stdin.flush()
        started = time.monotonic()
        await asyncio.wait_for(entered.wait(), 10)
        assert time.monotonic() - started < 5
        await task
    finally:
        proc.kill()
        proc.wait()
        locks.close()


async def test_waiting_for_a_lock_can_be_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "blobs.lock"
    content_id = "ef" * 32
    locks = ContentLocks(path)
    proc = child(HOLDER.format(root=str(ROOT), path=str(path), content_id=content_id))
    try:
        assert proc.stdout.readline().strip() == "held"

        async def take() -> None:
            async with locks.hold(content_id):
                pass

        task = asyncio.create_task(take())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        proc.kill()
        proc.wait()
        async with locks.hold(content_id):  # nothing was left held by the cancelled wait
            pass
    finally:
        proc.kill()
        locks.close()
