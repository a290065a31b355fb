"""Per-sender anti-replay window.

Sequence numbers are time-based, so they are unique per sender but neither dense nor delivered
in order. The guard keeps the `window` highest accepted seqs of each sender; anything at or
below the floor (the highest seq ever evicted) is rejected, because the guard can no longer
tell whether it was seen. Memory per sender is O(window) whatever the seqs look like.

Every delivered frame passes here (a million times per simulated round at 1000 nodes), so the
common case is one dict lookup and one set: a sender's min-heap, which finds what to evict, is
built only when its window first overflows, and a floor exists only once something was evicted.
"""

from __future__ import annotations

from heapq import heapify, heappop, heappushpop


class ReplayGuard:
    def __init__(self, window: int = 4096) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self._seen: dict[int, set[int]] = {}
        self._heaps: dict[int, list[int]] = {}  # senders whose window is full: heap of `seen`
        self._floors: dict[int, int] = {}  # senders that had a seq evicted: the highest one

    def check(self, sender: int, seq: int) -> bool:
        """True (and remember `seq`) if it is new for `sender`; False if seen or too old."""
        seen = self._seen.get(sender)
        if seen is None:
            seen = self._seen[sender] = set()
        elif seq in seen or (self._floors and seq <= self._floors.get(sender, -1)):
            return False
        seen.add(seq)
        if len(seen) > self.window:
            self._evict(sender, seen, seq)
        return True

    def _evict(self, sender: int, seen: set[int], seq: int) -> None:
        """Drop the smallest seq (it becomes the floor): every seq above the floor is kept."""
        heap = self._heaps.get(sender)
        if heap is None:  # first overflow: `seen` already holds `seq`
            heap = self._heaps[sender] = list(seen)
            heapify(heap)
            oldest = heappop(heap)
        else:  # full since: each new seq goes in and the smallest comes out
            oldest = heappushpop(heap, seq)
        seen.discard(oldest)
        self._floors[sender] = oldest

    def floor(self, sender: int) -> int | None:
        """Highest evicted seq of `sender` (seqs <= it are rejected), None while none was."""
        return self._floors.get(sender)

    def retained(self, sender: int) -> int:
        """How many seqs of `sender` are remembered (at most `window`)."""
        return len(self._seen.get(sender, ()))

    def forget(self, sender: int) -> None:
        """Drop a sender's state, e.g. when it leaves the membership."""
        self._seen.pop(sender, None)
        self._heaps.pop(sender, None)
        self._floors.pop(sender, None)
