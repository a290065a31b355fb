"""Shared harness for the Node tests (`test_node.py`, `test_node_fuzz.py`,
`test_consensus.py`): a four-member cluster's constants, a `Kit` holding everything tied to one
seed (identities, keyring, opener, workload, frame forging, node factory), and `Pump`, a tiny
deterministic message pump.

The pump keeps one FIFO queue of (destination, event). Compute actions really run their job and
queue a ComputeDone for the node; Broadcast/Send queue Received(frame) for the peers, unless the
`drop` rule (on the header: src, dst, kind, round) says otherwise, and after the `rewrite` hook
(on the frame, per destination: deliver nothing, the frame, or other frames, e.g. forged ones);
SetTimer arms a timer with a deadline on the pump's clock, fired only when a test asks (by hand,
or `advance()` for the earliest one); Persist writes to the node's disk dict; Emit collects
metrics per node. `crash`/`restart` model a process dying (its queued events and timers lost)
and coming back with or without its disk.

`conftest.py` puts this folder on `sys.path` (importlib mode does not) and has pytest rewrite the
asserts here as it does in the test modules.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from phalanx.engine.driver import dispatch
from phalanx.engine.events import (
    Action,
    Broadcast,
    ComputeDone,
    Emit,
    Event,
    Excluded,
    Finished,
    Job,
    Loaded,
    Metric,
    Received,
    Rejected,
    RoundCommitted,
    Send,
    Started,
    Stored,
    TimerFired,
    ViewChanged,
)
from phalanx.engine.node import Node, NodeConfig
from phalanx.engine.rng import RngStreams
from phalanx.engine.workloads.linear import LinearRegression
from phalanx.net.crypto import Identity, sha256
from phalanx.net.envelope import Envelope, open_frame, seal
from phalanx.net.messages import Message, Vote

N = 4
DIM = 4
MEMBERS = tuple(range(N))
ZERO_HASH = sha256(np.zeros(DIM, dtype=np.float32).tobytes())


def config(node_id: int, rounds: int = 5, **kw: object) -> NodeConfig:
    base: dict[str, object] = dict(
        node_id=node_id,
        members=MEMBERS,
        rounds=rounds,
        lr=0.1,
        momentum=0.9,
        round_timeout=1.0,
        view_timeout=4.0,
    )
    base.update(kw)
    return NodeConfig(**base)  # type: ignore[arg-type]


def rejections_of(actions: list[Action]) -> list[Rejected]:
    return [a.metric for a in actions if isinstance(a, Emit) and isinstance(a.metric, Rejected)]


# ---- the pump -------------------------------------------------------------------------------

Drop = Callable[[int, int, int, int], bool]  # (src, dst, kind, round) -> drop?
Rewrite = Callable[[int, int, bytes], Iterable[bytes]]  # (src, dst, frame) -> frames to deliver


@dataclass
class Pump:
    nodes: dict[int, Node]
    drop: Drop = lambda src, dst, kind, rnd: False
    rewrite: Rewrite | None = None
    open: Callable[[bytes], Envelope] | None = None  # for `sent_by`
    now: float = 0.0
    queue: deque[tuple[int, Event]] = field(default_factory=deque)
    timers: dict[int, dict[str, float]] = field(default_factory=dict)
    metrics: dict[int, list[object]] = field(default_factory=dict)
    disks: dict[int, dict[str, Stored]] = field(default_factory=dict)
    sent: list[tuple[int, int, bytes]] = field(default_factory=list)  # (src, dst, frame)
    log: list[tuple[int, Action]] = field(default_factory=list)  # every action, in order
    steps: int = 0

    def __post_init__(self) -> None:
        for i in self.nodes:
            self.timers.setdefault(i, {})
            self.metrics.setdefault(i, [])
            self.disks.setdefault(i, {})

    # -- feeding ---------------------------------------------------------------------------
    def feed(self, node: int, event: Event) -> list[Action]:
        actions = self.nodes[node].handle(event, self.now)
        assert isinstance(actions, list)
        self.log.extend((node, a) for a in actions)
        self.execute(node, actions)
        return actions

    def execute(self, src: int, actions: list[Action]) -> None:
        dispatch(actions, _PumpDriver(self, src))

    def _deliver(self, src: int, dst: int, frame: bytes, kind: int, rnd: int) -> None:
        if dst not in self.nodes or self.drop(src, dst, kind, rnd):
            return
        for out in (self.rewrite(src, dst, frame) if self.rewrite else (frame,)):
            self.sent.append((src, dst, out))
            self.queue.append((dst, Received(out)))

    def start(self, disks: dict[int, dict[str, Stored]] | None = None) -> None:
        for i in self.nodes:
            self.feed(i, Started(dict((disks or {}).get(i, {}))))

    def crash(self, node: int) -> None:
        """The process dies: its queued events and armed timers are lost (its disk is not)."""
        self.queue = deque((d, e) for d, e in self.queue if d != node)
        self.timers[node].clear()

    def restart(self, node: int, fresh: Node, keep_disk: bool = True) -> list[Action]:
        """`fresh` takes `node`'s place, started as a restart with its disk or an empty one."""
        self.crash(node)
        self.nodes[node] = fresh
        if not keep_disk:
            self.disks[node] = {}
        return self.feed(node, Started(dict(self.disks[node]), lost_disk=not keep_disk))

    def run(self, until: Callable[[], bool] | None = None, max_steps: int = 20_000) -> None:
        """Deliver queued events until the queue is empty (or `until()` holds)."""
        while self.queue:
            if until is not None and until():
                return
            self.steps += 1
            assert self.steps < max_steps, "pump does not settle"
            dst, event = self.queue.popleft()
            self.feed(dst, event)

    # -- timers ----------------------------------------------------------------------------
    def fire(self, node: int, name: str) -> list[Action]:
        assert name in self.timers[node], f"{name} is not armed at node {node}"
        del self.timers[node][name]
        return self.feed(node, TimerFired(name))

    def advance(self, only: tuple[int, ...] | None = None) -> bool:
        """Move the clock to the earliest armed timer (of an unfinished node, of `only` if
        given) and fire it."""
        armed = [
            (at, i, name)
            for i, ts in self.timers.items()
            for name, at in ts.items()
            if not self.nodes[i].finished and (only is None or i in only)
        ]
        if not armed:
            return False
        at, i, name = min(armed)
        self.now = max(self.now, at)
        self.fire(i, name)
        return True

    def run_to_end(self, nodes: tuple[int, ...] | None = None, max_timers: int = 200) -> None:
        """Run, firing timers whenever the queue is empty, until `nodes` have all finished."""
        watch = nodes if nodes is not None else tuple(self.nodes)
        for _ in range(max_timers):
            self.run()
            if all(self.nodes[i].finished for i in watch):
                return
            if not self.advance():
                break
        raise AssertionError(f"not finished: rounds {[self.nodes[i].round for i in watch]}")

    # -- what came out ---------------------------------------------------------------------
    def commits(self, node: int) -> list[RoundCommitted]:
        return [m for m in self.metrics[node] if isinstance(m, RoundCommitted)]

    def rejected(self, node: int) -> list[Rejected]:
        return [m for m in self.metrics[node] if isinstance(m, Rejected)]

    def finished(self, node: int) -> list[Finished]:
        return [m for m in self.metrics[node] if isinstance(m, Finished)]

    def excluded(self, node: int) -> list[Excluded]:
        return [m for m in self.metrics[node] if isinstance(m, Excluded)]

    def view_changes(self, node: int) -> list[ViewChanged]:
        return [m for m in self.metrics[node] if isinstance(m, ViewChanged)]

    def sent_by(self, node: int, kind: type | None = None, since: int = 0) -> list[Envelope]:
        """What `node` sent (from `self.sent[since:]`), each frame once, opened; only messages
        of type `kind` if given."""
        assert self.open is not None, "the pump needs an opener"
        frames = dict.fromkeys(f for s, _, f in self.sent[since:] if s == node)
        envs = [self.open(f) for f in frames]
        return [e for e in envs if kind is None or isinstance(e.message, kind)]

    def signed_by(self, node: int, kind: type | None = None, since: int = 0) -> list[Envelope]:
        """What `node` signed and sent (Broadcast/Send actions in `self.log[since:]`, whether
        or not a rule let them through), opened; only messages of type `kind` if given."""
        assert self.open is not None, "the pump needs an opener"
        envs = [self.open(a.frame) for i, a in self.log[since:]
                if i == node and isinstance(a, Broadcast | Send)]
        return [e for e in envs if kind is None or isinstance(e.message, kind)]

    def votes_by(self, node: int) -> dict[tuple[int, int, int], set[bytes]]:
        """(round, view, phase) -> the digests of the votes `node` signed for that slot."""
        slots: dict[tuple[int, int, int], set[bytes]] = {}
        for env in self.signed_by(node, Vote):
            v: Vote = env.message  # type: ignore[assignment]
            slots.setdefault((v.round, v.view, v.phase), set()).add(env.digest)
        return slots


