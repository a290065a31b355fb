"""A scenario's network emulated inside the real transport: topology, latency, jitter,
bandwidth and loss on real sockets.

`EmulatedNetwork` sits between a node and its `TcpTransport` and mirrors the simulator's
network (sim/links.py, sim/topology.py), so a `--real` run meets the links its scenario names:

- **topology**: the transport holds connections to the node's topology neighbours only (its
  keyring and addresses are cut down to them: it neither dials nor accepts anyone else). A
  frame for a non-neighbour goes hop by hop along the static shortest-latency route the
  simulator uses (`next_hop`), each relay forwarding it over its own emulated link, as the
  simulator's unicasts travel. A broadcast travels once over each edge of the sender's
  shortest-path tree, every node on it delivering the frame and forwarding it to its children
  in that tree (`children[root]`), as the simulator's broadcasts do (`SimWorld._relay`).
- **each directed link** to a neighbour: a frame queues behind earlier frames for
  size x 8 / bandwidth seconds, then takes the link's latency plus a jitter draw (uniform,
  |normal| or exponential, as the scenario says), may be held back by the reorder delay, is
  duplicated with the duplicate probability, and is dropped with the loss probability, as in
  `sim.links.Link.transmit` (a lost frame still used the link). Only then is it handed to
  TCP, whose own delay on loopback (tens of microseconds) comes on top. Loss is emulated: TCP
  is reliable, and the simulator drops a lost frame without retransmitting it; so does this
  layer.
- draws come from one seeded `random.Random` per directed link (seed, u, v), so what a link
  does to its k-th frame is the same in every run; when frames are sent still depends on the
  wall clock.

On the wire every frame carries its final destination (`u32`), or BROADCAST and the sender
(`u32` each), so a relay knows where to forward it; PROBE and ECHO records (the sender and a
stamp of its clock) measure each neighbour's round trip over the emulated link, both ways,
so `link_conditions` reports the emulated latency as the transport's probes report loopback's
(bandwidth stays the transport's receiver-side figure: it times records on the socket, after
the emulated queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import statistics
import struct
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["EmulatedLink", "EmulatedNetwork", "LinkSpec"]

DEST = struct.Struct(">I")
ROOT = struct.Struct(">II")  # BROADCAST, the broadcasting node
BROADCAST, PROBE, ECHO = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD
STAMP = struct.Struct(">IId")  # PROBE or ECHO, the prober, its loop clock
PROBES_KEPT = 4  # per neighbour, probes awaiting their echo
RTT_GAIN = 1 / 8  # smoothed like TCP's SRTT, as net/tcp.py does
JITTER_DISTS = ("uniform", "normal", "exponential")


@dataclass(frozen=True)
class LinkSpec:
    """One directed link's behaviour; seconds, bits/s (None: unlimited), probabilities."""

    latency: float
    jitter: float = 0.0
    jitter_dist: str = "uniform"
    bandwidth: float | None = None
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.0

    def __post_init__(self) -> None:
        for name in ("latency", "jitter", "reorder_delay"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"link {name} must be a finite number >= 0 (got {value})")
        for name in ("loss", "duplicate", "reorder"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"link {name} must be in [0, 1] (got {getattr(self, name)})")
        if self.jitter_dist not in JITTER_DISTS:
            raise ValueError(f"link jitter_dist must be one of {', '.join(JITTER_DISTS)}")
        if self.bandwidth is not None and not (0 < self.bandwidth < math.inf):
            raise ValueError(f"link bandwidth must be > 0 bits/s or None (got {self.bandwidth})")


