"""The SimPy driver: hosts the sans-IO Nodes and carries out their actions in simulated time.

Frames travel hop by hop along static shortest-latency routes; each hop goes through a link
model (serialization FIFO, latency, jitter, loss, duplication, reordering) and the partition
rules. Compute jobs really run (the math is real) but take modelled time: step_time x cost /
speed. All randomness comes from named streams of the scenario seed, and SimPy orders equal-time
events by insertion, so a run is a pure function of (scenario, seed).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from heapq import heappush
from typing import Any

import numpy as np
import simpy
from simpy.core import NORMAL

from phalanx.engine.byzantine import make_behaviour
from phalanx.engine.curation.desk import CurationDesk
from phalanx.engine.curation.service import CurationService
from phalanx.engine.driver import dispatch
from phalanx.engine.events import (
    Action,
    ComputeDone,
    CurationCommitted,
    Event,
    Finished,
    Job,
    LinkConditions,
    Loaded,
    LocalAnswer,
    LocalRequest,
    MembershipChanged,
    Metric,
    Received,
    RoundCommitted,
    Started,
    Stored,
    Suspicion,
    TimerFired,
    answer_of,
)
from phalanx.engine.metrics import MetricLog
from phalanx.engine.node import Node, Service, message_set
from phalanx.engine.rng import RngStreams
from phalanx.scenario.build import (
    annotation_attack_of,
    member_keys,
    node_config,
    node_services,
    workload_for,
)
from phalanx.scenario.schema import Scenario
from phalanx.sim.costs import CostModel, CpuPool
from phalanx.sim.curation import SimulatedCuration
from phalanx.sim.eventlog import EventLog
from phalanx.sim.faults import FaultInjector
from phalanx.sim.links import Draws, Link, LinkParams, Network
from phalanx.sim.topology import Routes, scenario_graph


def build_graph_routes(scenario: Scenario, rngs: RngStreams) -> Routes:
    return Routes(scenario_graph(scenario, rngs))


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector around a simulation.

    A 1000-node run keeps millions of small objects alive (per-node replay windows, pending
    events), and every full collection walks all of them: measured at 500 nodes, collections
    took 40% of the wall time. The hot paths create no reference cycles (refcounting frees
    their garbage), so nothing piles up while the collector rests."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Call:
    """A bare SimPy event that calls `fn(*args)` when its time comes.

    SimPy's loop only needs `callbacks` and `_ok` on what it pops from its queue; skipping the
    Timeout machinery and a closure per event roughly halves the per-hop cost, which matters at
    a million routed frames per simulated round. The shared callback list is never mutated.
    """

    __slots__ = ("args", "callbacks", "fn")
    _ok = True  # read by SimPy's loop: the event succeeded

    def __init__(self, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        self.fn, self.args, self.callbacks = fn, args, _RUN


def _run(event: _Call) -> None:
    event.fn(*event.args)


_RUN = [_run]


class _Hop:
    """One copy of a broadcast frame crossing one tree edge, due at its arrival at `at`.

    The commonest event of a run: its callback list holds the world's relay itself, so SimPy's
    loop calls straight into it (no trampoline, no argument tuple to unpack)."""

    __slots__ = ("at", "callbacks", "frame", "kind", "rnd", "sent", "src")
    _ok = True

    def __init__(self, callbacks: list[Callable[[_Hop], None]], at: int, src: int,
                 frame: bytes, kind: int, rnd: int, sent: float) -> None:
        self.callbacks, self.at, self.src, self.frame = callbacks, at, src, frame
        self.kind, self.rnd, self.sent = kind, rnd, sent


@dataclass
class SimStats:
    events: int = 0  # callbacks scheduled on the SimPy queue (hops, timers, compute, faults)
    wall_seconds: float = 0.0
    sim_seconds: float = 0.0


class Host:
    """One simulated machine: a Node, its disk, its timers and its compute queue."""

    def __init__(self, world: SimWorld, node_id: int) -> None:
        self.world = world
        self.id = node_id
        self.node: Node | None = None
        self.up = False
        self.disk: dict[str, Any] = {}
        self.incarnation = 0
        self.speed = world.scenario.nodes.speeds.get(node_id, world.scenario.nodes.speed)
        self.slowdown = 1.0
        self.compute_free_at = 0.0
        self.timers: dict[str, int] = {}
        self.finished = False
        self.holds = 0
        self.bytes_sent: dict[int, int] = {}  # round -> bytes this node put on the wire for it

    def start(self, lost_disk: bool = False) -> None:
        w = self.world
        spec = w.byzantine.get(self.id)
        behaviour = make_behaviour(spec.behaviour, spec.from_round, w.colluders,
                                   w.rngs.seed("byzantine"), **spec.params) if spec else None
        attack = annotation_attack_of(w.scenario, self.id)  # an annotation node's (curation.byzantine)
        behaviour = attack if attack is not None else behaviour
        self.node = Node(node_config(w.scenario, self.id), w.identities[self.id], w.workload,
                         w.opener, behaviour, w.services)
        self.up, self.finished = True, False
        self.feed(Started(dict(self.disk), lost_disk))
        self.measure_link()

    def measure_link(self) -> None:
        """Tell an adaptive node what its uplink is now: the simulation's measurement is exact
        (a real driver estimates the same figures from its traffic)."""
        w = self.world
        if self.up and w.scenario.compression.adaptive is not None:
            conditions = w.link_conditions(self.id)
            if conditions is not None:
                self.feed(conditions)

    def crash(self) -> None:
        self.holds += 1  # overlapping crash faults: back up only when the last one heals
        if not self.up:
            return
        self.up, self.node = False, None
        self.incarnation += 1  # orphan every timer and compute result of the old process
        self.timers.clear()
        self.world.log.node_event(self.world.now, "crash", "", self.id)
        self.world.check_done()

    def restart(self, keep_disk: bool) -> None:
        self.holds -= 1
        if self.up or self.holds > 0:
            return
        if not keep_disk:
            self.disk.clear()
        self.world.log.node_event(self.world.now, "restart", f"keep_disk={keep_disk}", self.id)
        self.start(lost_disk=not keep_disk)

    def feed(self, event: Event, now: float | None = None) -> None:
        """Hand `event` to the node; the relay passes `now` (one per delivered copy)."""
        node = self.node
        if node is not None:
            actions = node.handle(event, self.world.now if now is None else now)
            if actions:
                self.execute(actions)

    def execute(self, actions: list[Action]) -> None:
        dispatch(actions, self)

    # ---- the node's actions (engine/driver.py) -------------------------------------------

    def broadcast(self, frame: bytes, kind: int, rnd: int) -> None:
        w = self.world
        w.broadcast(self.id, frame, kind, rnd)
        self._account(rnd, len(frame) * (len(w.members) - 1))

    def send(self, peer: int, frame: bytes, kind: int, rnd: int) -> None:
        self.world.send(self.id, peer, frame, kind, rnd)
        self._account(rnd, len(frame))

    def set_timer(self, name: str, delay: float) -> None:
        w = self.world
        token = self.timers[name] = w.stats.events
        w.call_later(delay, self._timer, name, token, self.incarnation)

    def cancel_timer(self, name: str) -> None:
        self.timers.pop(name, None)

    def compute(self, job: Job) -> None:
        w = self.world
        start = max(w.now, self.compute_free_at)
        self.compute_free_at = start + (
            w.scenario.training.step_time * job.cost * self.slowdown / self.speed)
        result = job.run()
        w.call_at(self.compute_free_at, self._computed, job, result, self.incarnation)

    def persist(self, key: str, value: Stored) -> None:
        self.disk[key] = value

    def emit(self, metric: Metric) -> None:
        self.world.on_metric(self, metric)

    def load(self, token: int, keys: tuple[str, ...]) -> None:
        # answered at once, at the instant of the event that asked: a run stays a pure
        # function of its seed, and the answer goes out as it would from memory
        node = self.node
        if node is not None:
            self.feed(Loaded(token, tuple(self.disk.get(k) for k in keys)), node.now)

    def _account(self, rnd: int, size: int) -> None:
        self.bytes_sent[rnd] = self.bytes_sent.get(rnd, 0) + size

    def _timer(self, name: str, token: int, incarnation: int) -> None:
        if incarnation == self.incarnation and self.timers.get(name) == token:
            del self.timers[name]
            self.feed(TimerFired(name))

    def _computed(self, job: Any, result: Any, incarnation: int) -> None:
        if incarnation == self.incarnation:
            self.feed(ComputeDone(job, result))


def _costed(world: SimWorld, costs: CostModel) -> list[Host]:
    from phalanx.sim.costed import CostedHost  # it subclasses Host

    cpu = CpuPool(costs.cores, costs.speed)
    if costs.transport_latency > 0:  # the real transport's own hop, on every link
        world.network.degrade(None, extra_latency=costs.transport_latency)
    disk = CpuPool(costs.disks)  # flushes are measured in wall time: full speed
    return [CostedHost(world, i, costs, cpu, disk) for i in world.members]


class SimWorld:
    def __init__(self, scenario: Scenario,
                 on_commit: Callable[[RoundCommitted, float], None] | None = None,
                 services: Sequence[type[Service]] = (), costs: CostModel | None = None) -> None:
        """`services`: services every node runs beyond the built-in ones (and the curation
        service, on every node, when the scenario has `curation:`); `costs`: the measured
        cost model (sim/costs.py) instead of step_time alone."""
        self.scenario = scenario
        curated = (CurationService,) if scenario.curation is not None else ()
        self.services = (*services, *curated)
        self.rngs = RngStreams(scenario.seed)
        self.env = simpy.Environment()
        self.stats = SimStats()
        self.log = EventLog(scenario.record)
        self.routes = build_graph_routes(scenario, self.rngs)
        self._next_hop: list[list[int]] = self.routes.next_hop_table.tolist()  # fast lookups
        self._trees: dict[int, list[tuple[tuple[int, ...], tuple[Link, ...]]]] = {}
        self._on_hop = [self._relay]  # the callbacks of every hop event (never mutated)
        links = scenario.links
        self.network = Network(self.routes, LinkParams(
            latency=links.latency, jitter=links.jitter, jitter_dist=links.jitter_dist,
            bandwidth=links.bandwidth, loss=links.loss, duplicate=links.duplicate,
            reorder=links.reorder, reorder_delay=links.reorder_delay))
        self.link_draws = Draws(self.rngs.stream("links"))
        n = scenario.nodes.count
        self.members = range(n)
        self.identities, self.opener, self.verify_cache = member_keys(
            scenario, message_set(self.services))
        # configured now: curation verifies records through the shared cache
        self.services = (*services, *node_services(scenario, self.verify_cache.verify))
        self.workload = workload_for(scenario, self.rngs)
        self.byzantine = {node: b for b in scenario.byzantine for node in b.nodes}
        self.colluders = frozenset(self.byzantine)
        self.hosts = [Host(self, i) for i in range(n)] if costs is None else _costed(self, costs)
        self.faults = FaultInjector(self)
        self.on_commit = on_commit
        self.metrics = MetricLog()
        self._first_commit: set[int] = set()
        self._membership_logged: set[tuple[int, int]] = set()
        self._done = self.env.event()
        self._stop_pending = False
        self._last_activity = 0.0
        # simulated annotators and the labels' report (sim/curation.py), with curation.crowd
        self.crowd = (SimulatedCuration(self) if scenario.curation is not None
                      and scenario.curation.crowd is not None else None)

    @property
    def now(self) -> float:
        return self.env.now

    def call_later(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        self.stats.events += 1
        self.env.schedule(_Call(fn, args), NORMAL, delay)  # type: ignore[arg-type]

    def call_at(self, at: float, fn: Callable[..., None], *args: Any) -> None:
        self.call_later(max(0.0, at - self.env.now), fn, *args)

    # ---- the wire ----------------------------------------------------------------------------

    def link_conditions(self, root: int) -> LinkConditions | None:
        """What a broadcast from `root` meets: the farthest node's path latency (degradations
        included) and, since each overlay link serializes its own copy while a relay forwards
        after the whole frame arrived, the uplink rate that would take as long for all peers:
        peers * bandwidth / hops to the farthest. None on links of unlimited bandwidth."""
        bandwidth = self.scenario.links.bandwidth
        if bandwidth is None:
            return None
        tree, frontier, peers = self._tree(root), [(root, 0, 0.0)], 0
        hops, latency = 1, 0.0
        while frontier:
            node, depth, delay = frontier.pop()
            for child, link in zip(*tree[node], strict=True):
                peers += 1
                hops, latency = max(hops, depth + 1), max(latency, delay + link.latency)
                frontier.append((child, depth + 1, delay + link.latency))
        return LinkConditions(max(peers, 1) * bandwidth / hops, latency)

    def measure_links(self) -> None:
        """Link conditions changed (a degradation came or went): every node measures anew."""
        for host in self.hosts:
            host.measure_link()

    def send(self, src: int, dst: int, frame: bytes, kind: int, rnd: int) -> None:
        self._hop(src, src, dst, frame, kind, rnd, self.env.now)

    def broadcast(self, src: int, frame: bytes, kind: int, rnd: int) -> None:
        self._relay(_Hop(self._on_hop, src, src, frame, kind, rnd, self.env.now))

    def _tree(self, root: int) -> list[tuple[tuple[int, ...], tuple[Link, ...]]]:
        """Children of every node in the shortest-path tree rooted at `root`, with the links
        that reach them."""
        kids = self._trees.get(root)
        if kids is None:
            parent = self.routes.next_hop_table[:, root]  # each node's next hop toward root
            lists: list[list[int]] = [[] for _ in self.members]
            for v in np.argsort(parent, kind="stable").tolist():
                if v != root:
                    lists[int(parent[v])].append(v)
            link = self.network.link
            kids = self._trees[root] = [(tuple(k), tuple(link(u, v) for v in k))
                                        for u, k in enumerate(lists)]
        return kids

    def _relay(self, hop: _Hop) -> None:
        """A broadcast travels once over each edge of the sender's shortest-path tree: every
        node on it receives the frame and its transport forwards it to its children (a P2P
        overlay's relay), so a sparse overlay carries n - 1 copies, not n - 1 routed unicasts.
        A relay that is down, a cut or a lost frame loses the copy for the whole subtree.

        The simulator's hottest function (one call per delivered copy): the link step is
        inlined, and hops go straight onto SimPy's queue, exactly as `env.schedule` puts
        them (same key, same order), without a call per hop."""
        at, src, frame, kind, rnd, sent = hop.at, hop.src, hop.frame, hop.kind, hop.rnd, hop.sent
        env = self.env
        now = env._now
        host = self.hosts[at]
        if at != src:
            if not host.up:
                self.log.drop(now, src, at, kind, rnd, len(frame), now - sent, "node_down")
                return
            self.log.deliver(now, src, at, kind, rnd, len(frame), now - sent)
        tree = self._trees.get(src) or self._tree(src)
        children, links = tree[at]
        if children:
            size, draws, rules = len(frame), self.link_draws, self.faults.rules
            queue, eid, on_hop = env._queue, env._eid, self._on_hop
            scheduled = 0
            for child, link in zip(children, links, strict=True):
                if rules and self.faults.blocked(at, child):
                    self.log.drop(now, src, child, kind, rnd, size, now - sent, "partition")
                    continue
                arrivals = link.transmit(now, size, draws)
                if not arrivals:
                    self.log.drop(now, src, child, kind, rnd, size, now - sent, "loss")
                for t in arrivals:
                    scheduled += 1  # `now + (t - now)`: the float `env.schedule` would compute
                    heappush(queue, (now + (t - now), NORMAL, next(eid),
                                     _Hop(on_hop, child, src, frame, kind, rnd, sent)))
            self.stats.events += scheduled
        if at != src:
            host.feed(Received(frame), now)

    def _hop(self, at: int, src: int, dst: int, frame: bytes, kind: int, rnd: int,
             sent: float) -> None:
        """A unicast frame, forwarded hop by hop along the static route to `dst`."""
        now = self.env.now
        if at == dst:
            host = self.hosts[dst]
            if host.up:
                self.log.deliver(now, src, dst, kind, rnd, len(frame), now - sent)
                host.feed(Received(frame))
            else:
                self.log.drop(now, src, dst, kind, rnd, len(frame), now - sent, "node_down")
            return
        if at != src and not self.hosts[at].up:
            self.log.drop(now, src, dst, kind, rnd, len(frame), now - sent, "relay_down")
            return
        nxt = self._next_hop[at][dst]
        if self.faults.rules and self.faults.blocked(at, nxt):
            self.log.drop(now, src, dst, kind, rnd, len(frame), now - sent, "partition")
            return
        arrivals = self.network.link(at, nxt).transmit(now, len(frame), self.link_draws)
        if not arrivals:
            self.log.drop(now, src, dst, kind, rnd, len(frame), now - sent, "loss")
        for t in arrivals:
            self.call_later(t - now, self._hop, nxt, src, dst, frame, kind, rnd, sent)

    # ---- curation: submissions arriving at a node, and each node's desk ----------------

    def submit(self, node_id: int, record: bytes, token: int = 0) -> LocalAnswer | None:
        """An annotator's signed record arriving at `node_id` now (call it from a callback
        scheduled with `call_at`); the node's answer, or None while the node is down."""
        return self.ask(node_id, LocalRequest("curation", "submit", record, token))

    def ask(self, node_id: int, request: LocalRequest) -> LocalAnswer | None:
        """A request at `node_id`'s own door now (a submission, a task import); the node's
        answer, or None while the node is down."""
        host = self.hosts[node_id]
        node = host.node
        if node is None:
            return None
        actions = node.handle(request, self.now)
        host.execute(actions)
        return answer_of(actions, request.token)

    def desk(self, node_id: int) -> CurationDesk | None:
        """The curation desk of `node_id` (None while it is down, or without curation)."""
        node = self.hosts[node_id].node
        if node is None:
            return None
        for service in node.extra_services:
            if isinstance(service, CurationService):
                return service.desk
        return None

    # ---- metrics from the nodes ------------------------------------------------------------

    def on_metric(self, host: Host, metric: Metric) -> None:
        self.metrics.record(metric, self.now)
        if type(metric) is not Suspicion:  # a belief, not progress: it does not delay the end
            self._last_activity = self.now
        match metric:
            case RoundCommitted():
                if self.on_commit:
                    self.on_commit(metric, self.now)
                if metric.round not in self._first_commit:
                    self._first_commit.add(metric.round)
                    self.faults.on_commit(metric.round)
            case CurationCommitted():
                if self.crowd is not None:
                    self.crowd.on_commit(metric)
            case Finished():
                host.finished = True
                self.check_done()
            case MembershipChanged(round=rnd, op=op, subject=subject, members=members):
                if (rnd, subject) not in self._membership_logged:
                    self._membership_logged.add((rnd, subject))
                    self.log.node_event(self.now, "membership",
                                        f"{op} from round {rnd}: members {list(members)}", subject)

    def on_heal(self) -> None:
        """A cut healed: finished nodes find forks by comparing heads (every two view timeouts
        by default, `Accountability.audit_head`), so the run settles for two such periods at
        least."""
        self._last_activity = max(self._last_activity,
                                  self.now + 3 * self.scenario.training.view_timeout)
        self.check_done()

    def check_done(self) -> None:
        """Once every running honest node has finished and every scheduled crash and cut has
        healed, let the run settle (final heads compared, evidence, syncs): stop after one
        view timeout with no commit and no open dispute. Nodes finished on both sides of a
        cut compare their heads after it heals: a fork beyond the bound shows then."""
        if self._everyone_finished() and not self._stop_pending:
            self._stop_pending = True
            self.call_later(self.scenario.training.view_timeout, self._maybe_stop)

    def _running_honest(self) -> list[Host]:
        return [h for h in self.hosts if h.up and h.id not in self.byzantine]

    def _everyone_finished(self) -> bool:
        return (self.faults.pending_restarts == 0 and self.faults.pending_heals == 0
                and all(h.finished for h in self._running_honest()))

    def _maybe_stop(self) -> None:
        self._stop_pending = False
        if not self._everyone_finished() or self._done.triggered:
            return  # a node that finishes again calls check_done
        quiet_since = self._last_activity + self.scenario.training.view_timeout
        if not all(h.node is not None and h.node.settled for h in self._running_honest()):
            quiet_since = max(quiet_since, self.now + self.scenario.training.view_timeout)
        if self.now >= quiet_since:
            self._done.succeed()
        else:
            self._stop_pending = True
            self.call_at(quiet_since, self._maybe_stop)

    # ---- running -------------------------------------------------------------------------------

    def default_max_time(self) -> float:
        t = self.scenario.training
        fault_end = max((f.at or 0.0) + (f.duration or 0.0) for f in [*self.scenario.faults]
                        ) if self.scenario.faults else 0.0
        return fault_end + t.rounds * (4 * t.view_timeout + t.step_time) + 10 * t.view_timeout

    def start(self) -> None:
        """Schedule the faults, start the nodes and the simulated crowd: what `run` does
        before the clock runs (a driver that runs the clock itself calls it once)."""
        self.faults.schedule(list(self.scenario.faults), self.scenario.nemesis)
        for host in self.hosts:
            host.start()
        if self.crowd is not None:
            self.crowd.start()

    def run(self) -> SimStats:
        max_time = self.scenario.training.max_time or self.default_max_time()
        self.start()
        wall = time.perf_counter()
        with gc_paused():
            self.env.run(until=simpy.AnyOf(self.env, [self._done, self.env.timeout(max_time)]))
        self.stats.wall_seconds = time.perf_counter() - wall
        self.stats.sim_seconds = self.env.now
        if self.crowd is not None:
            self.crowd.close()
        return self.stats
