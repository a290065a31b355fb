"""The sans-IO Node: `handle(event, now) -> list[Action]`, and nothing else reaches it.

A node is a set of services (engine/node/service.py) around the state every one of them reads,
the head of the chain: the next round, its view, the model and the optimizer's state. The
built-in services are the round protocol (protocol.py, with its incoming traffic in inbox.py),
view changes (views.py), accountability (accountability.py), state sync by records (sync.py)
and by checkpoint (checkpoints.py), and membership (membership.py); a caller adds more
(`services=`), each with its own message kinds, timers and say in every round. Beside them,
frame intake and validation (intake.py) and the sender path (sender.py). What is persisted
is typed in persisted.py.

Everything a part does goes out through the helpers here (`broadcast`, `send`, `persist`,
`emit`, `set_timer`, `compute`, `reject`), in the order it happens: the node's actions for an
event are one list, carried out in order by whichever driver runs it (engine/driver.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from phalanx.engine.byzantine import Behaviour
from phalanx.engine.events import (
    Action,
    Broadcast,
    Compute,
    ComputeDone,
    Emit,
    Event,
    Finished,
    Job,
    LinkConditions,
    Load,
    Loaded,
    LocalAnswer,
    LocalRequest,
    Metric,
    PeerReachability,
    Persist,
    Received,
    Rejected,
    RequestChange,
    Send,
    SetTimer,
    Started,
    Stored,
    TimerFired,
)
from phalanx.engine.node.accountability import Accountability
from phalanx.engine.node.checkpoints import CheckpointSync
from phalanx.engine.node.config import NodeConfig
from phalanx.engine.node.detector import FailureDetector
from phalanx.engine.node.inbox import RoundInbox
from phalanx.engine.node.intake import Intake
from phalanx.engine.node.membership import Membership
from phalanx.engine.node.persisted import SavedState
from phalanx.engine.node.protocol import RoundProtocol
from phalanx.engine.node.sender import Sender
from phalanx.engine.node.service import Disk, ProtocolError, Service
from phalanx.engine.node.sync import RecordSync
from phalanx.engine.node.views import Views
from phalanx.engine.optim import GroupedOptimizer, Optimizer, make_optimizer
from phalanx.engine.workloads import Workload
from phalanx.net.codec import CORE, MessageSet
from phalanx.net.crypto import Identity, sha256
from phalanx.net.envelope import Envelope, seal
from phalanx.net.errors import DecodeError
from phalanx.net.messages import Epoch, Gradient, Message, Proposal, RoundRecord

Opener = Callable[[bytes], Envelope]


def message_set(services: Iterable[type[Service]] = ()) -> MessageSet:
    """The kinds a node with these extra services decodes: the core ones plus theirs. A
    driver builds its frame opener with it (`FrameOpener(..., messages=...)`)."""
    return CORE.extended(cls for service in services for cls in service.messages)


class Node:
    """One member (or follower) of a run. `opener` checks and decodes frames (a driver builds
    it over the members' keys and `message_set(services)`); `behaviour` rewrites what a
    Byzantine node sends; `services` are service classes beyond the built-in ones, each
    constructed with the node."""

    def __init__(self, config: NodeConfig, identity: Identity, workload: Workload,
                 opener: Opener, behaviour: Behaviour | None = None,
                 services: Sequence[type[Service]] = ()) -> None:
        self.config = config
        self.id = config.node_id
        self.identity = identity
        self.workload = workload
        self.open = opener
        self.behaviour = behaviour or Behaviour()
        self._rewrites = behaviour is not None  # an honest node's actions go out untouched
        sender_adam = config.worker_optimizer == "adam"  # `momentum` is then its beta1
        momentum = 0.0 if sender_adam else config.momentum
        groups = workload.parameter_groups()
        self.optimizer: Optimizer | GroupedOptimizer = (
            GroupedOptimizer(config.optimizer, config.lr, momentum, groups) if groups
            else make_optimizer(config.optimizer, config.lr, momentum))
        self.rejections: Counter[str] = Counter()
        self.reputation: dict[int, float] = {}
        # the head of the chain: what every part reads
        self.round = 0
        self.view = 0
        self.finished = False
        self.seq = 0
        self.now = 0.0
        self.params = workload.init_params()
        self.velocity = self.optimizer.init_state(self.params)  # the optimizer's state
        self.model_hash = sha256(self.params.tobytes())
        self.last_update = np.zeros_like(self.params)  # the last committed aggregate
        # who may lead: the members the last committed set named (None: all, before round 1)
        self.last_set: frozenset[int] | None = None
        self._leaders: tuple[int, ...] = ()  # cached; () until first asked after a change
        self.out: list[Action] = []  # the actions of the event being handled
        # reads from the disk asked of the driver (`load`), by token: what to do with each
        self._loads: dict[int, Callable[[tuple[Stored | None, ...]], None]] = {}
        self._load_token = 0
        # the parts (each reads the ones built before it)
        self.sender = Sender(self)
        self.detector = FailureDetector(self)
        self.accountability = Accountability(self)
        self.membership = Membership(self)
        self.protocol = RoundProtocol(self)
        self.inbox = RoundInbox(self)
        self.views = Views(self)
        self.sync = RecordSync(self)
        self.checkpoints = CheckpointSync(self)
        self.extra_services = tuple(cls(self) for cls in services)
        self.services: tuple[Service, ...] = (
            self.protocol, self.views, self.accountability, self.sync, self.checkpoints,
            self.membership, *self.extra_services)
        self._by_name = {s.name: s for s in self.services}
        if len(self._by_name) != len(self.services):
            raise ProtocolError(f"two services share a name: {[s.name for s in self.services]}")
        self.intake = Intake(self, self.services)
        self._on_frame = self.intake.on_frame
        self.membership.set_members(self.membership.epochs[0].members)

    @property
    def settled(self) -> bool:
        """Finished: a driver may stop once every running honest node is."""
        return self.finished

    # ---- the one entry point ------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Action]:
        self.now, self.out = now, []
        if type(event) is Received:  # one per delivered frame: skip the pattern match
            self._on_frame(event.frame)
            return self.behaviour.outgoing(self.out, self) if self._rewrites else self.out
        match event:
            case TimerFired(name):
                self._on_timer(name)
            case ComputeDone(job, result):
                self.sender.on_computed(job, result)
            case Started(disk, lost_disk):
                self._restore(disk, lost_disk)
                self.protocol.start_round()
                for service in self.services:
                    service.start()
            case RequestChange(op):
                self.membership.request_change(op)
            case LinkConditions():
                self.sender.link = event
            case PeerReachability(peer, reachable):
                self.detector.link(peer, reachable)
                self.protocol.advance()  # a leader may stop waiting for it
            case LocalRequest():
                self._on_local(event)
            case Loaded(token, values):
                then = self._loads.pop(token, None)
                if then is None:
                    raise ProtocolError(f"a load this node never asked for: {token}")
                then(values)
        return self.behaviour.outgoing(self.out, self)

    def _on_local(self, request: LocalRequest) -> None:
        service = self._by_name.get(request.service)
        if service is None:
            self.emit(LocalAnswer(self.id, request.service[:40], request.op[:40], request.token,
                                  False, reason="unknown_service",
                                  detail="this node runs no such service"))
            return
        self.emit(service.on_local(request))

    def _on_timer(self, name: str) -> None:
        owner, _, rest = name.partition("/")
        service = self._by_name.get(owner)
        if service is None:
            raise ProtocolError(f"a timer no service armed: {name!r}")
        service.on_timer(rest)

    # ---- what every part does through the node ------------------------------------------

    def leader(self, round: int, view: int) -> int:
        """The leader of `view` of `round` (the current round, or one judged on form only):
        the members the last committed set named take turns (engine/node/detector.py)."""
        leaders = self._leaders or self._eligible()
        return leaders[(round + view) % len(leaders)]

    def _eligible(self) -> tuple[int, ...]:
        members, last = self.membership.members, self.last_set
        if last is None or not self.config.detect_failures:
            self._leaders = members
        else:  # never empty in a run (a set has a quorum of members), but stay total
            self._leaders = tuple(m for m in members if m in last) or members
        return self._leaders

    def set_last_set(self, senders: Iterable[int] | None) -> None:
        """The committed set's senders (or None: unknown) decide who leads the next round."""
        self.last_set = None if senders is None else frozenset(senders)
        self.forget_leaders()

    def forget_leaders(self) -> None:
        """Who may lead changed (a commit, or new members): worked out again when asked."""
        self._leaders = ()

    def sign(self, message: Message) -> bytes:
        """Seal `message` in an envelope signed by this node, with a fresh sequence number."""
        # time-based, so a restarted node (with or without its disk) never reuses a number
        self.seq = max(self.seq + 1, int(self.now * 1_000_000) << 8)
        return seal(self.identity, self.id, self.seq, message)

    def broadcast(self, message: Message) -> bytes:
        frame = self.sign(message)
        self.out.append(Broadcast(frame, type(message).KIND, message.round))
        return frame

    def send(self, peer: int, message: Message) -> None:
        self.send_frame(peer, self.sign(message), message)

    def send_frame(self, peer: int, frame: bytes, message: Message) -> None:
        """Send `frame`, already signed, which seals `message`."""
        self.out.append(Send(peer, frame, type(message).KIND, message.round))

    def set_timer(self, service: Service, name: str, delay: float) -> None:
        self.out.append(SetTimer(f"{service.name}/{name}", delay))

    def compute(self, job: Job) -> None:
        self.out.append(Compute(job))

    def service(self, name: str) -> Service | None:
        """The node's service called `name` (None: the node does not run it)."""
        return self._by_name.get(name)

    def workload_inputs(self) -> dict[str, object]:
        """What the services give the workload for this round's gradient (GradientJob.context)."""
        inputs: dict[str, object] = {}
        for service in self.services:
            inputs.update(service.workload_inputs())
        return inputs

    def persist(self, key: str, value: Stored) -> None:
        self.out.append(Persist(key, value))

    def emit(self, metric: Metric) -> None:
        self.out.append(Emit(metric))

    def load(self, keys: Sequence[str],
             then: Callable[[tuple[Stored | None, ...]], None]) -> None:
        """Ask the driver for what the disk holds under `keys`; `then(values)` runs when it
        answers (`Loaded`), as any event's handler does."""
        self._load_token += 1
        self._loads[self._load_token] = then
        self.out.append(Load(self._load_token, tuple(keys)))

    def reject(self, reason: str, sender: int | None) -> None:
        self.rejections[reason] += 1
        if sender in self.reputation:
            self.reputation[sender] = max(0.0, self.reputation[sender] - 0.05)
        self.out.append(Emit(Rejected(self.id, reason, sender)))

    def finish(self) -> None:
        if not self.finished:
            self.finished = True
            self.emit(Finished(self.id, self.round, self.model_hash))
            self.set_timer(self.accountability, "audit", self.accountability.interval)

    # ---- durable state ---------------------------------------------------------------------

    def saved_state(self) -> SavedState:
        adam = self.sender.adam
        return SavedState(self.round, self.view, self.model_hash, self.params, self.velocity,
                          self.last_update, self.sender.worker_momentum,
                          tuple(self.membership.epochs), adam.to_bytes() if adam else b"")

    def _restore(self, disk: Disk, lost_disk: bool) -> None:
        saved = disk.get("checkpoint")
        if saved is not None:
            self._restore_state(SavedState.read(saved), disk)
        for service in self.services:
            service.restore(disk)
        self.protocol.abstain = lost_disk

    def _restore_state(self, saved: SavedState, disk: Disk) -> None:
        if self.sender.adam is not None and saved.sender_adam:
            self.sender.adam.load(saved.sender_adam)
        self.membership.epochs = list(saved.epochs)
        self.membership.set_members(saved.epochs[-1].members)
        self.round, self.view, self.model_hash = saved.round, saved.view, saved.model_hash
        self.params = np.array(saved.params, dtype=np.float32)  # writable copies
        self.velocity = np.array(saved.velocity, dtype=np.float32)
        self.last_update = np.array(saved.last_update, dtype=np.float32)
        self.sender.worker_momentum = np.array(saved.worker_momentum, dtype=np.float32)
        # the log's unbroken run of rounds up to the checkpoint (a node that started from
        # a peer's checkpoint holds none before it): its newest `history_window` records are
        # read back, the rest stays on disk (only whether each one is there is looked up)
        base = saved.round
        floor = max(0, base - self.config.history_window)
        kept: list[RoundRecord] = []
        while base > floor:
            record = disk.get(f"log/{base - 1}")
            if not isinstance(record, RoundRecord):
                break
            kept.append(record)
            base -= 1
        self.sync.history = kept[::-1]
        if base == floor:
            while base > 0 and f"log/{base - 1}" in disk:
                base -= 1
        self.sync.history_base = base
        last = kept[0] if kept else None  # the record of the round before ours
        self.set_last_set(self.senders_of(last) if last is not None else None)

    def senders_of(self, record: RoundRecord) -> tuple[int, ...] | None:
        """The senders a committed round's set named (None: its proposal does not open)."""
        try:
            proposal = self.open(record.proposal).message
        except DecodeError:
            return None
        return proposal.senders if isinstance(proposal, Proposal) else None

    # ---- what drivers, behaviours, audits and operators read or ask ----------------------

    @property
    def members(self) -> tuple[int, ...]:
        return self.membership.members

    @property
    def n(self) -> int:
        return self.membership.n

    @property
    def f(self) -> int:
        return self.membership.f

    @property
    def quorum(self) -> int:
        return self.membership.quorum

    @property
    def follower(self) -> bool:
        return self.membership.follower

    @property
    def epochs(self) -> list[Epoch]:
        return self.membership.epochs

    @property
    def epoch(self) -> int:
        return self.membership.epoch

    @property
    def excluded(self) -> Mapping[int, bytes]:
        return self.accountability.excluded

    @property
    def history(self) -> list[RoundRecord]:
        return self.sync.history

    @property
    def history_base(self) -> int:
        return self.sync.history_base

    @property
    def worker_momentum(self) -> np.ndarray:
        return self.sender.worker_momentum

    def members_at(self, round: int) -> tuple[int, ...]:
        return self.membership.members_at(round)

    def change_problem(self, op: str) -> str | None:
        """Why this node cannot ask to `op` ("join" or "leave") now; None if it can."""
        return self.membership.change_problem(op)

    def admit_observer(self, node_id: int) -> None:
        self.membership.admit_observer(node_id)

    def replay(self, records: list[RoundRecord]) -> str | None:
        return self.sync.replay(records)

    def replay_from(self, base: bytes) -> str | None:
        return self.checkpoints.replay_from(base)

    def gradients(self, round: int) -> Mapping[int, Envelope]:
        """The gradients of `round` held so far, by sender (read-only use)."""
        return self.protocol.grads.get(round, {})

    def adopt_gradient(self, env: Envelope) -> None:
        """Hold `env` (signed by us) as our gradient of its round: a Byzantine behaviour that
        replaced what we broadcast keeps the node's own view consistent with it."""
        self.protocol.grads.setdefault(env.round, {})[self.id] = env

    def dense(self, env: Envelope) -> np.ndarray:
        return self.sender.dense(env)

    def with_values(self, g: Gradient, values: np.ndarray) -> Gradient:
        return self.sender.with_values(g, values)
