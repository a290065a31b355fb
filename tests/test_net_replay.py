"""Anti-replay window."""

from __future__ import annotations

import heapq
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.net.replay import ReplayGuard


def test_duplicates_rejected_per_sender() -> None:
    guard = ReplayGuard()
    assert guard.check(1, 10)
    assert not guard.check(1, 10)
    assert guard.check(2, 10)  # senders are independent
    assert guard.check(1, 9)  # older but never seen, and no floor yet


def test_reordering_within_window_accepted() -> None:
    guard = ReplayGuard(window=64)
    seqs = [1_000_000 + 7 * i for i in range(64)]
    random.Random(0).shuffle(seqs)
    assert all(guard.check(0, s) for s in seqs)
    assert not any(guard.check(0, s) for s in seqs)


def test_below_floor_rejected() -> None:
    guard = ReplayGuard(window=4)
    for s in (10, 20, 30, 40, 50):
        assert guard.check(7, s)
    assert guard.floor(7) == 10 and guard.retained(7) == 4
    assert not guard.check(7, 5)  # never seen, but below the floor: cannot tell
    assert not guard.check(7, 10)
    assert guard.check(7, 15)  # above the floor and new: accepted, then evicted at once
    assert guard.floor(7) == 15
    assert not guard.check(7, 15)
    assert guard.check(7, 2**63)  # time-based seqs may jump far ahead
    guard.forget(7)
    assert guard.floor(7) is None and guard.check(7, 5)
    with pytest.raises(ValueError):
        ReplayGuard(window=0)


def test_memory_bounded_after_100k_seqs() -> None:
    guard = ReplayGuard(window=4096)
    rng = random.Random(1)
    seq = 0
    for _ in range(100_000):
        seq += rng.randint(1, 10**6)
        assert guard.check(3, seq)
    assert guard.retained(3) == 4096
    assert guard.floor(3) is not None and not guard.check(3, guard.floor(3))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 60), max_size=200), st.integers(1, 16))
def test_never_accepts_twice_and_always_accepts_new_maximum(seqs: list[int], window: int) -> None:
    guard = ReplayGuard(window=window)
    accepted: set[int] = set()
    top = -1
    for s in seqs:
        ok = guard.check(0, s)
        if ok:
            assert s not in accepted
            accepted.add(s)
        if s > top:
            assert ok  # a fresh highest seq is never lost
            top = s
        assert guard.retained(0) <= window


class _ReferenceGuard:
    """The plain definition: every accepted seq on a min-heap, the smallest evicted past
    `window`. The guard must decide exactly as this does."""

    def __init__(self, window: int) -> None:
        self.window, self.seen, self.heap, self.floor = window, set(), [], -1

    def check(self, seq: int) -> bool:
        if seq <= self.floor or seq in self.seen:
            return False
        self.seen.add(seq)
        heapq.heappush(self.heap, seq)
        if len(self.heap) > self.window:
            self.floor = heapq.heappop(self.heap)
            self.seen.discard(self.floor)
        return True


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 80)), max_size=300),
       st.integers(1, 12))
def test_decides_exactly_as_the_plain_heap_definition(
        stream: list[tuple[int, int]], window: int) -> None:
    guard = ReplayGuard(window=window)
    reference = {s: _ReferenceGuard(window) for s in range(3)}
    for sender, seq in stream:
        assert guard.check(sender, seq) == reference[sender].check(seq)
        ref = reference[sender]
        assert guard.floor(sender) == (None if ref.floor < 0 else ref.floor)
        assert guard.retained(sender) == len(ref.seen)
