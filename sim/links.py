"""Per-directed-link model: serialization queue, propagation, jitter, loss, duplicates, reorder.

Each directed link keeps one additive fault state: overlapping degradations (a slow-network fault
and a flaky-network fault, say) add up and each is removed by its own token, so one fault never
overwrites another (the Chaos Mesh pitfall of separate loss and delay rules). Pure Python, no
SimPy: the driver asks a link when a frame arrives and schedules that itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .topology import Routes

__all__ = ["Degradation", "Draws", "Link", "LinkParams", "Network"]

JitterDist = Literal["uniform", "normal", "exponential"]
_JITTER_DISTS = ("uniform", "normal", "exponential")


@dataclass(frozen=True)
class LinkParams:
    """Behaviour shared by the links of a network; times in seconds, rates in [0, 1]."""

    latency: float = 0.01  # base one-way latency for links whose topology edge gives none
    jitter: float = 0.0  # scale of the extra delay, see `jitter_dist`
    jitter_dist: JitterDist = "uniform"  # uniform [0, j], |normal(0, j)|, exponential(mean j)
    bandwidth: float | None = None  # bits per second; None = infinite (no serialization delay)
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0  # probability that a copy is held back by `reorder_delay`
    reorder_delay: float = 0.0

    def __post_init__(self) -> None:
        for name in ("latency", "jitter", "reorder_delay"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"LinkParams.{name} must be a finite number >= 0 (got {value})")
        for name in ("loss", "duplicate", "reorder"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"LinkParams.{name} must be in [0, 1] (got {value})")
        if self.jitter_dist not in _JITTER_DISTS:
            raise ValueError(
                f"LinkParams.jitter_dist must be one of {', '.join(_JITTER_DISTS)} "
                f"(got {self.jitter_dist!r})"
            )
        if self.bandwidth is not None and not (self.bandwidth > 0 and self.bandwidth < math.inf):
            raise ValueError(
                f"LinkParams.bandwidth must be > 0 bits/s or None (got {self.bandwidth})"
            )


class Degradation:
    """One added latency/loss; also the token that removes it (compared by identity).

    An object rather than a counter so tokens need no global state and the same token can be
    attached to many links by a Network.
    """

    __slots__ = ("extra_latency", "extra_loss")

    def __init__(self, extra_latency: float = 0.0, extra_loss: float = 0.0) -> None:
        if not math.isfinite(extra_latency) or extra_latency < 0:
            raise ValueError(f"extra_latency must be finite and >= 0 (got {extra_latency})")
        if not 0.0 <= extra_loss <= 1.0:
            raise ValueError(f"extra_loss must be in [0, 1] (got {extra_loss})")
        self.extra_latency = float(extra_latency)
        self.extra_loss = float(extra_loss)

    def __repr__(self) -> str:
        return f"Degradation(extra_latency={self.extra_latency}, extra_loss={self.extra_loss})"


class Draws:
    """Buffered scalar draws from one numpy Generator, in blocks.

    A scalar numpy draw costs about as much as the rest of a hop's link model; drawing blocks
    and handing out Python floats keeps the stream a pure function of the seed (each kind of
    draw has its own block, refilled from the generator in the order the run consumes them).
    """

    __slots__ = ("exponential", "normal", "uniform")

    def __init__(self, rng: np.random.Generator, block: int = 4096) -> None:
        self.uniform: Callable[[], float] = _blocks(lambda: rng.random(block)).__next__
        self.normal: Callable[[], float] = _blocks(lambda: rng.standard_normal(block)).__next__
        self.exponential: Callable[[], float] = _blocks(
            lambda: rng.standard_exponential(block)).__next__


def _blocks(draw: Callable[[], np.ndarray]) -> Iterator[float]:
    while True:
        yield from draw().tolist()


class Link:
    """Directed link u -> v.

    `transmit` draws a loss sample whenever the loss probability is non-zero, and duplicate,
    jitter and reorder samples whenever those params are non-zero (for both copies), so whether
    a frame is lost or duplicated never shifts the random stream of later frames.
    """

    __slots__ = (
        "_degradations",
        "_dup",
        "_jitter",
        "_jitter_kind",
        "_loss",
        "_reorder",
        "_reorder_delay",
        "_secs_per_byte",
        "base_latency",
        "busy_until",
        "bytes_sent",
        "extra_latency",
        "extra_loss",
        "frames_lost",
        "frames_sent",
        "latency",
        "loss_probability",
        "params",
        "u",
        "v",
    )

    def __init__(
        self, u: int, v: int, params: LinkParams, base_latency: float | None = None
    ) -> None:
        self.u = u
        self.v = v
        self.params = params
        latency = params.latency if base_latency is None else float(base_latency)
        if not math.isfinite(latency) or latency < 0:
            raise ValueError(f"link {u}->{v}: base latency must be finite and >= 0 ({latency})")
        self.base_latency = latency
        self.busy_until = 0.0
        self.extra_latency = 0.0
        self.extra_loss = 0.0
        self.latency = latency  # base + extra, kept summed for transmit()
        self.loss_probability = min(1.0, params.loss)
        self.frames_sent = 0
        self.frames_lost = 0
        self.bytes_sent = 0
        self._degradations: dict[Degradation, None] = {}  # insertion-ordered set
        # Unpacked once: transmit() is the simulator's hottest call.
        self._secs_per_byte = 0.0 if params.bandwidth is None else 8.0 / params.bandwidth
        self._loss = params.loss
        self._dup = params.duplicate
        self._jitter = params.jitter
        self._jitter_kind = _JITTER_DISTS.index(params.jitter_dist)
        self._reorder = params.reorder
        self._reorder_delay = params.reorder_delay

    def __repr__(self) -> str:
        return (
            f"Link({self.u}->{self.v}, base_latency={self.base_latency}, "
            f"extra_latency={self.extra_latency}, extra_loss={self.extra_loss})"
        )

    def add_degradation(self, extra_latency: float = 0.0, extra_loss: float = 0.0) -> Degradation:
        """Add latency (s) and loss probability on top of the current state; returns the token."""
        token = Degradation(extra_latency, extra_loss)
        self.attach(token)
        return token

    def attach(self, token: Degradation) -> None:
        """Apply an existing degradation (shared by several links) to this link too."""
        if token in self._degradations:
            raise ValueError(f"link {self.u}->{self.v}: {token!r} is already applied")
        self._degradations[token] = None
        self._resum()

    def remove_degradation(self, token: Degradation) -> None:
        """Undo one degradation; KeyError if the token is not active on this link."""
        try:
            del self._degradations[token]
        except KeyError:
            raise KeyError(f"link {self.u}->{self.v}: {token!r} is not applied") from None
        self._resum()

    def has_degradation(self, token: Degradation) -> bool:
        return token in self._degradations

    def _resum(self) -> None:
        # Re-summed rather than subtracted so removing every fault restores exactly 0.0.
        self.extra_latency = math.fsum(d.extra_latency for d in self._degradations)
        self.extra_loss = min(1.0, math.fsum(d.extra_loss for d in self._degradations))
        self.latency = self.base_latency + self.extra_latency
        self.loss_probability = min(1.0, self._loss + self.extra_loss)

    def _draw_delay(self, draws: Draws) -> float:
        delay = 0.0
        if self._jitter > 0.0:
            kind = self._jitter_kind
            if kind == 0:
                delay = draws.uniform() * self._jitter
            elif kind == 1:
                delay = abs(draws.normal()) * self._jitter
            else:
                delay = draws.exponential() * self._jitter
        if self._reorder > 0.0 and draws.uniform() < self._reorder:
            delay += self._reorder_delay
        return delay

    def transmit(self, now: float, size_bytes: int, draws: Draws) -> tuple[float, ...]:
        """Send one frame at time `now`; return its arrival time(s) at v.

        () if lost, (t,) normally, (t, t_dup) if duplicated (the copy has its own jitter and
        reorder draw, so it may arrive first). The frame queues behind earlier frames for
        size_bytes * 8 / bandwidth seconds of transmission; lost frames still use the link.
        """
        busy = self.busy_until
        done = (now if now > busy else busy) + size_bytes * self._secs_per_byte
        self.busy_until = done
        self.frames_sent += 1
        self.bytes_sent += size_bytes

        p_loss = self.loss_probability
        lost = p_loss > 0.0 and draws.uniform() < p_loss
        dup = self._dup
        duplicated = dup > 0.0 and draws.uniform() < dup
        base = done + self.latency
        first = base + self._draw_delay(draws) if self._jitter or self._reorder else base
        second = base + self._draw_delay(draws) if dup > 0.0 else first
        if lost:
            self.frames_lost += 1
            return ()
        if duplicated:
            return (first, second)
        return (first,)


class Network:
    """All directed links of a topology, created on first use, plus fault degradations.

    Links are lazy because a complete graph at n = 1000 has a million directed links and most
    runs touch few of them; degradations on all links are remembered and applied to links
    created later. A token from `degrade` is accepted by `restore` exactly once.
    """

    __slots__ = ("_active", "_links", "params", "routes")

    def __init__(self, routes: Routes, params: LinkParams | None = None) -> None:
        self.routes = routes
        self.params = LinkParams() if params is None else params
        self._links: dict[tuple[int, int], Link] = {}
        # Active degradations -> the links they were applied to (None = all, current and future).
        self._active: dict[Degradation, list[Link] | None] = {}

    def link(self, u: int, v: int) -> Link:
        """The directed link u -> v; TopologyError if u and v are not adjacent."""
        try:
            return self._links[(u, v)]
        except KeyError:
            pass
        link = Link(u, v, self.params, self.routes.edge_latency(u, v))
        for token, targets in self._active.items():
            if targets is None:
                link.attach(token)
        self._links[(u, v)] = link
        return link

    def links(self) -> list[Link]:
        """The links created so far."""
        return list(self._links.values())

    def edges_between(self, a: Iterable[int], b: Iterable[int]) -> list[tuple[int, int]]:
        """Directed links from a node in `a` to a node in `b` (a partition's cut, one way)."""
        targets = set(b)
        return [(u, v) for u in sorted(set(a)) for v in self.routes.neighbors(u) if v in targets]

    def degrade(
        self,
        pairs: Iterable[tuple[int, int]] | None,
        extra_latency: float = 0.0,
        extra_loss: float = 0.0,
    ) -> Degradation:
        """Add latency/loss to the directed links `pairs` (None = every link); returns a token.

        Everything is validated before any link changes, so a bad pair leaves the state as is.
        """
        token = Degradation(extra_latency, extra_loss)
        if pairs is None:
            self._active[token] = None
            for link in self._links.values():
                link.attach(token)
            return token
        targets = [self.link(u, v) for u, v in dict.fromkeys(pairs)]
        for link in targets:
            link.attach(token)
        self._active[token] = targets
        return token

    def restore(self, token: Degradation) -> None:
        """Undo the degradation `token`; KeyError if it is unknown or already restored."""
        try:
            targets = self._active.pop(token)
        except KeyError:
            raise KeyError(f"no active degradation {token!r}") from None
        for link in self._links.values() if targets is None else targets:
            link.remove_degradation(token)
