"""Rate limits and login throttling, in bounded memory.

Token buckets keyed by who asks (an account, a client address): each key refills `rate`
tokens a second up to `burst`. Keys live in an LRU of at most `max_keys` entries, so a flood
of made-up addresses costs a fixed amount of memory (an evicted key starts again with a full
bucket: the cost of the bound, paid only under such a flood).

Logins: past a few free failures (3 for a username, 10 from an address: typos, a shared
office address), each failure doubles the wait before the next try (1 s, 2 s, 4 s, ... up to
15 min), counted from the failure; a success clears the username's count. An attacker
guessing one account's password is slowed to a crawl, and spreading guesses over accounts is
slowed by the address's own count.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

__all__ = ["LoginThrottle", "RateLimiter", "RateLimits"]


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Requests a second and burst per account and per client address."""

    account_rate: float = 20.0
    account_burst: float = 60.0
    address_rate: float = 50.0
    address_burst: float = 200.0
    max_keys: int = 100_000

    def __post_init__(self) -> None:
        for name in ("account_rate", "account_burst", "address_rate", "address_burst"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        if self.max_keys < 1:
            raise ValueError("max_keys must be >= 1")


class _Buckets:
    def __init__(self, rate: float, burst: float, max_keys: int,
                 clock: Callable[[], float]) -> None:
        self.rate, self.burst, self.max_keys, self.clock = rate, burst, max_keys, clock
        self._held: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()

    def take(self, key: Hashable) -> float:
        """0 when a request may go now (a token is taken), else seconds until it may."""
        now = self.clock()
        tokens, then = self._held.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._held[key] = (tokens, now)
        if len(self._held) > self.max_keys:
            self._held.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._held)


class RateLimiter:
    """Both buckets: a request spends a token of its address and, when signed in, of its
    account. Called on the event loop only (no lock)."""

    def __init__(self, limits: RateLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.accounts = _Buckets(limits.account_rate, limits.account_burst, limits.max_keys, clock)
        self.addresses = _Buckets(limits.address_rate, limits.address_burst, limits.max_keys,
                                  clock)
        self.refused = 0

    def check_address(self, address: str) -> float:
        return self._count(self.addresses.take(address))

    def check_account(self, account_id: int) -> float:
        return self._count(self.accounts.take(account_id))

    def _count(self, wait: float) -> float:
        if wait:
            self.refused += 1
        return wait


class LoginThrottle:
    """Exponential back-off after failed logins, per username and per address."""

    FIRST_WAIT = 1.0
    MOST_WAIT = 15 * 60.0
    FREE: Final = MappingProxyType({"user": 3, "addr": 10})  # failures before any wait

    def __init__(self, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_keys = max_keys
        self.clock = clock
        self._failures: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()

    def wait(self, username: str, address: str) -> float:
        """Seconds before a login for `username` from `address` may be tried (0: now)."""
        now = self.clock()
        return max(self._until(("user", username), now), self._until(("addr", address), now))

    def _until(self, key: tuple[str, str], now: float) -> float:
        held = self._failures.get(key)
        if held is None:
            return 0.0
        failures, last = held
        over = failures - self.FREE[key[0]]
        if over < 0:
            return 0.0
        pause = min(self.MOST_WAIT, self.FIRST_WAIT * 2 ** over)
        return max(0.0, last + pause - now)

    def failed(self, username: str, address: str) -> None:
        now = self.clock()
        for key in (("user", username), ("addr", address)):
            failures, _ = self._failures.pop(key, (0, now))
            self._failures[key] = (min(failures + 1, 64), now)
            if len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)

    def succeeded(self, username: str) -> None:
        self._failures.pop(("user", username), None)
