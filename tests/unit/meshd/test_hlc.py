"""meshd/hlc.py: the hybrid logical clock and version ids."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshd.hlc import LOGICAL_BITS, NODE_ID_HEX, HybridClock, VersionId, hlc_millis


class FakeWall:
    """A wall clock the test sets by hand, in milliseconds."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


T0 = 1_700_000_000_000  # Nov 2023, in ms


def test_now_follows_the_wall_clock():
    wall = FakeWall(T0)
    clock = HybridClock(wall)
    first = clock.now()
    assert hlc_millis(first) == T0
    wall.ms = T0 + 5
    assert hlc_millis(clock.now()) == T0 + 5


def test_now_is_strictly_increasing_within_one_millisecond():
    clock = HybridClock(FakeWall(T0))
    stamps = [clock.now() for _ in range(1000)]
    assert stamps == sorted(set(stamps))
    assert all(hlc_millis(s) == T0 for s in stamps)  # the logical counter absorbs them


def test_wall_clock_going_backwards():
    wall = FakeWall(T0)
    clock = HybridClock(wall)
    before = clock.now()
    wall.ms = T0 - 60_000  # NTP steps the clock back a minute
    after = [clock.now() for _ in range(10)]
    assert before < after[0] < after[-1]
    assert all(hlc_millis(s) == T0 for s in after)  # time as we saw it, not the wall's
    wall.ms = T0 + 1  # once the wall catches up, it leads again
    caught_up = clock.now()
    assert caught_up > after[-1] and hlc_millis(caught_up) == T0 + 1
    assert caught_up & ((1 << LOGICAL_BITS) - 1) == 0


@given(st.lists(st.integers(0, 2**47), min_size=1, max_size=100))
@settings(max_examples=200, deadline=None)
def test_monotonic_whatever_the_wall_clock_does(walls: list[int]):
    wall = FakeWall(walls[0])
    clock = HybridClock(wall)
    last = -1
    for ms in walls:
        wall.ms = ms
        now = clock.now()
        assert now > last
        assert hlc_millis(now) >= ms  # never behind the wall clock
        last = now


def test_observe_moves_past_a_remote_timestamp():
    wall = FakeWall(T0)
    clock = HybridClock(wall)
    local = clock.now()
    remote = HybridClock(FakeWall(T0 + 10_000)).now()  # a peer whose clock runs ahead
    assert clock.observe(remote) == remote
    nxt = clock.now()
    assert nxt > remote > local
    # An older remote timestamp changes nothing.
    assert clock.observe(local) == nxt
    assert clock.now() > nxt


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 2**60)), max_size=50))
@settings(max_examples=200, deadline=None)
def test_observe_and_now_interleaved(events):
    clock = HybridClock(FakeWall(T0))
    last = 0
    for is_remote, value in events:
        if is_remote:
            seen = clock.observe(value)
            assert seen >= max(value, last)
            last = seen
        else:
            now = clock.now()
            assert now > last
            last = now


def test_default_clock_uses_real_time():
    import time

    before = time.time_ns() // 1_000_000
    stamp = HybridClock().now()
    after = time.time_ns() // 1_000_000
    assert before <= hlc_millis(stamp) <= after


def test_now_is_unique_across_threads():
    clock = HybridClock(FakeWall(T0))
    results: list[list[int]] = [[] for _ in range(4)]

    def work(out: list[int]) -> None:
        for _ in range(2000):
            out.append(clock.now())

    threads = [threading.Thread(target=work, args=(r,)) for r in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stamps = [s for r in results for s in r]
    assert len(set(stamps)) == len(stamps) == 8000
    for r in results:
        assert r == sorted(r)


# --- version ids ------------------------------------------------------------------------

HLCS = st.integers(0, 2**64 - 1)
ORIGINS = st.text("0123456789abcdef", min_size=NODE_ID_HEX, max_size=NODE_ID_HEX)
VERSION_IDS = st.builds(VersionId, HLCS, ORIGINS)


@given(st.lists(VERSION_IDS, max_size=30))
@settings(max_examples=200, deadline=None)
def test_version_id_string_order_is_hlc_then_origin_order(ids: list[VersionId]):
    by_pair = sorted(ids, key=lambda v: (v.hlc, v.origin))
    assert sorted(ids) == by_pair
    assert sorted(ids, key=str) == by_pair


@given(VERSION_IDS, VERSION_IDS)
@settings(max_examples=200, deadline=None)
def test_version_id_comparisons_agree(a: VersionId, b: VersionId):
    assert (a < b) == ((a.hlc, a.origin) < (b.hlc, b.origin)) == (str(a) < str(b))
    assert (a == b) == (str(a) == str(b))


@given(VERSION_IDS)
@settings(max_examples=200, deadline=None)
def test_version_id_round_trip(v: VersionId):
    text = str(v)
    assert len(text) == 16 + NODE_ID_HEX
    assert VersionId.parse(text) == v
    assert str(VersionId.parse(text)) == text


def test_version_id_example():
    v = VersionId(0x18BCFE5680000001, "0123456789abcdef")
    assert str(v) == "18bcfe56800000010123456789abcdef"
    assert hlc_millis(v.hlc) == 0x18BCFE568000


@pytest.mark.parametrize("text", [
    "",
    "null",
    "18bcfe5680000001",  # no origin
    "18bcfe56800000010123456789abcdef0",  # one too many
    "18BCFE56800000010123456789ABCDEF",  # upper case would print differently
    "+8bcfe56800000010123456789abcdef",  # int() accepts a sign...
    "1_bcfe56800000010123456789abcdef",  # ...and underscores
    " 8bcfe56800000010123456789abcdef",  # ...and spaces
    "18bcfe5680000001012345678 abcdef",
    "18bcfe568000000g0123456789abcdef",
    "18bcfe56800000010123456789abcdeｆ",  # a full-width letter
])
def test_bad_version_ids_are_rejected(text: str):
    with pytest.raises(ValueError):
        VersionId.parse(text)


@pytest.mark.parametrize("hlc, origin", [
    (-1, "0" * 16), (2**64, "0" * 16), (0, "node-a"), (0, "0" * 15), (0, "A" * 16),
])
def test_version_id_fields_are_checked(hlc: int, origin: str):
    with pytest.raises(ValueError):
        VersionId(hlc, origin)


def test_clock_and_version_ids_together_sort_by_time():
    wall = FakeWall(T0)
    clock = HybridClock(wall)
    ids = []
    for step in (0, 0, -5, 3, 3, 100):
        wall.ms = T0 + step
        ids.append(VersionId(clock.now(), "00000000000000aa"))
    assert [str(v) for v in ids] == sorted(str(v) for v in ids)
