"""Twins: a Byzantine node as two honest instances sharing one identity (Bano et al., "Twins:
BFT Systems Made Robust", OPODIS 2022; the method DiemBFT was tested with).

A twinned member `m` runs as instances "ma" and "mb" (and "mc", ... with more copies): the
same Ed25519 key, the same node id, the same unmodified `Node` code. Placed on different sides
of a partition they see different histories and so naturally sign different gradients,
proposals and votes for one slot: equivocation with no attack code at all. Without a partition
the copies receive the same frames at the same instants and sign byte-identical frames (Ed25519
is deterministic and sequence numbers are time-based), so a twin then behaves like one honest
node.

The executor here is a small deterministic driver (no SimPy): one heap of events on a simulated
clock, ordered by (time, insertion number); every frame takes a fixed `delay`; compute jobs run
at once and report after `step_time x cost`; timers re-armed by name replace the earlier one.
Nodes are built as `scenario/build.py` builds them for the simulator (`node_config`, `workload_for`,
`Identity.derive(seed, i)`, one memoizing `FrameOpener` over a `VerifyCache`); the twinned
members are listed as Byzantine with the "honest" behaviour, so more twins than f need
`unsafe=True`, as in a scenario file.

Delivery: a frame an instance X sends to member m (a Send to m, or a Broadcast: every member
but X's own) reaches every instance of m that is in X's partition cell *at send time*; a twin's
traffic is "from" its logical id, so receivers cannot tell the copies apart. A schedule is a
list of phases (start time, cells of instance names; instances a phase leaves out form one more
cell); before the first phase and from `heal_at` on, everyone is in one cell.

`enumerate_scenarios(n, twins, seed, count)` draws schedules in the spirit of the paper's
per-round enumeration of partitions and leaders: for each of 1..`max_phases` phases, a leader
(member and, for a twin, which of its instances), the set of instances that share the leader's
cell (from alone to everyone), and a split of the others into at most two more cells, so every
phase has 1 to 3 cells. Phase lengths are drawn from a menu spanning a message hop to two view
timeouts, so cuts fall between the steps of a round as well as across view changes. Scenario i
depends only on (n, twins, seed, i): any failure replays from `draw_scenario(..., index=i)`
(or from the printed `TwinsScenario`, a plain frozen dataclass).

`run_twins(scenario) -> TwinsResult` reports, per honest (untwinned) member, the rounds it
committed (round -> model hash and set digest) and the peers it excluded with their proofs;
`safety_violations()` lists rounds that two honest members (or one, twice) committed with
different model hashes.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from phalanx.engine.byzantine import make_behaviour
from phalanx.engine.consensus import equivocations, max_faulty, signed_in, slot_of
from phalanx.engine.driver import dispatch
from phalanx.engine.events import (
    ComputeDone,
    Event,
    Excluded,
    Finished,
    Job,
    Loaded,
    Metric,
    Received,
    Rejected,
    RoundCommitted,
    Started,
    Stored,
    TimerFired,
)
from phalanx.engine.node import Node, set_digest
from phalanx.engine.rng import RngStreams
from phalanx.net.envelope import Envelope
from phalanx.net.errors import DecodeError
from phalanx.net.messages import Evidence, Gradient, Proposal, RoundRecord, Vote
from phalanx.scenario.build import member_keys, node_config, workload_for
from phalanx.scenario.schema import Scenario

__all__ = [
    "Delivery",
    "Exclusion",
    "MemberOutcome",
    "Phase",
    "SafetyViolation",
    "TwinsResult",
    "TwinsRun",
    "TwinsScenario",
    "draw_scenario",
    "enumerate_scenarios",
    "instance_names",
    "run_twins",
]

Cells = tuple[frozenset[str], ...]
SUFFIXES = "abcdefgh"


def instance_names(n: int, twins: Iterable[int], copies: int = 2) -> dict[int, tuple[str, ...]]:
    """Member -> its instances: "m" for an honest member, "ma", "mb", ... for a twinned one."""
    twinned = set(twins)
    if not 2 <= copies <= len(SUFFIXES):
        raise ValueError(f"copies must be 2..{len(SUFFIXES)}, got {copies}")
    bad = sorted(t for t in twinned if not 0 <= t < n)
    if bad:
        raise ValueError(f"twins {bad} out of range 0..{n - 1}")
    return {m: tuple(f"{m}{s}" for s in SUFFIXES[:copies]) if m in twinned else (str(m),)
            for m in range(n)}


@dataclass(frozen=True, slots=True)
class Phase:
    """From `start` (until the next phase or the heal) only instances of one cell talk.
    `leader` is the member the enumeration built the first cell around (for reports only)."""

    start: float
    cells: Cells
    leader: int | None = None


@dataclass(frozen=True)
class TwinsScenario:
    n: int
    twins: tuple[int, ...]
    schedule: tuple[Phase, ...] = ()
    heal_at: float = 0.0  # from here on, one cell (the schedule's phases end here)
    seed: int = 0  # identities and workload, as a scenario file's seed
    copies: int = 2
    rounds: int = 3
    dim: int = 4  # the linear workload's dimension
    lr: float = 0.1
    momentum: float = 0.9
    aggregator: str = "mean"
    votes: str = "broadcast"  # or "leader": linear voting (training.votes)
    delay: float = 0.01  # every frame, every link
    step_time: float = 0.0  # a gradient step's simulated duration
    round_timeout: float = 0.2
    view_timeout: float = 0.6
    settle: float | None = None  # run on this long once every honest member finished and the
    # partitions healed (default 4 view timeouts: evidence and syncs travel)
    max_time: float | None = None  # hard cap (default derived from heal_at and the rounds)
    unsafe: bool = False  # allow more twins than f, as `unsafe: true` in a scenario file
    index: int | None = None  # where the enumeration drew it (for replay)

    def __post_init__(self) -> None:
        names = instance_names(self.n, self.twins, self.copies)
        every = {i for insts in names.values() for i in insts}
        for phase in self.schedule:
            listed = [i for cell in phase.cells for i in cell]
            unknown = sorted(set(listed) - every)
            if unknown:
                raise ValueError(f"phase at {phase.start}: unknown instances {unknown}")
            if len(listed) != len(set(listed)):
                raise ValueError(f"phase at {phase.start}: an instance is in two cells")
        starts = [p.start for p in self.schedule]
        if starts != sorted(starts) or any(s < 0 for s in starts):
            raise ValueError(f"phase starts must be >= 0 and ascending, got {starts}")
        if starts and self.heal_at < starts[-1]:
            raise ValueError(f"heal_at {self.heal_at} is before the last phase {starts[-1]}")

    @property
    def f(self) -> int:
        return max_faulty(self.n)

    @property
    def honest(self) -> tuple[int, ...]:
        return tuple(m for m in range(self.n) if m not in self.twins)

    def instances(self) -> dict[int, tuple[str, ...]]:
        return instance_names(self.n, self.twins, self.copies)

    def settle_time(self) -> float:
        return 4 * self.view_timeout if self.settle is None else self.settle

    def time_cap(self) -> float:
        if self.max_time is not None:
            return self.max_time
        return (self.heal_at + (self.rounds + 2) * 4 * self.view_timeout
                + self.settle_time())

    def scenario(self) -> Scenario:
        """The scenario file this run corresponds to (twins as "honest" Byzantine nodes)."""
        data: dict[str, Any] = {
            "name": f"twins-{self.index if self.index is not None else 'custom'}",
            "seed": self.seed,
            "nodes": {"count": self.n},
            "workload": {"kind": "linear", "dim": self.dim},
            "training": {"rounds": self.rounds, "lr": self.lr, "momentum": self.momentum,
                         "aggregator": self.aggregator, "votes": self.votes,
                         "step_time": self.step_time,
                         "round_timeout": self.round_timeout,
                         "view_timeout": self.view_timeout},
            "byzantine": ([{"nodes": list(self.twins), "behaviour": "honest"}]
                          if self.twins else []),
            "unsafe": self.unsafe,
            "record": "none",
        }
        return Scenario.model_validate(data)

    def describe(self) -> str:
        """The schedule, one phase a line (e.g. for an assertion message)."""
        lines = [f"n={self.n} twins={list(self.twins)} seed={self.seed} index={self.index} "
                 f"rounds={self.rounds} heal_at={self.heal_at:g}"]
        for p in self.schedule:
            cells = " | ".join("{" + ",".join(sorted(c)) + "}" for c in p.cells)
            lines.append(f"  t={p.start:g} leader={p.leader}: {cells}")
        return "\n".join(lines)


# ---- the outcome --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Exclusion:
    """An instance verified (or found) a proof that `offender` equivocated."""

    offender: int
    round: int
    at: float
    proof: bytes  # the signed Evidence frame
    slot: tuple[int, ...] | None  # the slot both conflicting frames fill (see `slot_of`)
    what: str  # e.g. "vote r1 v0 phase 2", "gradient r2"


@dataclass(frozen=True, slots=True)
class MemberOutcome:
    instance: str
    member: int
    commits: dict[int, tuple[bytes, bytes]]  # round -> (model hash, set digest)
    views: dict[int, int]  # round -> the view its commit certificate is from
    commit_log: tuple[tuple[int, bytes], ...]  # every RoundCommitted, in order
    exclusions: dict[int, Exclusion]  # offender -> the first exclusion
    finished_at: float | None  # when it emitted Finished (None: never)
    round: int
    view: int
    rejections: dict[str, int]

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    @property
    def excluded(self) -> frozenset[int]:
        return frozenset(self.exclusions)


@dataclass(frozen=True, slots=True)
class SafetyViolation:
    round: int
    a: str  # instance names (equal when one member committed a round twice, differently)
    b: str
    hash_a: bytes
    hash_b: bytes

    def __str__(self) -> str:
        return (f"round {self.round}: {self.a} committed {self.hash_a.hex()[:12]}, "
                f"{self.b} committed {self.hash_b.hex()[:12]}")


@dataclass(frozen=True, slots=True)
class Delivery:
    """One frame handed to an instance (recorded with `record=True`)."""

    sent_at: float
    at: float
    src: str
    dst: str
    kind: int
    round: int


@dataclass
class TwinsResult:
    scenario: TwinsScenario
    honest: dict[int, MemberOutcome]  # untwinned member -> its outcome
    twins: dict[str, MemberOutcome]  # twin instance -> its outcome
    end_time: float
    events: int
    delivered: int
    dropped: int  # frames a partition cut
    # offline forensics: member -> two frames it signed that no honest node signs both of (one
    # slot twice, or a broken lock), found in the union of the honest members' logs
    log_evidence: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)

    def safety_violations(self) -> list[SafetyViolation]:
        """Rounds two honest members committed with different model hashes (or one member
        committed twice, differently)."""
        out: list[SafetyViolation] = []
        for o in self.honest.values():
            first: dict[int, bytes] = {}
            for rnd, h in o.commit_log:
                if first.setdefault(rnd, h) != h:
                    out.append(SafetyViolation(rnd, o.instance, o.instance, first[rnd], h))
        members = sorted(self.honest)
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                ca, cb = self.honest[a].commits, self.honest[b].commits
                for rnd in sorted(set(ca) & set(cb)):
                    if ca[rnd][0] != cb[rnd][0]:
                        out.append(SafetyViolation(rnd, self.honest[a].instance,
                                                   self.honest[b].instance, ca[rnd][0],
                                                   cb[rnd][0]))
        return out

    def missing_rounds(self) -> dict[int, list[int]]:
        """Honest member -> the planned rounds it did not commit (empty when all did)."""
        want = range(self.scenario.rounds)
        return {m: miss for m, o in self.honest.items()
                if (miss := [r for r in want if r not in o.commits])}

    def log_culprits(self) -> frozenset[int]:
        """The members the honest logs together prove equivocated (offline forensics)."""
        return frozenset(self.log_evidence)

    def culprits(self) -> dict[int, frozenset[int]]:
        """Honest member -> the members it excluded for equivocation."""
        return {m: o.excluded for m, o in self.honest.items()}

    def summary(self) -> str:
        """What each honest member (and each twin instance) holds: for the report of a failure."""
        lines = [self.scenario.describe(), f"ended at t={self.end_time:g} after {self.events} "
                 f"events ({self.delivered} delivered, {self.dropped} cut)"]
        for o in [*self.honest.values(), *self.twins.values()]:
            commits = " ".join(f"r{r}={h.hex()[:8]}/{d.hex()[:6]}@v{o.views.get(r)}"
                               for r, (h, d) in sorted(o.commits.items()))
            excl = " ".join(f"{m}({e.what} @t={e.at:g})"
                            for m, e in sorted(o.exclusions.items()))
            done = f" finished@{o.finished_at:g}" if o.finished_at is not None else ""
            rejected = " ".join(f"{k}x{v}" for k, v in sorted(o.rejections.items()))
            lines.append(f"  {o.instance:>3}: round {o.round} view {o.view}{done}; commits "
                         f"{commits or '-'}; excluded {excl or '-'}; rejected {rejected or '-'}")
        return "\n".join(lines)


# ---- the executor ------------------------------------------------------------------------

_DELIVER, _TIMER, _COMPUTED = 0, 1, 2


class _Instance:
    """Carries out one instance's actions in its `TwinsRun` (engine/driver.py)."""

    def __init__(self, run: TwinsRun, name: str) -> None:
        self.run, self.name = run, name

    def broadcast(self, frame: bytes, kind: int, rnd: int) -> None:
        own = self.run.member_of[self.name]
        for m in range(self.run.scenario.n):
            if m != own:
                self.run._send(self.name, m, frame, kind, rnd)

    def send(self, peer: int, frame: bytes, kind: int, rnd: int) -> None:
        if peer != self.run.member_of[self.name] and 0 <= peer < self.run.scenario.n:
            self.run._send(self.name, peer, frame, kind, rnd)

    def set_timer(self, name: str, delay: float) -> None:
        run = self.run
        token = run._timers[self.name][name] = next(run._order)
        run._push(run.now + delay, _TIMER, self.name, (name, token))

    def cancel_timer(self, name: str) -> None:
        self.run._timers[self.name].pop(name, None)

    def compute(self, job: Job) -> None:
        run = self.run
        start = max(run.now, run._compute_free[self.name])
        done = run._compute_free[self.name] = start + run.scenario.step_time * job.cost
        run._push(done, _COMPUTED, self.name, (job, job.run()))

    def persist(self, key: str, value: Stored) -> None:
        self.run.disks[self.name][key] = value

    def emit(self, metric: Metric) -> None:
        self.run.metrics[self.name].append((self.run.now, metric))

    def load(self, token: int, keys: tuple[str, ...]) -> None:
        disk = self.run.disks[self.name]  # answered at once: the run stays deterministic
        self.run.feed(self.name, Loaded(token, tuple(disk.get(k) for k in keys)))


