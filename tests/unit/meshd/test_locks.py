"""meshd/locks.py: KeyedLock, one asyncio lock per key, dropped when idle."""

from __future__ import annotations

import asyncio

import pytest

from meshd.locks import KeyedLock

pytestmark = pytest.mark.timeout(30)


async def test_same_key_is_exclusive():
    locks = KeyedLock()
    inside = 0
    most = 0
    order: list[int] = []

    async def worker(i: int) -> None:
        nonlocal inside, most
        async with locks.hold("k"):
            inside += 1
            most = max(most, inside)
            for _ in range(3):
                await asyncio.sleep(0)  # give the others every chance to barge in
            order.append(i)
            inside -= 1

    await asyncio.gather(*(worker(i) for i in range(10)))
    assert most == 1
    assert order == list(range(10))  # asyncio.Lock is fair: first come, first served
    assert len(locks) == 0


async def test_different_keys_do_not_block_each_other():
    locks = KeyedLock()
    release_a = asyncio.Event()
    a_inside = asyncio.Event()

    async def hold_a() -> None:
        async with locks.hold("a"):
            a_inside.set()
            await release_a.wait()

    task = asyncio.create_task(hold_a())
    await a_inside.wait()
    async with locks.hold("b"):  # would hang (and time out) if "b" waited for "a"
        assert len(locks) == 2
    release_a.set()
    await task
    assert len(locks) == 0


async def test_lock_is_released_when_the_body_raises():
    locks = KeyedLock()
    with pytest.raises(RuntimeError):
        async with locks.hold("k"):
            raise RuntimeError("boom")
    assert len(locks) == 0
    async with locks.hold("k"):
        pass


async def test_cancelled_waiter_leaves_no_trace():
    locks = KeyedLock()
    release = asyncio.Event()
    holding = asyncio.Event()

    async def holder() -> None:
        async with locks.hold("k"):
            holding.set()
            await release.wait()

    async def waiter() -> None:
        async with locks.hold("k"):
            raise AssertionError("a cancelled waiter must never get the lock")  # pragma: no cover

    h = asyncio.create_task(holder())
    await holding.wait()
    w = asyncio.create_task(waiter())
    await asyncio.sleep(0)  # w is now queued on the lock
    w.cancel()
    with pytest.raises(asyncio.CancelledError):
        await w
    release.set()
    await h
    assert len(locks) == 0
    async with locks.hold("k"):  # still usable
        assert len(locks) == 1


async def test_waiter_gets_the_lock_after_the_holder():
    locks = KeyedLock()
    events: list[str] = []
    release = asyncio.Event()
    holding = asyncio.Event()

    async def first() -> None:
        async with locks.hold("k"):
            holding.set()
            await release.wait()
            events.append("first done")

    async def second() -> None:
        async with locks.hold("k"):
            events.append("second in")

    t1 = asyncio.create_task(first())
    await holding.wait()
    t2 = asyncio.create_task(second())
    await asyncio.sleep(0)
    assert events == [] and len(locks) == 1
    release.set()
    await asyncio.gather(t1, t2)
    assert events == ["first done", "second in"]
    assert len(locks) == 0
