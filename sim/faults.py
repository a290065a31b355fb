"""Fault injection on the simulated world: the scenario's timeline and the seeded nemesis.

Partitions are rules over node pairs checked on every hop (a frame crossing a cut is dropped
where it would cross); crashes, slowness and link degradation act on hosts and links. Every
fault and heal is written to the event log, so a run's faults are visible next to the traffic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from phalanx.engine.events import RequestChange
from phalanx.scenario.schema import (
    BridgeFault,
    ChangeRequest,
    CrashFault,
    DegradeFault,
    Fault,
    IsolateFault,
    NemesisSpec,
    OneWayFault,
    PartitionFault,
    SlowFault,
)

if TYPE_CHECKING:
    from phalanx.sim.world import SimWorld

Rule = Callable[[int, int], bool]  # (from, to) -> blocked


def _split_rule(groups: list[list[int]]) -> Rule:
    side = {node: i for i, group in enumerate(groups) for node in group}
    rest = len(groups)  # unlisted nodes form one more group
    return lambda u, v: side.get(u, rest) != side.get(v, rest)


def _isolate_rule(nodes: list[int]) -> Rule:
    cut = set(nodes)
    return lambda u, v: (u in cut) != (v in cut)


def _one_way_rule(source: list[int], target: list[int]) -> Rule:
    src, dst = set(source), set(target)
    return lambda u, v: u in src and v in dst


def _bridge_rule(sides: list[list[int]]) -> Rule:
    a, b = set(sides[0]), set(sides[1])
    return lambda u, v: (u in a and v in b) or (u in b and v in a)


class FaultInjector:
    def __init__(self, world: SimWorld) -> None:
        self.world = world
        self.rules: list[Rule] = []
        self.pending_restarts = 0
        self.pending_heals = 0  # cuts with a scheduled end: the run waits for them (see world)
        self._by_round: dict[int, list[Fault]] = {}
        self._faulty: dict[int, int] = {}  # node -> faults in force on it (the nemesis budget)

    # ---- scheduling ---------------------------------------------------------------------------

    def schedule(self, faults: list[Fault], nemesis: NemesisSpec | None) -> None:
        for fault in faults:
            if fault.at is not None:
                self.world.call_at(fault.at, self.apply, fault)
            else:
                self._by_round.setdefault(fault.at_round or 0, []).append(fault)
        if nemesis is not None:
            self.world.call_at(nemesis.start, self._nemesis_tick, nemesis)

    def on_commit(self, round: int) -> None:
        for fault in self._by_round.pop(round, []):
            self.apply(fault)

    def blocked(self, u: int, v: int) -> bool:
        return any(rule(u, v) for rule in self.rules)

    # ---- applying and healing -------------------------------------------------------------------

    def apply(self, fault: Fault) -> None:
        world = self.world
        label = fault.model_dump_json(exclude={"at", "at_round", "duration"})
        world.log.node_event(world.now, "fault", label)
        if isinstance(fault, ChangeRequest):
            self._request_change(fault.kind, fault.nodes)
            return
        heal: Callable[[], None]
        match fault:
            case CrashFault():
                heal = self._crash(fault)
            case PartitionFault() | IsolateFault() | OneWayFault() | BridgeFault():
                heal = self._cut(fault)
            case DegradeFault():
                heal = self._degrade(fault)
            case SlowFault():
                heal = self._slow(fault)
        involved = sorted(fault.nodes_involved())
        for node in involved:  # counted against the nemesis budget until healed
            self._faulty[node] = self._faulty.get(node, 0) + 1
        if fault.duration is not None:
            world.call_at(world.now + fault.duration, self._heal, label, heal, involved)

    # Each starts its fault now and returns what heals it.

    def _crash(self, fault: CrashFault) -> Callable[[], None]:
        world, nodes, keep = self.world, fault.nodes, fault.keep_disk
        for node in nodes:
            world.hosts[node].crash()
        self.pending_restarts += len(nodes) if fault.duration else 0

        def heal() -> None:
            self.pending_restarts -= len(nodes)
            for node in nodes:
                world.hosts[node].restart(keep_disk=keep)
        return heal

    def _cut(self, fault: PartitionFault | IsolateFault | OneWayFault | BridgeFault
             ) -> Callable[[], None]:
        world, rule = self.world, self._rule(fault)
        self.rules.append(rule)
        self.pending_heals += fault.duration is not None

        def heal() -> None:
            self.rules.remove(rule)
            self.pending_heals -= 1
            world.on_heal()
        return heal

    def _degrade(self, fault: DegradeFault) -> Callable[[], None]:
        world, nodes = self.world, fault.nodes
        pairs = None if nodes is None else self._pairs_touching(nodes)
        token = world.network.degrade(pairs, extra_latency=fault.extra_latency,
                                      extra_loss=fault.loss)
        world.measure_links()

        def heal() -> None:
            world.network.restore(token)
            world.measure_links()
        return heal

    def _slow(self, fault: SlowFault) -> Callable[[], None]:
        world, nodes, factor = self.world, fault.nodes, fault.factor
        for node in nodes:
            world.hosts[node].slowdown *= factor

        def heal() -> None:
            for node in nodes:
                world.hosts[node].slowdown /= factor
        return heal

    def _request_change(self, op: str, nodes: list[int]) -> None:
        """Each node asks for the change; one that cannot (down, or a member asking to join)
        is logged with the reason rather than stopping the run."""
        world = self.world
        for node in nodes:
            host = world.hosts[node]
            problem = "down" if host.node is None else host.node.change_problem(op)
            if problem:
                world.log.node_event(world.now, "refused", f"{op}: {problem}", node)
            else:
                host.feed(RequestChange(op))

    def _heal(self, label: str, heal: Callable[[], None], involved: list[int]) -> None:
        self.world.log.node_event(self.world.now, "heal", label)
        heal()
        for node in involved:
            self._faulty[node] -= 1
            if not self._faulty[node]:
                del self._faulty[node]

    @staticmethod
    def _rule(fault: PartitionFault | IsolateFault | OneWayFault | BridgeFault) -> Rule:
        match fault:
            case PartitionFault(groups=groups):
                return _split_rule(groups)
            case IsolateFault(nodes=nodes):
                return _isolate_rule(nodes)
            case OneWayFault(source=source, target=target):
                return _one_way_rule(source, target)
            case BridgeFault(sides=sides):
                return _bridge_rule(sides)

    def _pairs_touching(self, nodes: list[int]) -> list[tuple[int, int]]:
        routes, chosen = self.world.routes, set(nodes)
        return [(u, v) for u, v in routes.edges() if u in chosen or v in chosen]

    # ---- nemesis --------------------------------------------------------------------------------

    def _nemesis_tick(self, spec: NemesisSpec) -> None:
        world = self.world
        if spec.stop is not None and world.now >= spec.stop:
            return
        world.call_at(world.now + spec.interval, self._nemesis_tick, spec)
        rng = world.rngs.stream("nemesis", round(world.now * 1e6))
        # Byzantine nodes and every fault still in force (timeline ones too) use up the budget
        faulty = set(self._faulty) | set(world.byzantine)
        budget = (spec.max_faulty or world.scenario.f) - len(faulty)
        candidates = [h.id for h in world.hosts if h.id not in faulty and h.up]
        if budget <= 0 or not candidates:
            return
        kind = spec.kinds[int(rng.integers(len(spec.kinds)))]
        count = int(rng.integers(1, min(budget, len(candidates)) + 1))
        targets = sorted(int(t) for t in rng.choice(candidates, count, replace=False))
        self.apply(self._nemesis_fault(kind, targets, spec))

    def _nemesis_fault(self, kind: str, targets: list[int], spec: NemesisSpec) -> Fault:
        now, d = self.world.now, spec.duration
        match kind:
            case "crash":
                return CrashFault(kind="crash", nodes=targets, at=now, duration=d,
                                  keep_disk=spec.keep_disk)
            case "isolate":
                return IsolateFault(kind="isolate", nodes=targets, at=now, duration=d)
            case "partition":
                return PartitionFault(kind="partition", groups=[targets], at=now, duration=d)
            case "slow":
                return SlowFault(kind="slow", nodes=targets, at=now, duration=d)
            case _:
                latency = 10 * self.world.scenario.links.latency
                return DegradeFault(kind="degrade", nodes=targets, extra_latency=latency,
                                    loss=0.2, at=now, duration=d)