class TwinsRun:
    """One twins scenario's world: the instances, the heap, the partitions, what came out."""

    def __init__(self, scenario: TwinsScenario, record: bool = False) -> None:
        self.scenario = s = scenario
        self.spec = spec = s.scenario()
        rngs = RngStreams(spec.seed)
        self.workload = workload_for(spec, rngs)
        self.identities, self.opener, _ = member_keys(spec)
        byzantine = {node: b for b in spec.byzantine for node in b.nodes}
        colluders = frozenset(byzantine)
        self.by_member = s.instances()
        self.member_of = {i: m for m, insts in self.by_member.items() for i in insts}
        self.nodes: dict[str, Node] = {}
        for m, insts in self.by_member.items():
            for inst in insts:
                b = byzantine.get(m)
                behaviour = make_behaviour(b.behaviour, b.from_round, colluders,
                                           rngs.seed("byzantine"), **b.params) if b else None
                self.nodes[inst] = Node(node_config(spec, m), self.identities[m],
                                        self.workload, self.opener, behaviour)
        self.now = 0.0
        self.events = self.delivered = self.dropped = 0
        self.record = record
        self.deliveries: list[Delivery] = []
        self.metrics: dict[str, list[tuple[float, Metric]]] = {i: [] for i in self.nodes}
        self.disks: dict[str, dict[str, Stored]] = {i: {} for i in self.nodes}
        self._heap: list[tuple[float, int, int, str, Any]] = []
        self._order = itertools.count()
        self._timers: dict[str, dict[str, int]] = {i: {} for i in self.nodes}
        self._compute_free: dict[str, float] = dict.fromkeys(self.nodes, 0.0)
        # each phase's instance -> cell number (unlisted instances share cell -1)
        self._phases = [(p.start, {i: k for k, cell in enumerate(p.cells) for i in cell})
                        for p in s.schedule]
        self._honest = [i for m in s.honest for i in self.by_member[m]]
        self._drivers = {i: _Instance(self, i) for i in self.nodes}

    # -- partitions ---------------------------------------------------------------------------
    def cells_at(self, t: float) -> dict[str, int] | None:
        """Instance -> cell number at time `t`; None when everyone is in one cell."""
        if t >= self.scenario.heal_at:
            return None
        current = None
        for start, cells in self._phases:
            if start > t:
                break
            current = cells
        return current

    def connected(self, a: str, b: str, t: float) -> bool:
        cells = self.cells_at(t)
        return cells is None or cells.get(a, -1) == cells.get(b, -1)

    # -- the heap -----------------------------------------------------------------------------
    def _push(self, at: float, what: int, inst: str, payload: Any) -> None:
        heapq.heappush(self._heap, (at, next(self._order), what, inst, payload))

    def feed(self, inst: str, event: Event) -> None:
        actions = self.nodes[inst].handle(event, self.now)
        if actions:
            dispatch(actions, self._drivers[inst])

    def _send(self, src: str, member: int, frame: bytes, kind: int, rnd: int) -> None:
        for dst in self.by_member[member]:
            if self.connected(src, dst, self.now):
                self._push(self.now + self.scenario.delay, _DELIVER, dst,
                           (frame, src, self.now, kind, rnd))
            else:
                self.dropped += 1

    # -- running ------------------------------------------------------------------------------
    def honest_finished(self) -> bool:
        return all(self.nodes[i].finished for i in self._honest)

    def run(self) -> TwinsResult:
        s = self.scenario
        cap, stop_at = s.time_cap(), None
        for inst in self.nodes:
            self.feed(inst, Started())
        while self._heap:
            at = self._heap[0][0]
            if stop_at is None and self.honest_finished():
                stop_at = max(self.now, s.heal_at) + s.settle_time()
            if at > cap or (stop_at is not None and at > stop_at):
                break
            _, _, what, inst, payload = heapq.heappop(self._heap)
            self.now = at
            self.events += 1
            if what == _DELIVER:
                frame, src, sent, kind, rnd = payload
                self.delivered += 1
                if self.record:
                    self.deliveries.append(Delivery(sent, at, src, inst, kind, rnd))
                self.feed(inst, Received(frame))
            elif what == _TIMER:
                name, token = payload
                if self._timers[inst].get(name) == token:
                    del self._timers[inst][name]
                    self.feed(inst, TimerFired(name))
            else:
                job, result = payload
                self.feed(inst, ComputeDone(job, result))
        return self.result()

    # -- what came out --------------------------------------------------------------------------
    def outcome(self, inst: str) -> MemberOutcome:
        node, disk = self.nodes[inst], self.disks[inst]
        log: list[tuple[int, bytes]] = []
        views: dict[int, int] = {}
        exclusions: dict[int, Exclusion] = {}
        rejections: dict[str, int] = {}
        finished_at: float | None = None
        for at, metric in self.metrics[inst]:
            match metric:
                case RoundCommitted():
                    log.append((metric.round, metric.model_hash))
                    views.setdefault(metric.round, metric.view)
                case Excluded():
                    if metric.offender not in exclusions:
                        exclusions[metric.offender] = self._exclusion(metric, at)
                case Rejected():
                    rejections[metric.reason] = rejections.get(metric.reason, 0) + 1
                case Finished():
                    finished_at = at if finished_at is None else finished_at
        commits: dict[int, tuple[bytes, bytes]] = {}
        for rnd, h in log:
            if rnd in commits:
                continue
            record = disk.get(f"log/{rnd}")
            digest = b""
            if isinstance(record, RoundRecord):
                p = self.opener(record.proposal).message
                if isinstance(p, Proposal):
                    digest = set_digest(p)
            commits[rnd] = (h, digest)
        return MemberOutcome(inst, self.member_of[inst], commits, views, tuple(log), exclusions,
                             finished_at, node.round, node.view, rejections)

    def _exclusion(self, metric: Excluded, at: float) -> Exclusion:
        slot: tuple[int, ...] | None = None
        what = "?"
        try:
            ev = self.opener(metric.proof).message
            if isinstance(ev, Evidence):
                first = self.opener(ev.first)
                slot = slot_of(first)
                what = _describe(first)
        except DecodeError:
            what = "undecodable proof"
        return Exclusion(metric.offender, metric.round, at, metric.proof, slot, what)

    def result(self) -> TwinsResult:
        s = self.scenario
        honest = {m: self.outcome(self.by_member[m][0]) for m in s.honest}
        twins = {i: self.outcome(i) for m in s.twins for i in self.by_member[m]}
        return TwinsResult(s, honest, twins, self.now, self.events, self.delivered, self.dropped,
                           self.log_evidence(), self.deliveries)

    def log_evidence(self) -> dict[int, tuple[bytes, bytes]]:
        """Equivocation provable from the honest members' logs alone (what an auditor holding
        every honest log finds, whether or not any node met the two frames online)."""
        records = [record for inst in self._honest
                   for key, record in sorted(self.disks[inst].items())
                   if key.startswith("log/") and isinstance(record, RoundRecord)]
        found: dict[int, tuple[bytes, bytes]] = {}
        for first, second in equivocations(e for r in records for e in signed_in(r, self.opener)):
            found.setdefault(first.sender, (first.frame, second.frame))
        return found