@dataclass
class EmulatedLink:
    """The directed link u -> v: its serialization queue, its draws and its counts."""

    u: int
    v: int
    spec: LinkSpec
    rng: random.Random
    busy_until: float = 0.0
    frames: int = 0
    lost: int = 0
    duplicated: int = 0
    bytes: int = 0

    @classmethod
    def seeded(cls, u: int, v: int, spec: LinkSpec, seed: int) -> EmulatedLink:
        return cls(u, v, spec, random.Random(f"phalanx-link:{seed}:{u}:{v}"))

    def _extra(self) -> float:
        s, delay = self.spec, 0.0
        if s.jitter > 0.0:
            if s.jitter_dist == "uniform":
                delay = self.rng.random() * s.jitter
            elif s.jitter_dist == "normal":
                delay = abs(self.rng.gauss(0.0, 1.0)) * s.jitter
            else:
                delay = self.rng.expovariate(1.0) * s.jitter
        if s.reorder > 0.0 and self.rng.random() < s.reorder:
            delay += s.reorder_delay
        return delay

    def transmit(self, now: float, size: int) -> tuple[float, ...]:
        """Arrival time(s) at v of a frame of `size` bytes sent at `now`: () if lost, two if
        duplicated. Draws are taken in the same order whatever the outcome (as the
        simulator's link does), so one frame's fate never shifts a later frame's draws."""
        s = self.spec
        serialize = 0.0 if s.bandwidth is None else 8.0 * size / s.bandwidth
        done = max(now, self.busy_until) + serialize
        self.busy_until = done
        self.frames += 1
        self.bytes += size
        lost = s.loss > 0.0 and self.rng.random() < s.loss
        duplicated = s.duplicate > 0.0 and self.rng.random() < s.duplicate
        first = done + s.latency + self._extra()
        second = done + s.latency + self._extra() if s.duplicate > 0.0 else first
        if lost:
            self.lost += 1
            return ()
        if duplicated:
            self.duplicated += 1
            return (first, second)
        return (first,)


@dataclass
class _Counts:
    relayed: int = 0  # frames forwarded for others
    unroutable: int = 0  # frames whose destination we have no route to (dropped)
    delivered: int = 0
    refused: int = 0  # broadcasts not from a known root, or sent by a non-parent
    by_link: dict[int, EmulatedLink] = field(default_factory=dict)
    probes: dict[int, deque[bytes]] = field(default_factory=dict)  # neighbour -> stamps out
    srtt: dict[int, float] = field(default_factory=dict)  # neighbour -> smoothed RTT, s