@dataclass
class _PumpDriver:
    """Carries out one node's actions on the pump (engine/driver.py)."""

    pump: Pump
    src: int

    def broadcast(self, frame: bytes, kind: int, rnd: int) -> None:
        for dst in self.pump.nodes:
            if dst != self.src:
                self.pump._deliver(self.src, dst, frame, kind, rnd)

    def send(self, peer: int, frame: bytes, kind: int, rnd: int) -> None:
        self.pump._deliver(self.src, peer, frame, kind, rnd)

    def set_timer(self, name: str, delay: float) -> None:
        self.pump.timers[self.src][name] = self.pump.now + delay

    def cancel_timer(self, name: str) -> None:
        self.pump.timers[self.src].pop(name, None)

    def compute(self, job: Job) -> None:
        self.pump.queue.append((self.src, ComputeDone(job, job.run())))

    def persist(self, key: str, value: Stored) -> None:
        self.pump.disks[self.src][key] = value

    def emit(self, metric: Metric) -> None:
        self.pump.metrics[self.src].append(metric)

    def load(self, token: int, keys: tuple[str, ...]) -> None:
        disk = self.pump.disks[self.src]  # answered at once, as the simulator does
        self.pump.feed(self.src, Loaded(token, tuple(disk.get(k) for k in keys)))


