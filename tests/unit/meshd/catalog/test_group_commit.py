"""Catalog.write (group commit) and Catalog.read (second connection), on a real
SQLite file: concurrent writes share transactions, a failing one rolls back
alone, every write is durable once it returns, and reads see it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from meshd.catalog import Catalog
from meshd.model import BucketRecord, VersionRecord
from meshd.catalog.store import SqliteCatalog
from meshd.errors import BucketNotFound


class Boom(Exception):
    pass


def _half_then_fail(c: SqliteCatalog) -> None:
    c.set_meta("partial", "written before the failure")
    raise Boom()


def _version(bucket: str, key: str, n: int) -> VersionRecord:
    return VersionRecord(
        bucket=bucket, key=key, version_id=f"{n:020d}-0123456789abcdef", hlc=n, origin="0123456789abcdef",
        size=1, etag='"x"', sha256=f"{n:064x}", last_modified_ms=n,
    )


@pytest.fixture
def catalog(tmp_path: Path):
    cat = Catalog(tmp_path / "catalog.db")
    yield cat
    asyncio.run(cat.aclose())


def test_concurrent_writes_all_commit_and_a_failing_one_rolls_back_alone(catalog: Catalog, tmp_path: Path) -> None:
    async def go() -> list:
        writes = [catalog.write(lambda c, i=i: c.set_meta(f"k{i}", str(i))) for i in range(50)]
        writes.insert(25, catalog.write(_half_then_fail))
        return await asyncio.gather(*writes, return_exceptions=True)

    results = asyncio.run(go())
    assert [type(r) for r in results].count(Boom) == 1
    assert all(r is None for r in results if not isinstance(r, Boom))
    # A separate connection: what it sees is committed.
    other = SqliteCatalog(tmp_path / "catalog.db")
    try:
        assert [other.get_meta(f"k{i}") for i in range(50)] == [str(i) for i in range(50)]
        assert other.get_meta("partial") is None
    finally:
        other.close()


def test_read_sees_every_returned_write(catalog: Catalog) -> None:
    async def go() -> None:
        await catalog.run(lambda c: c.create_bucket(BucketRecord("bkt", "me", 1)))
        assert (await catalog.read(lambda c: c.get_bucket("bkt"))).owner == "me"

        async def put_then_read(n: int) -> None:
            await catalog.write(lambda c: c.put_version(_version("bkt", f"key{n}", n)))
            got = await catalog.read(lambda c: c.get_version("bkt", f"key{n}", None))
            assert got is not None and got.sha256 == f"{n:064x}"

        await asyncio.gather(*(put_then_read(n) for n in range(1, 40)))

    asyncio.run(go())


def test_domain_errors_pass_through_write_and_read(catalog: Catalog) -> None:
    async def go() -> None:
        with pytest.raises(BucketNotFound):
            await catalog.write(lambda c: c.put_version(_version("nope", "k", 1)))
        with pytest.raises(BucketNotFound):
            await catalog.read(lambda c: c.get_bucket("nope"))
        # The writer is still usable afterwards.
        await catalog.write(lambda c: c.set_meta("after", "ok"))
        assert await catalog.read(lambda c: c.get_meta("after")) == "ok"

    asyncio.run(go())


def test_a_cancelled_waiter_does_not_disturb_the_batch(catalog: Catalog) -> None:
    async def go() -> None:
        first = asyncio.ensure_future(catalog.write(lambda c: c.set_meta("a", "1")))
        second = asyncio.ensure_future(catalog.write(lambda c: c.set_meta("b", "2")))
        await asyncio.sleep(0)
        second.cancel()
        await first
        await catalog.write(lambda c: c.set_meta("c", "3"))  # a write after the cancelled one still completes
        assert await catalog.read(lambda c: c.get_meta("a")) == "1"
        assert await catalog.read(lambda c: c.get_meta("c")) == "3"

    asyncio.run(go())