class EmulatedNetwork:
    """A node's view of the emulated network, wrapping its transport (see the module doc).

    `next_hop[dst]` is this node's next hop toward every other node (a neighbour itself for
    a neighbour); `links[v]` the spec of the link to each neighbour v. `make_transport` builds
    the inner transport given the frame callback (its keyring and addresses must be cut down to
    the neighbours by the caller, which knows them). Everything not defined here (metrics,
    add_peer, ban, ...) is the inner transport's."""

    def __init__(self, node_id: int, next_hop: Mapping[int, int],
                 children: Mapping[int, list[int]], links: Mapping[int, LinkSpec], seed: int,
                 on_frame: Callable[[bytes], None],
                 make_transport: Callable[[Callable[[bytes], None]], Any]) -> None:
        used = {*next_hop.values(), *(v for kids in children.values() for v in kids)}
        missing = sorted(used - set(links))
        if missing:
            raise ValueError(f"node {node_id}: next hops {missing} are not neighbours")
        self.id = node_id
        self.next_hop = dict(next_hop)
        self.children = {root: list(kids) for root, kids in children.items()}
        self.on_frame = on_frame
        self.counts = _Counts(by_link={v: EmulatedLink.seeded(node_id, v, spec, seed)
                                       for v, spec in sorted(links.items())})
        self.inner = make_transport(self._arrived)
        self._prober: asyncio.Task[None] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def neighbours(self) -> list[int]:
        return sorted(self.counts.by_link)

    # -- sending ----------------------------------------------------------------------------

    def send(self, peer: int, frame: bytes) -> None:
        """Send `frame` to `peer` over the emulated route (KeyError for an unknown id)."""
        if peer not in self.next_hop:
            raise KeyError(f"node {peer} is not a peer in the emulated topology")
        self._forward(peer, DEST.pack(peer) + frame)

    def broadcast(self, frame: bytes) -> None:
        """Send `frame` to every node of the topology down our shortest-path tree."""
        data = ROOT.pack(BROADCAST, self.id) + frame
        for child in self.children.get(self.id, ()):
            self._transmit(child, data)

    def _forward(self, dst: int, data: bytes) -> None:
        self._transmit(self.next_hop[dst], data)

    def _transmit(self, hop: int, data: bytes) -> None:
        link = self.counts.by_link[hop]
        loop = asyncio.get_running_loop()
        now = loop.time()
        for at in link.transmit(now, len(data)):
            loop.call_at(at, self._hand_over, hop, data)

    def _hand_over(self, hop: int, data: bytes) -> None:
        try:
            self.inner.send(hop, data)
        except (KeyError, ValueError):  # a frame over the transport's limit: dropped
            self.counts.unroutable += 1

    # -- receiving ---------------------------------------------------------------------------

    def _arrived(self, data: bytes) -> None:
        if len(data) < DEST.size:
            self.counts.unroutable += 1
            return
        (dst,) = DEST.unpack_from(data)
        if dst == BROADCAST:
            self._relay(data)
        elif dst in (PROBE, ECHO):
            self._on_probe(dst, data)
        elif dst == self.id:
            self.counts.delivered += 1
            self.on_frame(data[DEST.size:])
        elif dst in self.next_hop:
            self.counts.relayed += 1
            self._forward(dst, data)
        else:
            self.counts.unroutable += 1

    def _relay(self, data: bytes) -> None:
        """A broadcast: deliver it, and pass it on to our children in its root's tree."""
        if len(data) < ROOT.size:
            self.counts.refused += 1
            return
        _, root = ROOT.unpack_from(data)
        kids = self.children.get(root)
        if kids is None or root == self.id:
            self.counts.refused += 1
            return
        for child in kids:
            self.counts.relayed += 1
            self._transmit(child, data)
        self.counts.delivered += 1
        self.on_frame(data[ROOT.size:])

    # -- measurement -------------------------------------------------------------------------

    async def _probe_loop(self, interval: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            for v in self.neighbours:
                stamp = STAMP.pack(PROBE, self.id, loop.time())
                self.counts.probes.setdefault(v, deque(maxlen=PROBES_KEPT)).append(stamp[4:])
                self._transmit(v, stamp)
            await asyncio.sleep(interval)

    def _on_probe(self, kind: int, data: bytes) -> None:
        if len(data) != STAMP.size:
            self.counts.refused += 1
            return
        _, sender, _ = STAMP.unpack(data)
        if sender not in self.counts.by_link and not (kind == ECHO and sender == self.id):
            self.counts.refused += 1
        elif kind == PROBE:  # answered over our own emulated link back to the prober
            self._transmit(sender, DEST.pack(ECHO) + data[4:])
        else:
            self._on_echo(data)

    def _on_echo(self, data: bytes) -> None:
        _, _, sent = STAMP.unpack(data)
        for v, stamps in self.counts.probes.items():
            if data[4:] in stamps:  # only a probe we sent, and only once
                stamps.remove(data[4:])
                rtt = asyncio.get_running_loop().time() - sent
                old = self.counts.srtt.get(v)
                self.counts.srtt[v] = rtt if old is None else old + RTT_GAIN * (rtt - old)
                return
        self.counts.refused += 1

    def link_conditions(self) -> tuple[float, float] | None:
        """(uplink bandwidth bits/s as the transport measures it, one-way latency s as our
        probes measure it over the emulated links: the median over neighbours of RTT / 2)."""
        rtts = list(self.counts.srtt.values())
        if not rtts:
            return None
        inner = self.inner.link_conditions()
        return (inner[0] if inner else math.inf), statistics.median(rtts) / 2

    # -- what the node asks of a transport ----------------------------------------------------

    async def start(self) -> None:
        await self.inner.start()
        self._prober = asyncio.create_task(self._probe_loop(self.inner.measure_interval))

    async def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
        await self.inner.close()

    async def wait_for_peers(self, timeout: float, peers: Any = None) -> None:
        """Our neighbours, whatever `peers` says: the only links this node has."""
        await self.inner.wait_for_peers(timeout, peers=self.neighbours)

    def peer_states(self) -> dict[int, bool]:
        """A peer is up when the neighbour on our route to it is (the emulated route is
        static: a relay that is down cuts what lies behind it, as in the simulator)."""
        near = self.inner.peer_states()
        return {peer: near.get(hop, False) for peer, hop in sorted(self.next_hop.items())}

    def stats(self) -> dict[str, Any]:
        """What the emulation did: per outgoing link, frames, bytes, losses, duplicates."""
        c = self.counts
        return {"relayed": c.relayed, "unroutable": c.unroutable, "delivered": c.delivered,
                "refused": c.refused,
                "links": {str(v): {"frames": x.frames, "bytes": x.bytes, "lost": x.lost,
                                   "duplicated": x.duplicated, **asdict(x.spec)}
                          for v, x in c.by_link.items()}}