# ---- one seed's cluster ----------------------------------------------------------------------


class Kit:
    """The members' identities, keyring, frame opener and workload for one seed, plus a
    sequence counter for forged frames (each Kit counts on its own)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.ids = [Identity.derive(seed, i) for i in MEMBERS]
        self.keyring = {i: ident.public_key for i, ident in enumerate(self.ids)}
        self.open = partial(open_frame, keyring=self.keyring)
        self.workload = LinearRegression(n_nodes=N, rngs=RngStreams(seed), dim=DIM)
        self._seq = itertools.count(10**15)

    def node(self, node_id: int, rounds: int = 5, **kw: object) -> Node:
        return Node(config(node_id, rounds, **kw), self.ids[node_id], self.workload, self.open)

    def forge(self, sender: int, message: Message, identity: Identity | None = None) -> bytes:
        """A frame from `sender` (signed by its own key unless `identity` says otherwise), with
        a sequence number far from anything the nodes themselves use."""
        return seal(identity or self.ids[sender], sender, next(self._seq), message)

    def cluster(self, rounds: int = 5, drop: Drop | None = None,
                rewrite: Rewrite | None = None, **kw: object) -> Pump:
        nodes = {i: self.node(i, rounds, **kw) for i in MEMBERS}
        pump = Pump(nodes, rewrite=rewrite, open=self.open)
        if drop is not None:
            pump.drop = drop
        return pump

    def unless(self, pred: Callable[[int, int, Envelope], bool]) -> Rewrite:
        """A rewrite hook that drops the frames for which `pred(src, dst, envelope)` holds."""
        def rewrite(src: int, dst: int, frame: bytes) -> list[bytes]:
            return [] if pred(src, dst, self.open(frame)) else [frame]
        return rewrite

    def vote(self, sender: int, round: int, view: int, phase: int, set_digest: bytes,
             model_hash: bytes, identity: Identity | None = None,
             justify_view: int = -1) -> bytes:
        """A vote frame signed by `sender` (or by `identity`)."""
        return self.forge(sender, Vote(round, view, phase, set_digest, model_hash, justify_view),
                          identity)
