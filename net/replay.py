"""Per-sender anti-replay window.

Sequence numbers are time-based, so they are unique per sender but neither dense nor delivered
in order. The guard keeps the `window` highest accepted seqs of each sender; anything at or
below the floor (the highest seq ever evicted) is rejected, because the guard can no longer
tell whether it was seen. Memory per sender is O(window) whatever the seqs look like.
"""

from __future__ import annotations

from heapq import heappop, heappush


class _Window:
    __slots__ = ("floor", "heap", "seen")

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.heap: list[int] = []  # min-heap of `seen`, to find what to evict
        self.floor = -1  # sequence numbers are u64: -1 means nothing was evicted yet


class ReplayGuard:
    def __init__(self, window: int = 4096) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self._senders: dict[int, _Window] = {}

    def check(self, sender: int, seq: int) -> bool:
        """True (and remember `seq`) if it is new for `sender`; False if seen or too old."""
        w = self._senders.get(sender)
        if w is None:
            w = self._senders[sender] = _Window()
        elif seq <= w.floor or seq in w.seen:
            return False
        w.seen.add(seq)
        heap = w.heap
        heappush(heap, seq)
        if len(heap) > self.window:
            # Evicting the smallest keeps the floor monotone: every seq above it is retained.
            oldest = heappop(heap)
            w.seen.discard(oldest)
            w.floor = oldest
        return True

    def floor(self, sender: int) -> int | None:
        """Highest evicted seq of `sender` (seqs <= it are rejected), None while none was."""
        w = self._senders.get(sender)
        return None if w is None or w.floor < 0 else w.floor

    def retained(self, sender: int) -> int:
        """How many seqs of `sender` are remembered (at most `window`)."""
        w = self._senders.get(sender)
        return 0 if w is None else len(w.seen)

    def forget(self, sender: int) -> None:
        """Drop a sender's state, e.g. when it leaves the membership."""
        self._senders.pop(sender, None)
