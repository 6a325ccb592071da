"""The change feed: every catalog change writes its event in the same
transaction; `Catalog.changes(since)` follows it, resumes where a subscriber
stopped, wakes at once for this process's commits and within the poll
interval for another process's; trimming leaves no holes and a subscriber that
fell behind it is told so; bucket changes move the bucket epoch."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from meshd.catalog import Catalog, ChangesLost
from meshd.catalog.store import SqliteCatalog
from meshd.conditions import WriteCondition
from meshd.errors import PreconditionFailed
from meshd.hlc import VersionId
from meshd.model import (
    BUCKET_CHANGES,
    BUCKET_CREATED,
    BUCKET_DELETED,
    BUCKET_UPDATED,
    CATALOG_CHANGES,
    VERSION_DELETED,
    VERSION_HASHED,
    VERSION_PUT,
    VERSION_TAGGED,
    BucketRecord,
    Tombstone,
    VersionRecord,
)
from tests.support.records import ORIGIN, stamp, version

pytestmark = pytest.mark.timeout(30)


def kinds(c: SqliteCatalog, after: int = 0) -> list[tuple[str, str | None, str | None]]:
    return [(e.kind, e.bucket, e.key) for e in c.events_after(after)]


@pytest.fixture
def cat(tmp_path: Path):
    c = SqliteCatalog(tmp_path / "catalog.db")
    yield c
    c.close()


def test_every_kind_of_change_writes_its_event(cat: SqliteCatalog) -> None:
    cat.create_bucket(BucketRecord("bkt", "o", 1))
    cat.set_bucket_cors("bkt", b"<CORSConfiguration/>")
    v = version("k")
    cat.put_version(v)
    cat.set_tags("bkt", "k", v.version_id, {"a": "b"}, stamp(3))
    unhashed = version("i", None)
    cat.put_version(unhashed)
    cat.fill_sha256("bkt", "i", unhashed.version_id, "ab" * 32)
    cat.delete_version("bkt", "k", v.version_id, 9 << 16)
    cat.delete_version("bkt", "i", unhashed.version_id, 9 << 16)
    cat.delete_bucket("bkt")
    assert kinds(cat) == [
        (BUCKET_CREATED, "bkt", None), (BUCKET_UPDATED, "bkt", None), (VERSION_PUT, "bkt", "k"),
        (VERSION_TAGGED, "bkt", "k"), (VERSION_PUT, "bkt", "i"), (VERSION_HASHED, "bkt", "i"),
        (VERSION_DELETED, "bkt", "k"), (VERSION_DELETED, "bkt", "i"), (BUCKET_DELETED, "bkt", None),
    ]
    events = cat.events_after(0)
    assert [e.seq for e in events] == sorted(e.seq for e in events) and len({e.seq for e in events}) == 9
    assert events[6].version_id == v.version_id and events[6].detail == {"hlc": 9 << 16}
    assert {e.kind for e in events} == CATALOG_CHANGES


def test_no_change_no_event(cat: SqliteCatalog) -> None:
    cat.create_bucket(BucketRecord("bkt", "o", 1))
    v = version("k")
    cat.put_version(v)
    before = cat.last_seq()
    assert not cat.merge_version(v)  # already there
    assert not cat.set_tags("bkt", "k", v.version_id, {"x": "1"}, "")  # not newer
    assert cat.delete_version("bkt", "k", "0" * 32, 1) == (None, [])  # unknown version
    assert not cat.fill_sha256("bkt", "k", v.version_id, "cd" * 32)  # has one
    assert cat.last_seq() == before


def test_a_failed_write_leaves_no_event(cat: SqliteCatalog) -> None:
    cat.create_bucket(BucketRecord("bkt", "o", 1))
    cat.put_version(version("k"))
    before = cat.last_seq()
    with pytest.raises(PreconditionFailed):
        cat.put_version(version("k"), WriteCondition(if_none_match=True))
    assert cat.last_seq() == before and kinds(cat, before) == []
    assert cat.take_changes()[-1][0] == before  # the rolled-back one was never pending


async def test_changes_follow_commits_and_resume(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    try:
        await catalog.write(lambda c: c.create_bucket(BucketRecord("bkt", "o", 1)))
        seen: list[str] = []
        got_three = asyncio.Event()

        async def follow() -> None:
            async for event in catalog.changes(0, kinds=frozenset({VERSION_PUT}), poll_seconds=60):
                seen.append(event.key)
                if len(seen) == 3:
                    got_three.set()

        task = asyncio.create_task(follow())
        for key in ("a", "b", "c"):
            await catalog.write(lambda c, key=key: c.put_version(version(key)))
        # Woken by this process's commits: well before the 60 s poll.
        await asyncio.wait_for(got_three.wait(), 10)
        task.cancel()
        assert seen == ["a", "b", "c"]
        # A subscriber that was away resumes after the last event it saw.
        last_a = [e async for e in _take(catalog.changes(0), 2)][-1].seq
        resumed = [e.key async for e in _take(catalog.changes(last_a), 2)]
        assert resumed == ["b", "c"]
    finally:
        await catalog.aclose()


async def test_changes_from_another_process_arrive_by_polling(tmp_path: Path) -> None:
    """Another process is another connection to the same file: no wake-up, only the poll."""
    catalog = Catalog(tmp_path / "c.db")
    other = SqliteCatalog(tmp_path / "c.db")
    try:
        since = await catalog.last_seq()
        stream = catalog.changes(since, poll_seconds=0.05)
        other.create_bucket(BucketRecord("elsewhere", "o", 1))
        event = await asyncio.wait_for(anext(stream), 10)
        assert (event.kind, event.bucket) == (BUCKET_CREATED, "elsewhere")
        await stream.aclose()
    finally:
        other.close()
        await catalog.aclose()


def test_trimming_keeps_a_prefix_free_of_holes(cat: SqliteCatalog) -> None:
    for i in range(10):
        cat.add_event("test", time_ms=1000 + i)
    # Old enough (time < 1005) or beyond the newest 3: the first seven go.
    assert cat.trim_events(keep=3, before_ms=1005) == 7
    assert [e.time_ms for e in cat.events_after(0)] == [1007, 1008, 1009]
    assert cat.trimmed_through() == 7
    # An old event after a young one stays until the young one goes: no holes.
    cat.add_event("test", time_ms=1)
    assert cat.trim_events(keep=100, before_ms=1005) == 0
    assert cat.trim_events(keep=100, before_ms=2000, limit=2) == 2
    assert [e.seq for e in cat.events_after(0)] == [10, 11]
    assert cat.last_seq() == 11


async def test_a_subscriber_behind_the_trimmed_events_is_told(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    try:
        for _ in range(5):
            await catalog.write(lambda c: c.add_event("test"))
        await catalog.write(lambda c: c.trim_events(keep=2, before_ms=0))
        with pytest.raises(ChangesLost) as lost:
            await anext(catalog.changes(1))
        assert (lost.value.since, lost.value.trimmed_through) == (1, 3)
        assert [e.seq async for e in _take(catalog.changes(3), 2)] == [4, 5]
    finally:
        await catalog.aclose()


async def test_bucket_changes_move_the_bucket_epoch(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    try:
        epoch = catalog.bucket_epoch
        await catalog.write(lambda c: c.create_bucket(BucketRecord("bkt", "o", 1)))
        assert catalog.bucket_epoch > epoch
        epoch = catalog.bucket_epoch
        await catalog.write(lambda c: c.put_version(version("k")))  # not a bucket change
        assert catalog.bucket_epoch == epoch
        await catalog.write(lambda c: c.set_bucket_cors("bkt", b"<x/>"))
        assert catalog.bucket_epoch > epoch
        epoch = catalog.bucket_epoch
        with pytest.raises(Exception):  # rolled back: no change, no new epoch
            await catalog.write(lambda c: c.create_bucket(BucketRecord("bkt", "o", 1)))
        assert catalog.bucket_epoch == epoch
        assert BUCKET_CREATED in BUCKET_CHANGES
    finally:
        await catalog.aclose()


async def test_merged_changes_are_in_the_feed_too(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    try:
        remote = VersionRecord("nobucket", "k", str(VersionId(5 << 16, "00000000000000c3")), 5 << 16,
                               "00000000000000c3", 1, '"e"', "aa" * 32, 5)
        await catalog.write(lambda c: c.merge_version(remote))
        await catalog.write(lambda c: c.merge_tombstone(Tombstone("nobucket", "k", remote.version_id, 6 << 16)))
        assert [(e.kind, e.version_id) async for e in _take(catalog.changes(0), 2)] == [
            (VERSION_PUT, remote.version_id), (VERSION_DELETED, remote.version_id)]
        assert ORIGIN != remote.origin
    finally:
        await catalog.aclose()


async def _take(stream, n: int):
    async for item in stream:
        yield item
        n -= 1
        if n == 0:
            break
