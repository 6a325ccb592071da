"""backends/pacing.py: one schedule for worker threads and the event loop."""

from __future__ import annotations

import pytest

from backends.pacing import MAX_CREDIT_SECONDS, Pacer
from tests.support.fakeclock import FakeClock


def test_delay_keeps_bytes_per_second_at_the_rate():
    clock = FakeClock(50.0)
    pacer = Pacer(1000, clock=clock)
    assert pacer.delay(500) == pytest.approx(0.5)
    clock.now += 0.2  # the work took a while: less to wait
    assert pacer.delay(500) == pytest.approx(0.8)


def test_idle_time_is_not_credit_for_a_burst():
    clock = FakeClock()
    pacer = Pacer(1000, clock=clock)
    clock.now += 10 * MAX_CREDIT_SECONDS  # nothing to do for a while
    assert pacer.delay(1) == 0  # behind schedule: the schedule restarts here
    assert pacer.delay(1000) == pytest.approx(1.0)  # and is kept from now on


async def test_spent_sleeps_on_the_loop_and_unpaced_never_does():
    clock = FakeClock()
    pacer = Pacer(2000, clock=clock, sleep=clock.sleep)
    for _ in range(4):
        await pacer.spent(1000)
    assert clock.now == pytest.approx(2.0)
    await Pacer(0, clock=clock, sleep=clock.sleep).spent(10**12)
    assert clock.slept == [pytest.approx(0.5)] * 4


async def test_work_time_counts_towards_the_schedule():
    clock = FakeClock()
    pacer = Pacer(1000, clock=clock, sleep=clock.sleep)
    for _ in range(10):
        await pacer.spent(500)
        clock.now += 0.1  # the reading itself takes time too
    # 5000 bytes at 1000 B/s take at least 5 s, never much more.
    assert 5.0 <= clock.now <= 5.0 + 0.1 + 1e-9
    assert clock.slept[0] == pytest.approx(0.5)
