"""The scrubber over a real ObjectService: memory backend wrapped in the
encrypting codec, real SQLite catalog. Corruption is made by changing the
stored bytes inside the memory backend (or the catalog's inline table)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import pytest

from backends.base import BackendError, BlobRef
from backends.encoded import BlobCodec, EncodedBackend
from backends.encryption import MasterKey
from backends.memory import MemoryBackend
from meshd.catalog import Catalog
from meshd.catalog.records import INGESTED, INLINE_BACKEND
from meshd.errors import ObjectCorrupt
from meshd.objects import ObjectService
from meshd.scrub import Scrubber
from tests.support.fakeclock import FakeClock
from meshd.transfers import Expected, NewObject
from tests.support.services import object_service

pytestmark = pytest.mark.timeout(60)

BIG = 40_000  # above inline_max_bytes: a blob in the backend


class FlakyBackend(MemoryBackend):
    """The memory backend, able to fail every read as if it were unreachable."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.down = False
        # Awaited (once) before the next read: lets a test act between a pass
        # reading a blob record and reading the blob's bytes.
        self.before_read: Callable[[], Awaitable[None]] | None = None

    async def _before(self) -> None:
        hook, self.before_read = self.before_read, None
        if hook is not None:
            await hook()
        if self.down:
            raise BackendError("connection refused")

    async def open(self, ref: BlobRef, start: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        await self._before()
        async for chunk in super().open(ref, start, length):
            yield chunk

    async def read_at(self, ref: BlobRef, offset: int, length: int) -> bytes:
        await self._before()
        return await super().read_at(ref, offset, length)


class Env:
    def __init__(self, catalog: Catalog, service: ObjectService, memory: FlakyBackend, encrypt: bool) -> None:
        self.catalog, self.service, self.memory, self.encrypt = catalog, service, memory, encrypt
        self.scrubber = Scrubber(service.blobs)

    async def put(self, key: str, data: bytes, *, inline: bool = False) -> str:
        v = await self.service.put_object("bkt", key, stream(data), NewObject(),
                                          Expected(size=len(data)) if inline else Expected())
        return v.version_id

    async def get(self, key: str) -> bytes:
        v = await self.service.get_version("bkt", key, None)
        return b"".join([c async for c in (await self.service.open_object(v, None)).chunks])

    async def blob(self, content_id: str):
        return await self.catalog.run(lambda c: c.get_blob(content_id, "local"))

    async def events(self, kind: str):
        return await self.catalog.run(lambda c: c.events_after(0, kind=kind))


async def stream(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 7000):
        yield data[i:i + 7000]
    if not data:
        return


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


async def make_env(tmp_path: Path, encrypt: bool):
    catalog = Catalog(tmp_path / "catalog.db")
    memory = FlakyBackend("local")
    codec = BlobCodec(MasterKey.generate(), encrypt=encrypt)
    service = object_service(catalog, {"local": EncodedBackend(memory, codec)}, inline_codec=codec,
                             io_chunk_bytes=8192)
    await service.create_bucket("bkt", "owner")
    return Env(catalog, service, memory, encrypt)


@pytest.fixture(params=[True, False], ids=["aead", "plain"])
async def env(tmp_path: Path, request):
    e = await make_env(tmp_path, request.param)
    yield e
    await e.scrubber.aclose()
    await e.catalog.aclose()


async def test_clean_pass_checks_every_blob(env: Env):
    a, b, small = os.urandom(BIG), os.urandom(BIG + 1), b"tiny"
    await env.put("a", a)
    await env.put("b", b)
    await env.put("small", small, inline=True)
    report = await env.scrubber.scrub()
    assert (report.checked, report.corrupt, report.unreachable, report.error) == (3, [], 0, None)
    assert report.bytes == len(a) + len(b) + len(small)
    assert report.damaged_total == 0
    [event] = await env.events("scrub.pass")
    assert event.detail["checked"] == 3 and event.detail["corrupt_blobs"] == []


async def test_flipped_byte_is_found_marked_and_refused(env: Env):
    good, bad = os.urandom(BIG), os.urandom(BIG)
    await env.put("good", good)
    vid = await env.put("bad", bad)
    stored = env.memory._blobs[sha(bad)]
    env.memory._blobs[sha(bad)] = flip(stored, len(stored) // 2)

    report = await env.scrubber.scrub()

    assert [c.content_id for c in report.corrupt] == [sha(bad)]
    [c] = report.corrupt
    assert c.versions == [{"bucket": "bkt", "key": "bad", "version_id": vid}]
    assert ("SHA-256" in c.reason) != env.encrypt  # plain: by digest; encrypted: by tag
    assert (await env.blob(sha(bad))).damaged
    assert not (await env.blob(sha(good))).damaged
    with pytest.raises(ObjectCorrupt):
        await env.get("bad")
    assert await env.get("good") == good
    [corrupt_event] = await env.events("blob.corrupt")
    assert corrupt_event.detail["content_id"] == sha(bad)
    [pass_event] = await env.events("scrub.pass")
    assert pass_event.detail["corrupt_blobs"] == [sha(bad)]

    # Idempotent: a second pass skips the damaged blob and records no second corruption.
    again = await env.scrubber.scrub()
    assert (again.corrupt, again.already_damaged, again.damaged_total, again.checked) == ([], 1, 1, 1)
    assert len(await env.events("blob.corrupt")) == 1


async def test_put_of_same_content_repairs(env: Env):
    data = os.urandom(BIG)
    await env.put("k", data)
    env.memory._blobs[sha(data)] = flip(env.memory._blobs[sha(data)], 100)
    assert len((await env.scrubber.scrub()).corrupt) == 1
    await env.put("k2", data)  # same bytes under another key repair the blob
    assert await env.get("k") == data
    report = await env.scrubber.scrub()
    assert (report.corrupt, report.already_damaged, report.checked) == ([], 0, 1)


@pytest.mark.parametrize("damage", ["truncated", "missing", "extended"])
async def test_truncated_missing_or_extended_blob(env: Env, damage: str):
    data = os.urandom(BIG)
    await env.put("k", data)
    cid = sha(data)
    if damage == "truncated":
        env.memory._blobs[cid] = env.memory._blobs[cid][:-10]
    elif damage == "missing":
        del env.memory._blobs[cid]
    else:
        env.memory._blobs[cid] += b"junk"
    report = await env.scrubber.scrub()
    if damage == "extended":
        # Reads only ever touch the recorded stored bytes, and those are intact:
        # nothing served is wrong, so nothing is marked.
        assert (report.corrupt, report.checked) == ([], 1)
        return
    assert [c.content_id for c in report.corrupt] == [cid]
    assert (await env.blob(cid)).damaged
    with pytest.raises(ObjectCorrupt):
        await env.get("k")


async def test_inline_blob_corrupted_in_catalog(env: Env):
    data = os.urandom(1000)
    await env.put("small", data, inline=True)

    def damage(c) -> None:
        stored = c.get_inline(sha(data)).data
        c._conn.execute("UPDATE inline_blobs SET data=? WHERE content_id=?", (flip(stored, 500), sha(data)))
        c._conn.commit()

    await env.catalog.run(damage)
    report = await env.scrubber.scrub()
    assert [(c.content_id, c.backend) for c in report.corrupt] == [(sha(data), INLINE_BACKEND)]
    with pytest.raises(ObjectCorrupt):
        await env.get("small")
    with pytest.raises(ObjectCorrupt):  # a copy would only add a reference to the bad bytes
        await env.service.copy_object(await env.service.get_version("bkt", "small", None), "bkt", "copy", None)
    await env.put("again", data, inline=True)  # the same bytes repair it
    assert await env.get("small") == data
    assert (await env.scrubber.scrub()).corrupt == []


async def test_unreachable_backend_is_not_damage(env: Env):
    data = os.urandom(BIG)
    await env.put("k", data)
    env.memory.down = True
    report = await env.scrubber.scrub()
    assert (report.unreachable, report.corrupt, report.checked) == (1, [], 0)
    assert report.unreachable_blobs[0]["content_id"] == sha(data)
    assert not (await env.blob(sha(data))).damaged
    assert await env.events("blob.corrupt") == []
    env.memory.down = False
    report = await env.scrubber.scrub()
    assert (report.unreachable, report.checked) == (0, 1)
    assert await env.get("k") == data


async def test_ingested_records_are_skipped(env: Env):
    await env.catalog.write(lambda c: c.add_blob("ab" * 32, "ingest", 5, "plain", 5, role=INGESTED))
    report = await env.scrubber.scrub()
    assert (report.skipped_ingested, report.checked, report.unreachable) == (1, 0, 0)


async def test_many_blobs_page_through(env: Env, monkeypatch):
    monkeypatch.setattr("meshd.scrub.PAGE", 3)
    for i in range(10):
        await env.put(f"k{i}", os.urandom(100), inline=True)
    assert (await env.scrubber.scrub()).checked == 10


async def test_deleted_while_reading_is_not_reported(env: Env):
    """A version deleted (its blob removed) between the pass reading the blob
    record and reading its bytes: the confirmation under the lock sees it gone."""
    data = os.urandom(BIG)
    vid = await env.put("k", data)

    async def delete() -> None:
        await env.service.delete_object("bkt", "k", vid)

    env.memory.before_read = delete
    report = await env.scrubber.scrub()
    assert (report.corrupt, report.vanished) == ([], 1)
    assert await env.events("blob.corrupt") == []


async def test_concurrent_requests_share_one_pass(env: Env):
    await env.put("k", os.urandom(BIG))
    r1, r2 = await asyncio.gather(env.scrubber.scrub(), env.scrubber.scrub())
    assert r1 is r2
    assert len(await env.events("scrub.pass")) == 1
    assert env.scrubber.status()["state"] == "idle"
    assert env.scrubber.status()["last"]["checked"] == 1


async def test_status_while_running(env: Env):
    await env.put("k", os.urandom(BIG))
    gate = asyncio.Event()
    env.memory.before_read = gate.wait
    task = asyncio.create_task(env.scrubber.scrub())
    for _ in range(100):
        await asyncio.sleep(0)
        if env.scrubber.status()["state"] == "running":
            break
    status = env.scrubber.status()
    assert status["state"] == "running" and status["current"]["checked"] == 0
    gate.set()
    assert (await task).checked == 1


async def test_paced_pass_sleeps_and_unpaced_does_not(env: Env):
    await env.put("k", os.urandom(BIG))
    clock = FakeClock()
    env.scrubber = Scrubber(env.service.blobs, bytes_per_second=10_000, clock=clock, sleep=clock.sleep)
    await env.scrubber.scrub()
    assert clock.slept == []
    report = await env.scrubber.scrub(paced=True)
    assert report.paced and clock.now >= BIG / 10_000


async def test_background_loop_waits_one_interval(env: Env):
    await env.put("k", os.urandom(BIG))
    clock = FakeClock()
    ran = asyncio.Event()
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) > 1:
            ran.set()
            await asyncio.Event().wait()  # park the loop after its first pass

    scrubber = Scrubber(env.service.blobs, interval_seconds=3600, clock=clock, sleep=sleep)
    await scrubber.start()
    await asyncio.wait_for(ran.wait(), 10)
    assert sleeps[:2] == [3600, 3600]
    assert scrubber.last is not None and scrubber.last.checked == 1 and scrubber.last.paced
    await scrubber.aclose()


async def test_interval_zero_never_runs(env: Env):
    await env.put("k", os.urandom(BIG))
    # With an instant sleep, a background loop would pass within a few turns of
    # the event loop: give it many, then check it never started.
    clock = FakeClock()
    scrubber = Scrubber(env.service.blobs, interval_seconds=0, clock=clock, sleep=clock.sleep)
    await scrubber.start()
    for _ in range(50):
        await asyncio.sleep(0)
    assert clock.slept == [] and scrubber.last is None
    assert scrubber.status()["state"] == "idle"
    await scrubber.aclose()


async def test_aclose_stops_a_running_pass(env: Env):
    await env.put("k", os.urandom(BIG))
    env.memory.before_read = asyncio.Event().wait  # never released
    task = asyncio.create_task(env.scrubber.scrub())
    for _ in range(100):
        await asyncio.sleep(0)
        if env.scrubber.status()["state"] == "running":
            break
    await asyncio.wait_for(env.scrubber.aclose(), 5)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert env.scrubber.status()["state"] == "idle"