def _describe(env: Envelope) -> str:
    m = env.message
    if isinstance(m, Vote):
        return f"vote r{m.round} v{m.view} phase {m.phase}"
    if isinstance(m, Proposal):
        return f"proposal r{m.round} v{m.view}"
    if isinstance(m, Gradient):
        return f"gradient r{m.round}"
    return type(m).__name__


def run_twins(scenario: TwinsScenario, record: bool = False) -> TwinsResult:
    """Run one twins scenario to its end (see the module docstring); `record` keeps every
    delivery in `TwinsResult.deliveries`."""
    return TwinsRun(scenario, record).run()


# ---- the enumeration -----------------------------------------------------------------------


def draw_scenario(n: int, twins: Sequence[int] | int, seed: int, index: int, *,
                  max_phases: int = 4, split_twins: float = 0.5, unsafe: bool = False,
                  **params: Any) -> TwinsScenario:
    """The `index`-th schedule of the enumeration (see `enumerate_scenarios`)."""
    twin_ids = _twin_ids(n, twins)
    if len(twin_ids) > max_faulty(n) and not unsafe:
        raise ValueError(f"{len(twin_ids)} twins but n={n} tolerates f={max_faulty(n)} "
                         f"(n >= 3f+1); pass unsafe=True to run it anyway")
    base = TwinsScenario(n, twin_ids, seed=seed, unsafe=unsafe, index=index, **params)
    rng = RngStreams(seed).stream("twins", n, *twin_ids, index)
    names = base.instances()
    every = [i for m in range(n) for i in names[m]]
    d, rt, vt = base.delay, base.round_timeout, base.view_timeout
    lengths = (d, 2 * d, 3 * d, 5 * d, rt, vt, 2 * vt)  # a hop ... two view timeouts
    t = 0.0 if rng.random() < 0.5 else float(lengths[int(rng.integers(0, 5))])
    phases: list[Phase] = []
    for _ in range(int(rng.integers(1, max_phases + 1))):
        leader = int(rng.integers(0, n))
        first = names[leader][int(rng.integers(0, len(names[leader])))]
        others = [i for i in every if i != first]
        order = [others[k] for k in rng.permutation(len(others))]
        size = int(rng.integers(0, len(others) + 1))  # who shares the leader's cell
        cells = [{first, *order[:size]}]
        rest = order[size:]
        if rest:
            extra = int(rng.integers(1, 3))  # the others form one or two more cells
            split = [set[str]() for _ in range(extra)]
            for k, inst in enumerate(rest):
                split[k if k < extra else int(rng.integers(0, extra))].add(inst)
            cells += [c for c in split if c]
        if len(cells) > 1 and rng.random() < split_twins:  # Twins' point: copies apart
            for m in twin_ids:
                for home, cell in enumerate(cells):
                    here = [i for i in names[m] if i in cell]
                    if len(here) > 1:  # move one copy (not the leader's) elsewhere
                        mover = next(i for i in reversed(here) if i != first)
                        away = (home + 1 + int(rng.integers(0, len(cells) - 1))) % len(cells)
                        cell.discard(mover)
                        cells[away].add(mover)
                        break
        phases.append(Phase(t, tuple(frozenset(c) for c in cells), leader))
        t += float(lengths[int(rng.integers(0, len(lengths)))])
    return TwinsScenario(n, twin_ids, tuple(phases), t, seed=seed, unsafe=unsafe, index=index,
                         **params)


def enumerate_scenarios(n: int, twins: Sequence[int] | int, seed: int, count: int, *,
                        max_phases: int = 4, split_twins: float = 0.5, unsafe: bool = False,
                        **params: Any) -> list[TwinsScenario]:
    """`count` seeded partition schedules for n members with `twins` twinned (their ids, or
    how many: then the highest ids). Each has 1..`max_phases` phases of 1 to 3 cells, built
    around a drawn leader instance and the instances that share its cell, and heals at the
    end. With probability `split_twins` a phase of several cells then moves one copy of each
    twin that shares a cell with its other copy to another cell (a twin whose copies stay
    together behaves like one honest node). `params` are `TwinsScenario` fields (rounds,
    timeouts, delay, ...)."""
    return [draw_scenario(n, twins, seed, i, max_phases=max_phases, split_twins=split_twins,
                          unsafe=unsafe, **params) for i in range(count)]


def _twin_ids(n: int, twins: Sequence[int] | int) -> tuple[int, ...]:
    if isinstance(twins, int):
        if not 0 <= twins <= n:
            raise ValueError(f"twins must be 0..{n}, got {twins}")
        return tuple(range(n - twins, n))
    ids = tuple(sorted(set(twins)))
    instance_names(n, ids)  # range check
    return ids
