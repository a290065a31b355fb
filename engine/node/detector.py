"""The failure detector: which members a node believes are down, and how long a leader waits.

A crashed member (within f) used to cost every round the whole gather timeout (the leader
waited for its gradient) and each of its turns as leader a view timeout. Two rules fix that:

- **Suspicion** (local, a liveness hint only). A member is suspected when the driver's
  transport reports its link down (`PeerReachability`), or when a round we committed had no
  gradient of it by then ("silent"). It is cleared when the member is heard again: any
  authenticated frame clears a link suspicion, its gradient clears a silence one. A leader
  whose missing gradients all belong to suspected members proposes at once with the quorum it
  holds; otherwise it waits for the members it still expects, each until the arrival time it
  has shown in past rounds (a smoothed mean plus four deviations, doubled: RFC 6298's shape,
  with room for a slow round), never less than `patience_floor` (a real node's, so that a
  load spike is not taken for a failure) and never past `round_timeout`.
- **Leader eligibility** (committed, the same at every honest node): the leader of a round is
  drawn from the members whose gradients the previous committed round's set named
  (`Node.leader`). A member that crashed drops out of the set of the first round that commits
  without it, so its later turns are never reached: its leader turns cost one view timeout in
  total (the round it crashed in, if it led it). Once its gradient makes a set again it leads
  again. The set holds at least n - f members, so at least f + 1 honest ones can lead.

Neither rule touches safety: a set of at least `min_set` gradients was always a valid proposal,
and who leads a round is a pure function of committed data. Time is the driver's `now`
(simulated time in the simulator), so a simulated run stays a pure function of its seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from phalanx.engine.events import Suspicion

if TYPE_CHECKING:
    from collections.abc import Iterable

    from phalanx.engine.node.node import Node

GAIN, DEV_GAIN = 1 / 8, 1 / 4  # RFC 6298's smoothing gains
LINK_DOWN, SILENT = "link down", "silent"


@dataclass(slots=True)
class Arrivals:
    """When a member's gradient arrives, in seconds after we started the round."""

    mean: float = 0.0
    dev: float = 0.0
    samples: int = 0

    def add(self, seconds: float) -> None:
        if self.samples == 0:
            self.mean, self.dev = seconds, seconds / 2
        else:
            self.dev += DEV_GAIN * (abs(seconds - self.mean) - self.dev)
            self.mean += GAIN * (seconds - self.mean)
        self.samples += 1

    def patience(self) -> float:
        return 2 * (self.mean + 4 * self.dev)


class FailureDetector:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.enabled = node.config.detect_failures
        self.suspected: dict[int, str] = {}  # member -> why we suspect it
        self.arrivals: dict[int, Arrivals] = {}
        self.round_start = 0.0

    # ---- what the node tells it ------------------------------------------------------------

    def link(self, peer: int, reachable: bool) -> None:
        if not reachable:
            self._suspect(peer, LINK_DOWN)
        elif self.suspected.get(peer) == LINK_DOWN:
            self._clear(peer, "link up")

    def heard(self, peer: int) -> None:
        """An authenticated frame from `peer`: its link works."""
        if self.suspected.get(peer) == LINK_DOWN:
            self._clear(peer, "heard")

    def gradient(self, peer: int, current: bool) -> None:
        """`peer`'s gradient arrived (of the round we are in, if `current`)."""
        if peer in self.suspected:
            self._clear(peer, "heard")
        if current:
            self.arrivals.setdefault(peer, Arrivals()).add(self.node.now - self.round_start)

    def round_started(self) -> None:
        self.round_start = self.node.now

    def round_committed(self, round: int, held: Iterable[int]) -> None:
        """Members of `round` whose gradient we never got by its commit fell silent."""
        node = self.node
        missing = set(node.membership.members) - set(held) - {node.id}
        for peer in sorted(missing):
            if peer not in node.accountability.excluded and peer not in self.suspected:
                self._suspect(peer, SILENT)

    # ---- what the leader asks ----------------------------------------------------------------

    def awaited(self, missing: Iterable[int]) -> list[int]:
        """The missing members a leader still waits for."""
        if not self.enabled:
            return list(missing)
        return [p for p in missing if p not in self.suspected]

    def wait_until(self, awaited: Iterable[int]) -> float:
        """When a leader holding a quorum stops waiting for `awaited` (absolute time)."""
        timeout = self.node.config.round_timeout
        if not self.enabled:
            return self.round_start + timeout
        longest = 0.0
        for peer in awaited:
            seen = self.arrivals.get(peer)
            if seen is None:
                return self.round_start + timeout  # nothing to go by yet
            longest = max(longest, seen.patience())
        return self.round_start + min(timeout, max(longest, self.node.config.patience_floor))

    # ---- transitions ---------------------------------------------------------------------------

    def _suspect(self, peer: int, reason: str) -> None:
        if not self.enabled or peer == self.node.id or self.suspected.get(peer) == reason:
            return
        self.suspected[peer] = reason
        self.node.emit(Suspicion(self.node.id, peer, self.node.round, True, reason))

    def _clear(self, peer: int, reason: str) -> None:
        del self.suspected[peer]
        self.node.emit(Suspicion(self.node.id, peer, self.node.round, False, reason))
