"""Pacing policies, sans-IO: callers pass the time in, so these run the same under any clock.

`InboundLimiter` caps what one authenticated peer may make us process (token buckets on frames
and bytes per second); `Backoff` spaces out redials of an unreachable peer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


class TokenBucket:
    """`rate` tokens per second, holding at most `capacity`.

    A request larger than the capacity passes when the bucket is full and leaves it in debt, so
    a rare large item is not refused forever while the long-run rate still holds.
    """

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError("rate and capacity must be > 0")
        self.rate, self.capacity = rate, capacity
        self._tokens, self._stamp = capacity, now

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._stamp)  # a clock step backwards must not drain tokens
        self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)
        self._stamp = now

    def can_take(self, amount: float, now: float) -> bool:
        self._refill(now)
        return self._tokens >= min(amount, self.capacity)

    def take(self, amount: float) -> None:
        self._tokens -= amount


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Per-peer inbound budget; bursts of `burst_s` seconds' worth pass at once."""

    frames_per_s: float
    bytes_per_s: float
    burst_s: float = 1.0

    def __post_init__(self) -> None:
        if min(self.frames_per_s, self.bytes_per_s, self.burst_s) <= 0:
            raise ValueError(f"rate limit values must be > 0, got {self}")


class InboundLimiter:
    """A frame passes only if both the frame bucket and the byte bucket allow it."""

    def __init__(self, limit: RateLimit, now: float) -> None:
        self._frames = TokenBucket(limit.frames_per_s, limit.frames_per_s * limit.burst_s, now)
        self._bytes = TokenBucket(limit.bytes_per_s, limit.bytes_per_s * limit.burst_s, now)

    def allow(self, size: int, now: float) -> bool:
        if not (self._frames.can_take(1, now) and self._bytes.can_take(size, now)):
            return False
        self._frames.take(1)
        self._bytes.take(size)
        return True


class Backoff:
    """Capped exponential backoff with "equal jitter": attempt k waits a uniform draw from
    [d/2, d] with d = min(cap, base * 2**k), so peers that lost a node together do not redial
    it in lockstep, yet every wait is at least half the nominal one."""

    def __init__(self, base: float, cap: float, rng: random.Random) -> None:
        if not 0 < base <= cap:
            raise ValueError(f"backoff needs 0 < base <= cap, got base={base}, cap={cap}")
        self.base, self.cap, self.rng = base, cap, rng
        self.attempt = 0

    def next_delay(self) -> float:
        nominal = min(self.cap, self.base * 2.0 ** min(self.attempt, 62))
        self.attempt += 1
        return nominal * (0.5 + 0.5 * self.rng.random())

    def reset(self) -> None:
        self.attempt = 0
