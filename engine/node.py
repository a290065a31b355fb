"""The sans-IO Node: `handle(event, now) -> list[Action]`.

A round, with n members of which f < n/3 may be Byzantine, quorum q = 2n//3 + 1 (= n - f):

1. every node computes a gradient on its shard and broadcasts it signed;
2. the leader of (round, view), `members[(round + view) % n]`, proposes a set of gradient
   digests: in the round's first view (the view the previous round committed in, so a leader
   that timed out is skipped) every member's once it holds them all, or at least q of them
   after its gather timeout; in a later view, once q members moved to that view, the set of
   the highest prepare certificate it knows (with the certificate as justification) or else a
   fresh set;
3. PREPARE: a node votes for the view's proposal only if it holds every gradient in the set,
   each validated (signature, round, shape, finite values, norm) and computed on its own model,
   and its lock allows it: a node locked on another set votes only for a proposal justified by
   a prepare certificate from a view at or above its lock's;
4. COMMIT: on q prepare votes of its view a node locks on the set, computes the aggregate and
   the optimizer step, and votes COMMIT with the resulting model hash;
5. on q commit votes for one (view, set, model) a node applies the set (the same bit-exact
   aggregate gives the same hash) and logs the round with its commit certificate;
6. a node whose view times out moves to the next view and broadcasts a ViewChange carrying its
   highest prepare certificate; f + 1 peers ahead pull a node forward to their view, and a
   view's timer starts only once q members moved to it (so out-of-step nodes meet).

Votes go to everyone, or (`votes_to_leader`, for large n) to the view's leader, which broadcasts
each quorum it collects as a `Certified` message. A node missing a gradient that a proposal
names fetches it from the proposer. With `worker_momentum`, a node sends a momentum of its
gradients rather than the gradient itself; with `worker_optimizer` "adam", its own Adam
direction (the shared step is then SGD).

Safety (two commit certificates of a round name one set and model): q commit votes mean more
than n/3 honest nodes locked on the set; a prepare certificate for another set in a later view
needs one of them, which votes for it only if shown a prepare certificate for it from a view at
or above its lock, and by induction there is none. Liveness comes from the view changes: the
locks travel with them, so a later honest leader proposes the set every locked node accepts.

Members join and leave through the rounds themselves (engine/consensus/membership.py): an
observer's signed request to join, or a member's to leave, names the epoch (the changes so
far); the leader carries at most one in its proposal, under the set digest; voters check it
against the round's members; every node that commits the round applies it from the next one.
So the members of a round are a function of the committed rounds before it, the same at every
honest node, and each round's certificates are checked against that round's members.

Nodes that fall behind fetch the committed rounds (proposal, gradients and commit certificate,
all signed frames) and replay them after checking every signature, the certificate and the
resulting hash. Two signed messages of one sender for one slot are evidence of equivocation:
the evidence is broadcast, every honest node verifies it and excludes the sender.

Beyond the fault bound a fork is possible, and it must never be silent. A node that meets a
gradient or record built on another model, and every finished node every two view timeouts
(it asks the next peer in turn for its last round's record), compares the two records of the
round: their gradients, proposals, commit certificates and the prepare certificates they keep.
Signers of two messages for one slot are accused; so are members that broke a lock: a commit
vote for one set in view v beside a prepare vote for another set in a later view that cites a
justification older than v (prepare votes carry the view of the certificate they rely on). When
the round holds no proof, the node fetches the rounds before it, where the fork may have begun.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import msgpack
import numpy as np

from phalanx.engine.aggregate import (
    AggregationContext,
    Aggregator,
    make_aggregator,
    min_inputs,
)
from phalanx.engine.byzantine import Behaviour
from phalanx.engine.compress import NetworkConditions
from phalanx.engine.consensus import (
    OP_NAMES,
    OPS,
    Certificate,
    CheckpointOffers,
    Key,
    VoteBook,
    applied,
    change_problem,
    check_certificate,
    check_checkpoint,
    conflicting,
    equivocations,
    max_faulty,
    members_at,
    quorum,
    signed_in,
    slot_of,
)
from phalanx.engine.encoding import CompressError, GradientEncoding
from phalanx.engine.events import (
    Action,
    Broadcast,
    Compute,
    ComputeDone,
    Emit,
    Event,
    Excluded,
    Finished,
    LinkConditions,
    MembershipChanged,
    Persist,
    Received,
    Rejected,
    RequestChange,
    RoundCommitted,
    Send,
    SetTimer,
    Started,
    TimerFired,
    ViewChanged,
)
from phalanx.engine.optim import SenderAdam, make_optimizer
from phalanx.engine.privacy import clip_and_noise
from phalanx.engine.workloads import GradientJob, GradientResult, Workload
from phalanx.net.crypto import Identity, sha256
from phalanx.net.envelope import Envelope, seal
from phalanx.net.errors import DecodeError
from phalanx.net.messages import (
    COMMIT,
    JOIN,
    LEAVE,
    PREPARE,
    Certified,
    Checkpoint,
    CheckpointRequest,
    Epoch,
    Evidence,
    Fetch,
    Frames,
    Gradient,
    MemberChange,
    Message,
    Proposal,
    RoundRecord,
    SyncRequest,
    SyncResponse,
    ViewChange,
    Vote,
)
from phalanx.net.replay import ReplayGuard

Opener = Callable[[bytes], Envelope]
Result = tuple[np.ndarray, np.ndarray, bytes, np.ndarray]  # params, velocity, model hash and
# the aggregate (the next round's centre for centered clipping) after a round
PROPOSE = 0  # the leader's slot in `_voted`, beside the PREPARE and COMMIT votes
# what members accept from observers (followers, and nodes that left)
FROM_OBSERVERS = (SyncRequest, CheckpointRequest, MemberChange)

__all__ = ["MAX_VIEW", "Node", "NodeConfig", "quorum", "set_digest"]


@functools.lru_cache(maxsize=4096)  # pure; shared by the nodes of one simulation
def set_digest(proposal: Proposal) -> bytes:
    """What a round agrees on (senders and gradient digests, and the membership change if it
    carries one), whichever view proposed it."""
    named = b"".join(s.to_bytes(8, "big", signed=True) + d
                     for s, d in zip(proposal.senders, proposal.digests, strict=True))
    return sha256(named + sha256(proposal.change) if proposal.change else named)


MAX_VIEW = 2**31  # views past this are refused: they would overflow the wire format later
VIEWS_AHEAD = 64  # votes for views further ahead of ours are dropped (we would catch up by sync)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node_id: int
    members: tuple[int, ...]
    rounds: int
    lr: float
    momentum: float
    round_timeout: float  # how long a leader waits for all gradients before settling for a quorum
    view_timeout: float  # how long a node waits in a view before moving to the next
    aggregator: str = "mean"
    aggregator_params: tuple[tuple[str, float | int | str], ...] = ()
    pre_aggregation: tuple[str, ...] = ()  # e.g. ("nnm",) or ("bucketing",), applied in order
    max_gradient_norm: float | None = None  # gradients with a larger L2 norm are invalid
    # votes go to the view's leader, which broadcasts each quorum it collects (O(n) messages
    # per phase instead of O(n^2), one more message delay): for large memberships
    votes_to_leader: bool = False
    # honest workers send a momentum of their gradients instead of the gradient itself
    # (Karimireddy, He, Jaggi 2021: lower variance makes Byzantine vectors stand out)
    worker_momentum: float = 0.0
    # "adam": the node sends its own Adam direction (SenderAdam, beta1 = `momentum`) and the
    # shared step is SGD without momentum
    worker_optimizer: str = "none"
    optimizer: str = "sgd"  # "sgd" (heavy ball) or "adam" (`momentum` is its beta1)
    sync_batch: int = 16  # round records per sync response
    # once finished, compare our last commit with one peer's every this many seconds (default
    # two view timeouts): a fork that completed while a partition cut the members apart is
    # found once it heals, even if nobody has anything left to send
    audit_interval: float | None = None
    future_rounds: int = 2  # messages buffered ahead of the node's own round
    # a node this many rounds behind a peer fetches a checkpoint (verified by a commit
    # certificate and offered identically by f + 1 peers) instead of replaying every round
    checkpoint_gap: int = 32
    # non-voting followers (lightweight nodes, candidates): they may ask members for records
    # and checkpoints, and to join; a node whose own id is not among the members is one of them
    observers: tuple[int, ...] = ()
    # gradients on the wire (engine/compress): the method every member uses, its parameters,
    # and whether a sender carries its compression error into its next gradient
    compression: str = "none"
    compression_params: tuple[tuple[str, float | int | str], ...] = ()
    error_feedback: bool = True
    # (target seconds, min ratio, max ratio): top-k whose ratio each sender picks per gradient
    # from the link conditions its driver reports (engine/compress/adaptive.py)
    adaptive: tuple[float, float, float] | None = None
    feedback_decay: float = 1.0  # < 1: leaky error feedback (ErrorFeedback)
    # (clip, noise multiplier): each gradient clipped to that L2 norm, then Gaussian noise of
    # noise multiplier * clip added before it is released (engine/privacy.py)
    privacy: tuple[float, float] | None = None


class Node:
    def __init__(self, config: NodeConfig, identity: Identity, workload: Workload,
                 opener: Opener, behaviour: Behaviour | None = None) -> None:
        self.config = config
        self.id = config.node_id
        self.identity = identity
        self.workload = workload
        self.open = opener
        self.behaviour = behaviour or Behaviour()
        self._rewrites = behaviour is not None  # an honest node's actions go out untouched
        # the memberships so far (a new one per committed change: engine/consensus/membership)
        self.epochs = [Epoch(0, tuple(config.members))]
        self._requests: dict[int, Envelope] = {}  # requester -> its pending MemberChange
        self._asking: int | None = None  # the change we asked for and wait to see committed
        self._admitted: set[int] = set()  # observers the operator listed while we ran
        sender_adam = config.worker_optimizer == "adam"  # `momentum` is then its beta1
        self.optimizer = make_optimizer(config.optimizer, config.lr,
                                        0.0 if sender_adam else config.momentum)
        self.encoding = GradientEncoding(config.compression, dict(config.compression_params),
                                         config.error_feedback, config.adaptive,
                                         config.feedback_decay)
        self.link: LinkConditions | None = None  # the latest the driver measured
        self._sent_ratio: float | None = None  # top-k ratio of our gradient this round
        self.guard = ReplayGuard()
        self.rejections: Counter[str] = Counter()
        self.history: list[RoundRecord] = []  # committed rounds from history_base on
        self.history_base = 0  # above 0 once the node started from a peer's checkpoint
        self.round = 0
        self.view = 0
        self.finished = False
        self.seq = 0
        self.now = 0.0
        self.params = workload.init_params()
        self.velocity = self.optimizer.init_state(self.params)  # the optimizer's state
        self.model_hash = sha256(self.params.tobytes())
        self.last_update = np.zeros_like(self.params)  # the last committed aggregate
        self.worker_momentum = np.zeros_like(self.params)  # what we sent, if it is a momentum
        self.sender_adam = (SenderAdam(self.params.size, beta1=config.momentum) if sender_adam
                            else None)
        self.excluded: dict[int, bytes] = {}  # peer -> the Evidence frame that excluded it
        self.reputation: dict[int, float] = {}
        self._grads: dict[int, dict[int, Envelope]] = {}  # round -> sender -> gradient
        self._proposals: dict[tuple[int, int], Envelope] = {}  # (round, view) -> proposal
        self._sets: dict[bytes, Envelope] = {}  # set digest -> a proposal naming it (this round)
        self._books: dict[int, VoteBook] = {}  # round -> votes
        self._slots: dict[tuple[int, ...], Envelope] = {}  # first gradient/proposal per slot
        self._voted: set[tuple[int, int, int]] = set()  # (round, view, phase) we signed in
        self._lock: Certificate | None = None  # prepare certificate we committed-voted on
        self._valid: Certificate | None = None  # highest prepare certificate seen this round
        self._moved: dict[int, int] = {}  # peer -> highest view of this round it moved to
        self._results: dict[bytes, Result] = {}  # set digest -> outcome of applying it
        self._gather_expired = False
        self._first_view = 0  # the view the current round started in
        self._timer_view = -1  # the view of this round whose timer runs
        self._rejoin_armed: tuple[int, int] | None = None  # (round, view) of the rejoin timer
        self._own_result: GradientResult | None = None
        self._own_gradient: Gradient | None = None  # as sent (encoded once: error feedback)
        self._abstain = False  # restarted without our disk: we may have voted before
        self._sync_until = -1.0
        self._sync_peer: int | None = None
        self._helped: set[tuple[int, int]] = set()  # (peer, round) we sent records unasked
        self._probed: set[tuple[int, int]] = set()  # (peer, round) we asked for a fork check
        self._traced: set[tuple[int, int]] = set()  # (peer, round) a fork we traced back from
        self._audited = 0  # the last peer the finished node compared heads with
        self._certified: set[tuple[int, tuple[int, int, bytes, bytes]]] = set()  # QCs we sent
        self._poll = 0
        self._checkpoint_until = -1.0  # no new checkpoint requests before this time
        self._checkpoint_turn = 0
        self._served: set[tuple[int, int]] = set()  # (peer, round) a checkpoint was sent for
        self._out: list[Action] = []
        self._handlers: dict[type[Message], Callable[[Envelope], None]] = {
            Gradient: self._on_gradient, Vote: self._on_vote, Proposal: self._on_proposal,
            ViewChange: self._on_view_change, SyncRequest: self._on_sync_request,
            SyncResponse: self._on_sync_response, Evidence: self._on_evidence,
            Fetch: self._on_fetch, Frames: self._on_frames, Certified: self._on_certified,
            CheckpointRequest: self._on_checkpoint_request, Checkpoint: self._on_checkpoint,
            MemberChange: self._on_member_change}
        self._set_membership(self.epochs[0].members)

    @property
    def settled(self) -> bool:
        """Finished: a driver may stop once every running honest node is."""
        return self.finished

    # ---- the one entry point ------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Action]:
        self.now, self._out = now, []
        if type(event) is Received:  # one per delivered frame: skip the pattern match
            self._on_frame(event.frame)
            return self.behaviour.outgoing(self._out, self) if self._rewrites else self._out
        match event:
            case TimerFired(name):
                self._on_timer(name)
            case ComputeDone(job, result):
                self._on_computed(job, result)
            case Started(disk, lost_disk):
                self._restore(disk, lost_disk)
                self._start_round()
                self._ask()  # a request we made before the restart, until it is applied
            case RequestChange(op):
                self._request_change(op)
            case LinkConditions():
                self.link = event
        return self.behaviour.outgoing(self._out, self)

    # ---- helpers ----------------------------------------------------------------------------

    def leader(self, round: int, view: int) -> int:
        return self.members[(round + view) % self.n]

    def sign(self, message: Message) -> bytes:
        """Seal `message` in an envelope signed by this node, with a fresh sequence number."""
        # time-based, so a restarted node (with or without its disk) never reuses a number
        self.seq = max(self.seq + 1, int(self.now * 1_000_000) << 8)
        return seal(self.identity, self.id, self.seq, message)

    def _broadcast(self, message: Message) -> bytes:
        frame = self.sign(message)
        self._out.append(Broadcast(frame, type(message).KIND, message.round))
        return frame

    def _send(self, peer: int, message: Message) -> None:
        self._out.append(Send(peer, self.sign(message), type(message).KIND, message.round))

    def _reject(self, reason: str, sender: int | None) -> None:
        self.rejections[reason] += 1
        if sender in self.reputation:
            self.reputation[sender] = max(0.0, self.reputation[sender] - 0.05)
        self._out.append(Emit(Rejected(self.id, reason, sender)))

    # ---- durable state ---------------------------------------------------------------------

    def _checkpoint(self) -> bytes:
        return msgpack.packb([self.round, self.view, self.model_hash, self.params.tobytes(),
                              self.velocity.tobytes(), self.last_update.tobytes(),
                              self.worker_momentum.tobytes(),
                              [[e.round, list(e.members)] for e in self.epochs],
                              self.sender_adam.to_bytes() if self.sender_adam else b""])

    def _restore(self, disk: Mapping[str, bytes | RoundRecord], lost_disk: bool) -> None:
        blob = disk.get("checkpoint")
        if isinstance(blob, bytes):
            round_, view, model_hash, params, velocity, update, momentum, epochs, adam = (
                msgpack.unpackb(blob))
            if self.sender_adam is not None and adam:
                self.sender_adam.load(adam)
            self.epochs = [Epoch(r, tuple(m)) for r, m in epochs]
            self._set_membership(self.epochs[-1].members)
            self.round, self.view, self.model_hash = round_, view, model_hash
            self.params = np.frombuffer(params, dtype=np.float32).copy()
            self.velocity = np.frombuffer(velocity, dtype=np.float32).copy()
            self.last_update = np.frombuffer(update, dtype=np.float32).copy()
            self.worker_momentum = np.frombuffer(momentum, dtype=np.float32).copy()
            # the log's unbroken run of rounds up to the checkpoint (a node that started from
            # a peer's checkpoint holds none before it)
            base = round_
            while base > 0 and isinstance(disk.get(f"log/{base - 1}"), RoundRecord):
                base -= 1
            self.history = [disk[f"log/{r}"] for r in range(base, round_)]  # type: ignore[misc]
            self.history_base = base
        for key, proof in disk.items():  # exclusions survive a restart with the disk
            if key.startswith("evidence/") and isinstance(proof, bytes):
                offender = int(key.split("/", 1)[1])
                self.excluded[offender] = proof
                self.reputation[offender] = 0.0
        asking = disk.get("asking")
        if isinstance(asking, bytes) and asking:
            self._asking = asking[0]
            self._settle_request()
        votes = disk.get("votes")
        if isinstance(votes, bytes):  # what we signed in the round we were in: never re-sign
            self._voted = {tuple(v) for v in msgpack.unpackb(votes)}  # type: ignore[misc]
        self._abstain = lost_disk
        lock = disk.get("lock")
        if isinstance(lock, bytes):  # the prepare certificate we commit-voted on, kept as
            round_, frames, proposal = msgpack.unpackb(lock)  # carefully as our votes
            cert = check_certificate(tuple(frames), self.open, self._member_set, round_, PREPARE)
            if round_ == self.round and isinstance(cert, Certificate):
                self._lock = cert  # `_start_round` keeps a lock of the round it starts
                self._sets[cert.set_digest] = self.open(proposal)

    # ---- rounds ------------------------------------------------------------------------------

    def _start_round(self) -> None:
        if self.round >= self.config.rounds:
            if not self.finished:
                self.finished = True
                self._out.append(Emit(Finished(self.id, self.round, self.model_hash)))
                self._out.append(SetTimer("audit", self._audit_interval))
            return
        if self.follower:
            self._out.append(SetTimer("follow", self.config.round_timeout))
            return
        r = self.round
        # the view carries over from the round's commit: a leader that timed out is skipped
        # until the rotation comes back to it
        self._first_view = self.view
        if self._lock is not None and self._lock.round != r:
            self._lock = None
        self._valid = self._lock
        self._moved, self._results, self._timer_view = {}, {}, -1
        self._gather_expired, self._own_result, self._own_gradient = False, None, None
        self._sent_ratio = None
        self._sets = {digest: env for digest, env in self._sets.items() if env.round == r}
        for table in (self._grads, self._books):
            for old in [k for k in table if k < r]:
                del table[old]
        for key in [k for k in self._proposals if k[0] < r]:
            del self._proposals[key]
        for key in [k for k in self._proposals if k[0] == r]:  # early ones, judged on their
            env = self._proposals[key]  # form: this round's members judge them now
            problem = self._proposal_problem(env)
            if problem:
                del self._proposals[key]
                if self._sets.get(set_digest(env.message)) is env:  # type: ignore[arg-type]
                    del self._sets[set_digest(env.message)]  # type: ignore[arg-type]
                self._reject(problem, env.sender)
        for key in [k for k in self._slots if k[2] < r]:
            del self._slots[key]
        self._out.append(Compute(GradientJob(self.workload, self.id, r, self.params)))
        self._arm_view_timer()
        if self.leader(r, self.view) == self.id:
            self._out.append(SetTimer(f"gather:{r}", self.config.round_timeout))
        self._advance()

    def _arm_view_timer(self) -> None:
        # an excluded leader's view is skipped at once: every honest node holds the proof
        self._timer_view = self.view
        excluded = self.leader(self.round, self.view) in self.excluded
        self._out.append(SetTimer(f"view:{self.round}:{self.view}",
                                  0.0 if excluded else self.config.view_timeout))

    def _maybe_start_view_timer(self) -> None:
        """A view's timer starts once a quorum has moved to it (PBFT's rule): a node whose
        timer ran out early waits there for the others instead of running further ahead.
        (Found by a sweep: two nodes a view ahead of four, fewer than f + 1 so nobody followed
        them, never shared a view with a quorum.) Until then it repeats its ViewChange, in
        case it was lost, and looks for a peer that moved on to later rounds."""
        if self._timer_view == self.view:
            return
        if sum(1 for w in self._moved.values() if w >= self.view) >= self.quorum:
            self._arm_view_timer()
        elif self._rejoin_armed != (self.round, self.view):
            # armed once per view: re-arming on every ViewChange would let a peer that repeats
            # its own keep ours from ever firing (found by the Twins tests)
            self._rejoin_armed = (self.round, self.view)
            self._out.append(SetTimer(f"rejoin:{self.round}:{self.view}",
                                      self.config.view_timeout))

    def _on_computed(self, job: object, result: GradientResult) -> None:
        if not isinstance(job, GradientJob) or job.round != self.round or self.finished:
            return  # stale: the node moved on (e.g. by sync) while it computed
        problem = self._check_gradient(result.loss, result.samples, result.values)
        if problem:  # e.g. a diverged model: never send what every peer would reject
            self._reject(f"own_{problem}", self.id)
            return
        if self.config.privacy is not None:  # first: all that follows is post-processing
            clip, noise = self.config.privacy
            result = GradientResult(clip_and_noise(result.values, clip, noise,
                                                   self.identity.seed, self.round,
                                                   self.model_hash), result.loss, result.samples)
        beta = self.config.worker_momentum
        if beta > 0.0:
            mixed = (beta * self.worker_momentum.astype(np.float64)
                     + (1.0 - beta) * result.values.astype(np.float64))
            result = GradientResult(mixed.astype(np.float32), result.loss, result.samples)
        if self.sender_adam is not None:
            result = GradientResult(self.sender_adam.direction(result.values), result.loss,
                                    result.samples)
        self._own_result = result
        self._sent_ratio = self.encoding.ratio_for(result.values.size, self._conditions())
        self._own_gradient = self.encoding.pack(
            Gradient(self.round, self.model_hash, result.loss, result.samples, result.values),
            result.values, self._coder_rng(), ratio=self._sent_ratio)
        self._send_own_gradient()
        self._advance()

    def _conditions(self) -> NetworkConditions | None:
        """The uplink as last measured, towards the members our gradient goes to."""
        if self.link is None:
            return None
        peers = sum(1 for m in self.members if m != self.id)
        return NetworkConditions(self.link.bandwidth, self.link.latency, peers)

    def _coder_rng(self) -> np.random.Generator:
        """For randomized encodings (random-k): a pure function of sender, round and model."""
        return np.random.default_rng([self.id, self.round,
                                      int.from_bytes(self.model_hash[:8], "big")])

    def with_values(self, g: Gradient, values: np.ndarray) -> Gradient:
        """`g` carrying other values, encoded as the run encodes gradients (for behaviours that
        craft a vector: it leaves our error feedback alone)."""
        return self.encoding.pack(g, values, self._coder_rng(), own=False)

    def dense(self, env: Envelope) -> np.ndarray:
        """The vector a gradient envelope stands for, decoded once (memoized on it; in a
        simulation every node shares the envelope). CompressError if it is malformed."""
        key = ("dense", self.encoding.name, self.params.size)
        facts = env.facts
        if key not in facts:
            facts[key] = self.encoding.dense(env.message, self.params.size)  # type: ignore[arg-type]
        return facts[key]  # type: ignore[no-any-return]

    def _send_own_gradient(self) -> None:
        g = self._own_gradient
        if g is None:
            return
        frame = self._broadcast(g)  # the same payload again, with a fresh sequence number
        self._grads.setdefault(self.round, {}).setdefault(self.id, self.open(frame))

    def _on_timer(self, name: str) -> None:
        kind, _, rest = name.partition(":")
        if self.finished:
            if kind == "audit":
                self._audit_head()
            return
        if kind == "member":
            self._ask()
        elif kind == "follow":
            self._poll_for_sync()
            self._out.append(SetTimer("follow", self.config.round_timeout))
        elif kind == "gather" and int(rest) == self.round:
            self._gather_expired = True
            self._advance()
        elif kind == "view" and rest == f"{self.round}:{self.view}":
            self._enter_view(self.view + 1)
            self._poll_for_sync()  # silence may also mean everyone else moved on
        elif kind == "rejoin" and rest == f"{self.round}:{self.view}" and (
                self._timer_view != self.view):
            self._rejoin_armed = None
            self._announce_view()
            self._poll_for_sync()
            self._maybe_start_view_timer()

    def _enter_view(self, view: int) -> None:
        """Leave the views below `view`: tell everyone, with our highest prepare certificate."""
        self.view = view
        self._gather_expired = True  # a later leader settles for a quorum: everyone has waited
        self._moved[self.id] = view
        self._announce_view()
        self._out.append(Emit(ViewChanged(self.id, self.round, view)))
        self._send_own_gradient()  # re-sent with a fresh sequence number (loss, new leader)
        self._maybe_start_view_timer()
        self._advance()

    def _announce_view(self) -> None:
        best = self._best_certificate()
        proposal = self._sets.get(best.set_digest) if best else None
        self._broadcast(ViewChange(self.round, self.view, best.frames if best else (),
                                   proposal.frame if proposal else b""))

    def _best_certificate(self) -> Certificate | None:
        if self._valid is None or (self._lock is not None and self._lock.view > self._valid.view):
            return self._lock
        return self._valid

    # ---- the round's progress ----------------------------------------------------------------

    def _advance(self) -> None:
        """Do whatever the current round's state allows: propose, vote, decide."""
        while not self.finished:
            round_before = self.round
            self._maybe_propose()
            self._maybe_prepare()
            self._maybe_commit_vote()
            self._maybe_decide()
            if self.round == round_before:
                return

    def gradients(self, round: int) -> dict[int, Envelope]:
        """The gradients of `round` held so far, by sender (read-only use)."""
        return self._grads.get(round, {})

    def adopt_gradient(self, env: Envelope) -> None:
        """Hold `env` (signed by us) as our gradient of its round: a Byzantine behaviour that
        replaced what we broadcast keeps the node's own view consistent with it."""
        self._grads.setdefault(env.round, {})[self.id] = env

    def _usable(self, round: int) -> dict[int, Envelope]:
        """Gradients of `round` we could put in a set: built on our model, sender not excluded."""
        return {s: e for s, e in self._grads.get(round, {}).items()
                if s not in self.excluded and s in self._member_set  # not one that just left
                and e.message.base_hash == self.model_hash}  # type: ignore[union-attr]

    def _maybe_propose(self) -> None:
        r, v = self.round, self.view
        if self.leader(r, v) != self.id or (r, v, PROPOSE) in self._voted or self._abstain:
            return
        if v == self._first_view:
            held = self._grads.get(r, {})
            if len(held) < (self.min_set if self._gather_expired else self.n - len(self.excluded)):
                return  # cheap exit before the O(n) filter below
            have = self._usable(r)
            if self.id not in have or len(have) < self.min_set or (
                    not self._gather_expired and len(have) < self.n - len(self.excluded)):
                return
            proposal = Proposal(r, v, tuple(sorted(have)),
                                tuple(have[s].digest for s in sorted(have)),
                                change=self._pick_change())
        else:
            if sum(1 for w in self._moved.values() if w >= v) < self.quorum:
                return  # wait until a quorum left the old views: their locks come with them
            best = self._best_certificate()
            earlier = self._sets.get(best.set_digest) if best else None
            if best is not None and earlier is not None:
                p: Proposal = earlier.message  # type: ignore[assignment]
                proposal = Proposal(r, v, p.senders, p.digests, best.frames, p.change)
            else:
                have = self._usable(r)
                if len(have) < self.min_set:
                    return
                proposal = Proposal(r, v, tuple(sorted(have)),
                                    tuple(have[s].digest for s in sorted(have)),
                                    change=self._pick_change())
        self._sign_once(v, PROPOSE)
        self._accept_proposal(self.open(self._broadcast(proposal)))

    def _set_gradients(self, proposal: Proposal) -> list[Envelope] | None:
        """The gradients a set names, if we hold every one and each was built on our model."""
        held = self._grads.get(proposal.round, {})
        envs = []
        for s, d in zip(proposal.senders, proposal.digests, strict=True):
            e = held.get(s)
            if e is None or e.digest != d or e.message.base_hash != self.model_hash:  # type: ignore[union-attr]
                return None
            envs.append(e)
        return envs

    def _maybe_prepare(self) -> None:
        r, v = self.round, self.view
        env = self._proposals.get((r, v))
        if env is None or (r, v, PREPARE) in self._voted or self._abstain:
            return
        p: Proposal = env.message  # type: ignore[assignment]
        digest = set_digest(p)
        justified = self._justification(p)
        if self._lock is not None and self._lock.set_digest != digest and (
                justified is None or justified.view < self._lock.view):
            return  # locked on another set: only a later certificate releases us
        if not p.justify and any(s in self.excluded for s in p.senders):
            return  # a fresh set with an offender's gradient; a justified one a quorum
            # prepared (maybe committed somewhere) must stay electable, or its locks never free
        if self._set_gradients(p) is None:
            return  # re-checked as gradients arrive
        cited = max(justified.view if justified else -1,
                    self._lock.view if self._lock and self._lock.set_digest == digest else -1)
        self._vote(v, PREPARE, digest, self.model_hash, cited)

    def _justification(self, p: Proposal) -> Certificate | None:
        if not p.justify:
            return None
        cert = check_certificate(p.justify, self.open, self._member_set, p.round, PREPARE)
        return cert if isinstance(cert, Certificate) else None

    def _maybe_commit_vote(self) -> None:
        r, v = self.round, self.view
        book = self._books.get(r)
        if book is None or (r, v, COMMIT) in self._voted or self._abstain:
            return
        for key in book.keys(PREPARE):
            if key[0] != v or key[3] != self.model_hash:
                continue
            cert = book.certificate(key)
            if cert is None:
                continue
            result = self._result(cert.set_digest)
            if result is None:
                return  # we lack the proposal or a gradient: wait for them
            self._lock = cert
            self._out.append(Persist("lock", msgpack.packb(  # before the vote goes out
                [r, list(cert.frames), self._sets[cert.set_digest].frame])))
            self._note_certificate(cert)
            self._vote(v, COMMIT, cert.set_digest, result[2])
            return

    def _maybe_decide(self) -> None:
        book = self._books.get(self.round)
        if book is None:
            return
        for key in book.keys(COMMIT):
            cert = book.certificate(key)
            if cert is None:
                continue
            result = self._result(cert.set_digest)
            if result is None:
                self._request_sync(self._voters(cert)[0])  # decided without us: fetch it
                return
            if result[2] != cert.model_hash:
                self._reject("commit_model_mismatch", None)
                self._request_sync(self._voters(cert)[0])
                return
            proposal = self._sets[cert.set_digest]
            self._commit(proposal, self._set_gradients(proposal.message) or [], cert,  # type: ignore[arg-type]
                         self._prepared(cert), via_sync=False)
            return

    def _voters(self, cert: Certificate) -> list[int]:
        """Peers that signed `cert` (they have decided the round), else every peer."""
        signers = [self.open(f).sender for f in cert.frames]
        return [s for s in signers if s != self.id] or [m for m in self.members if m != self.id]

    def _result(self, digest: bytes) -> Result | None:
        """Our model after applying the set `digest` (memoized per round), if we can."""
        if digest not in self._results:
            proposal = self._sets.get(digest)
            envs = None if proposal is None else self._set_gradients(
                proposal.message)  # type: ignore[arg-type]
            if envs is None:
                return None
            self._results[digest] = self._apply(envs, digest)
        return self._results[digest]

    def _apply(self, envs: list[Envelope], digest: bytes) -> Result:
        # the context is the same on every honest node: f, a seed from the set, the last update
        ctx = AggregationContext(self.f, int.from_bytes(digest[:8], "big") >> 1, self.last_update)
        update = self.aggregate([self.dense(e) for e in envs], ctx)
        params, velocity = self.optimizer.step(self.params, self.velocity, update, self.round + 1)
        return params, velocity, sha256(params.tobytes()), update

    def _sign_once(self, view: int, phase: int) -> None:
        """Remember (and persist, before anything is sent) that we signed in this slot: a
        restart with this disk never signs a second, different message for it."""
        self._voted.add((self.round, view, phase))
        self._out.append(Persist("votes", msgpack.packb(sorted(self._voted))))

    def _vote(self, view: int, phase: int, digest: bytes, model_hash: bytes,
              justify_view: int = -1) -> None:
        self._sign_once(view, phase)
        vote = Vote(self.round, view, phase, digest, model_hash, justify_view)
        leader = self.leader(self.round, view)
        if not self.config.votes_to_leader:
            frame = self._broadcast(vote)
        elif leader == self.id:
            frame = self.sign(vote)
        else:
            frame = self.sign(vote)
            self._out.append(Send(leader, frame, Vote.KIND, self.round))
        self._book(self.round).add(self.open(frame))
        self._certify(self.round, (view, phase, digest, model_hash))

    def _certify(self, round: int, key: Key) -> None:
        """Linear voting: as the view's leader, broadcast each quorum of votes once."""
        if not self.config.votes_to_leader or self.leader(round, key[0]) != self.id:
            return
        if (round, key) in self._certified:
            return
        cert = self._book(round).certificate(key)
        if cert is not None:
            self._certified.add((round, key))
            self._broadcast(Certified(round, key[1], cert.frames))

    def _book(self, round: int) -> VoteBook:
        book = self._books.get(round)
        if book is None:
            book = self._books[round] = VoteBook(round, self.n)
        return book

    def _note_certificate(self, cert: Certificate) -> None:
        if self._valid is None or cert.view > self._valid.view:
            self._valid = cert

    def _prepared(self, cert: Certificate) -> tuple[bytes, ...]:
        """The prepare certificate behind a commit certificate, if we hold it (our lock, or a
        quorum of prepare votes in our book)."""
        lock = self._lock
        if lock is not None and (lock.view, lock.set_digest) == (cert.view, cert.set_digest):
            return lock.frames
        book = self._books.get(self.round)
        prepared = book and book.certificate((cert.view, PREPARE, cert.set_digest,
                                              self.model_hash))
        return prepared.frames if prepared else ()

    def _commit(self, proposal: Envelope, envs: list[Envelope], cert: Certificate,
                prepared: tuple[bytes, ...], via_sync: bool) -> None:
        grads: list[Gradient] = [e.message for e in envs]  # type: ignore[misc]
        self.params, self.velocity, self.model_hash, self.last_update = self._results[
            cert.set_digest]
        record = RoundRecord(self.round, proposal.frame, tuple(e.frame for e in envs),
                             cert.frames, prepared)
        self.history.append(record)
        self._out.append(Persist(f"log/{self.round}", record))
        loss = float(np.mean([g.loss for g in grads]))
        self._out.append(Emit(RoundCommitted(self.id, self.round, cert.view, len(grads), loss,
                                             self.model_hash, via_sync, self.params,
                                             self._sent_ratio)))
        included = {e.sender for e in envs}
        for peer in self.reputation:
            if peer not in self.excluded:  # moving average of "its gradient made the round"
                self.reputation[peer] = 0.9 * self.reputation[peer] + 0.1 * (peer in included)
        if self.config.worker_momentum > 0.0 and self._own_result is not None:
            self.worker_momentum = self._own_result.values  # carried into the next round
        if self.sender_adam is not None and self._own_result is not None:
            self.sender_adam.adopt()
        self.round, self.view = self.round + 1, cert.view
        if proposal.message.change:  # type: ignore[union-attr]
            self._apply_change(self.open(proposal.message.change))  # type: ignore[union-attr]
        self._abstain = False
        self._voted = {v for v in self._voted if v[0] >= self.round}
        self._out.append(Persist("votes", msgpack.packb(sorted(self._voted))))
        self._out.append(Persist("checkpoint", self._checkpoint()))
        self._start_round()

    # ---- incoming messages -------------------------------------------------------------------

    def _on_frame(self, frame: bytes) -> None:
        try:
            env = self.open(frame)
        except DecodeError as err:
            self._reject(err.reason, None)
            return
        kind = type(env.message)
        if self.follower and kind not in (SyncResponse, Checkpoint, Evidence):
            return  # the round's traffic is for members (ones we may not know of yet)
        if env.sender == self.id:
            self._reject("not_member", env.sender)  # ours, echoed back: nobody relays to us
            return
        if env.sender not in self._member_set and not (
                env.sender in self._observers and kind in FROM_OBSERVERS):
            if env.round < self.round and env.sender in self.members_at(env.round):
                return  # late traffic of a member that has left since: stale, not hostile
            if env.round > self.round and env.sender in self._observers:
                return  # perhaps a member by now, admitted in rounds we have yet to learn of
            self._reject("not_member", env.sender)
            return
        if not self.guard.check(env.sender, env.seq):
            self._reject("replay", env.sender)
            return
        self._handlers[kind](env)

    def _gradient_problem(self, env: Envelope) -> str | None:
        # a pure function of the message and the model's shape: memoized on the envelope, so
        # nodes sharing a memoizing opener check each broadcast gradient once
        key = ("gradient_problem", self.params.shape, self.config.max_gradient_norm,
               self.encoding.name)
        facts = env.facts
        if key not in facts:
            g: Gradient = env.message  # type: ignore[assignment]
            try:
                facts[key] = self._check_gradient(g.loss, g.samples, self.dense(env))
            except CompressError as err:  # a malformed payload, or not the run's encoding
                facts[key] = f"gradient_{err.reason}"
        return facts[key]  # type: ignore[no-any-return]

    def _check_gradient(self, loss: float, samples: int, v: np.ndarray) -> str | None:
        if v.dtype != np.float32 or v.shape != self.params.shape:
            return "bad_gradient_shape"
        # a float64 sum of float32 values cannot overflow, so it is finite iff every value is
        if not (math.isfinite(v.sum(dtype=np.float64)) and math.isfinite(loss)) or (
                samples <= 0):
            return "bad_gradient_values"
        bound = self.config.max_gradient_norm
        if bound is not None and math.sqrt(float(np.square(v, dtype=np.float64).sum())) > bound:
            return "gradient_norm_too_large"
        return None

    def _is_equivocation(self, env: Envelope) -> bool:
        """File the first gradient/proposal of each slot; a different one proves equivocation."""
        slot = slot_of(env)
        if slot is None:
            return False
        first = self._slots.setdefault(slot, env)
        if first is not env and conflicting(first, env):
            self._accuse(first, env)
            return True
        return False

    def _on_gradient(self, env: Envelope) -> None:
        g: Gradient = env.message  # type: ignore[assignment]
        if g.round < self.round and (env.sender, g.round) not in self._helped:
            # the sender is still in a round we committed (lagging, or on another fork after a
            # partition healed): send it our records once, so it catches up or finds the fork
            self._helped.add((env.sender, g.round))
            self._send_records(env.sender, g.round)
        if g.round < self.round or self.finished:
            return  # stale: that round is settled here
        if env.sender in self.excluded:  # ignored, unless a set we know names it: a justified
            # set (prepared by a quorum before the exclusion) needs it to be voted for again
            named = ((env.sender, env.digest) in zip(s.message.senders,  # type: ignore[union-attr]
                                                     s.message.digests, strict=True)  # type: ignore[union-attr]
                     for s in self._sets.values() if s.round == g.round)
            if g.round == self.round and not self._gradient_problem(env) and any(named):
                self._grads.setdefault(g.round, {})[env.sender] = env
                self._advance()
            return
        if g.round > self.round + self.config.future_rounds:
            self._request_sync(env.sender)
            return
        problem = self._gradient_problem(env)
        if problem:
            self._reject(problem, env.sender)
            return
        if self._is_equivocation(env):
            return
        self._grads.setdefault(g.round, {}).setdefault(env.sender, env)
        if g.round > self.round + 1:
            self._request_sync(env.sender)  # the sender has committed rounds we have not
        elif g.round == self.round:
            if g.base_hash != self.model_hash:
                self._reject("gradient_other_model", env.sender)
                self._probe_fork(env.sender)
            self._advance()

    def _proposal_form_problem(self, p: Proposal) -> str | None:
        if not 0 <= p.view < MAX_VIEW:
            return "proposal_bad_view"
        if len(p.senders) != len(p.digests):
            return "proposal_too_small"
        if list(p.senders) != sorted(set(p.senders)):
            return "proposal_bad_senders"
        return None

    def _proposal_problem(self, env: Envelope) -> str | None:
        """Why a proposal is invalid. One of a later round than ours is judged on its form
        only; `_start_round` judges it in full once we are there: the rounds before it may
        change the members, and with them its leader, its senders, its quorum, its change."""
        p: Proposal = env.message  # type: ignore[assignment]
        form = self._proposal_form_problem(p)
        if form or p.round > self.round:
            return form
        if env.sender != self.leader(p.round, p.view):
            return "proposal_not_leader"
        if len(p.senders) < self.min_set:
            return "proposal_too_small"
        if not self._member_set.issuperset(p.senders):
            return "proposal_bad_senders"
        if p.change:
            problem = self._proposal_change_problem(p)
            if problem:
                return f"proposal_{problem}"
        if p.justify:
            cert = check_certificate(p.justify, self.open, self._member_set, p.round, PREPARE)
            if isinstance(cert, str):
                return f"proposal_{cert}"
            if cert.view >= p.view or cert.set_digest != set_digest(p):
                return "proposal_bad_justification"
        return None

    def _on_proposal(self, env: Envelope) -> None:
        p: Proposal = env.message  # type: ignore[assignment]
        if p.round < self.round or self.finished or env.sender in self.excluded:
            return
        problem = self._proposal_problem(env)
        if problem:
            self._reject(problem, env.sender)
            return
        if self._is_equivocation(env):
            return
        if p.round > self.round:
            self._request_sync(env.sender)  # its leader is in a later round: we are behind
        if p.round <= self.round + self.config.future_rounds:  # bounded: no memory for far rounds
            self._accept_proposal(env)

    def _accept_proposal(self, env: Envelope) -> None:
        p: Proposal = env.message  # type: ignore[assignment]
        self._proposals.setdefault((p.round, p.view), env)
        if p.round == self.round:
            self._sets.setdefault(set_digest(p), env)
            justified = self._justification(p)
            if justified is not None:
                self._note_certificate(justified)
            self._fetch_missing(env)
            self._advance()
        else:
            self._sets.setdefault(set_digest(p), env)

    def _on_vote(self, env: Envelope) -> None:
        v: Vote = env.message  # type: ignore[assignment]
        if v.round < self.round or env.sender in self.excluded:
            return
        if not 0 <= v.view < MAX_VIEW or v.phase not in (PREPARE, COMMIT):
            self._reject("bad_vote", env.sender)
            return
        if v.round > self.round + self.config.future_rounds:
            self._request_sync(env.sender)
            return
        if v.view > self.view + VIEWS_AHEAD:
            return  # bounded memory: a Byzantine voter cannot fill a book with far views
        book = self._book(v.round)
        earlier = book.add(env)
        if earlier is not None:
            self._accuse(earlier, env)
            return
        key = (v.view, v.phase, v.set_digest, v.model_hash)
        if book.count(key) != book.quorum:
            # below a quorum nothing is unlocked; past it, whatever the quorum unlocked ran
            # when the quorum formed, and anything still waiting re-checks when it arrives
            return
        self._certify(v.round, key)
        if v.round == self.round:
            self._advance()

    def _on_certified(self, env: Envelope) -> None:
        c: Certified = env.message  # type: ignore[assignment]
        if c.round < self.round or c.round > self.round + self.config.future_rounds:
            return
        cert = check_certificate(c.votes, self.open, self._member_set, c.round, c.phase)
        if isinstance(cert, str):
            if c.round == self.round:  # a later round's voters may be members we have yet
                self._reject(cert, env.sender)  # to learn of: not judged, just not used
            return
        if cert.view > self.view + VIEWS_AHEAD:
            return
        book = self._book(c.round)
        for frame in c.votes:
            vote = self.open(frame)
            if vote.sender in self.excluded:
                continue
            earlier = book.add(vote)
            if earlier is not None:
                self._accuse(earlier, vote)
        if c.round == self.round:
            self._advance()

    def _on_view_change(self, env: Envelope) -> None:
        vc: ViewChange = env.message  # type: ignore[assignment]
        if not 0 < vc.view < MAX_VIEW:
            self._reject("bad_view_change", env.sender)
            return
        if vc.round < self.round:  # the sender is stuck in a round we committed: help it
            if (env.sender, vc.round) not in self._helped:
                self._helped.add((env.sender, vc.round))
                self._send_records(env.sender, vc.round)
            return
        if vc.round > self.round or self.finished:
            if vc.round > self.round:
                self._request_sync(env.sender)
            return
        if vc.lock:
            self._learn_lock(env, vc)
        if vc.view > self._moved.get(env.sender, 0):
            self._moved[env.sender] = vc.view
        ahead = sorted((w for s, w in self._moved.items() if s != self.id and w > self.view),
                       reverse=True)
        if len(ahead) > self.f:  # f + 1 peers moved past us: at least one honest did
            self._enter_view(ahead[self.f])
        else:
            self._maybe_start_view_timer()
            self._advance()

    def _learn_lock(self, env: Envelope, vc: ViewChange) -> None:
        cert = check_certificate(vc.lock, self.open, self._member_set, vc.round, PREPARE)
        if isinstance(cert, str):
            self._reject(f"view_change_{cert}", env.sender)
            return
        try:
            proposal = self.open(vc.proposal)
        except DecodeError as err:
            self._reject(f"view_change_{err.reason}", env.sender)
            return
        p = proposal.message
        if (not isinstance(p, Proposal) or p.round != vc.round or self._proposal_problem(proposal)
                or set_digest(p) != cert.set_digest or cert.view >= vc.view):
            self._reject("view_change_bad_lock", env.sender)
            return
        self._sets.setdefault(cert.set_digest, proposal)
        if cert.model_hash == self.model_hash:
            self._note_certificate(cert)

    def _fetch_missing(self, proposal: Envelope) -> None:
        """Ask the proposer for the gradients it names that we lack or hold in another version
        (lost on the way, or its sender equivocated: then we get a proof of it)."""
        p: Proposal = proposal.message  # type: ignore[assignment]
        if proposal.sender == self.id:
            return
        held = self._grads.get(p.round, {})
        missing = tuple(s for s, d in zip(p.senders, p.digests, strict=True)
                        if s != self.id and (s not in held or held[s].digest != d))
        if missing:
            self._send(proposal.sender, Fetch(p.round, missing))

    def _on_fetch(self, env: Envelope) -> None:
        req: Fetch = env.message  # type: ignore[assignment]
        held = self._grads.get(req.round, {})
        frames = tuple(held[s].frame for s in dict.fromkeys(req.senders) if s in held)
        if frames:
            self._send(env.sender, Frames(req.round, frames))

    def _on_frames(self, env: Envelope) -> None:
        """Relayed gradients: each is checked as if its sender had sent it to us (signature,
        validity, equivocation), except the replay window, which is per direct sender."""
        resp: Frames = env.message  # type: ignore[assignment]
        for frame in resp.frames[: self.n]:
            try:
                inner = self.open(frame)
            except DecodeError as err:
                self._reject(f"relayed_{err.reason}", env.sender)
                return
            if not isinstance(inner.message, Gradient) or inner.sender not in self._member_set:
                self._reject("relayed_not_gradient", env.sender)
                return
            if inner.sender != self.id:
                self._on_gradient(inner)

    # ---- accountability ----------------------------------------------------------------------

    def _probe_fork(self, peer: int) -> None:
        """A peer in our round built its gradient on another model: either it lies, or two
        commit certificates exist for our last round (more than f Byzantine signers). Fetch its
        record of that round once, to compare certificates."""
        if self.round > 0 and (peer, self.round) not in self._probed:
            self._probed.add((peer, self.round))
            self._send(peer, SyncRequest(self.round, self.round - 1, 1))

    def _compare_records(self, ours: RoundRecord, theirs: RoundRecord, peer: int) -> None:
        """Two commit certificates for one round naming different outcomes cannot both come
        from honest quorums unless more than f signers equivocated. Every signer of two
        different votes for the same (round, view, phase) is accused with the pair as proof, so
        a fork beyond the fault bound is never silent. Certificates from different views need
        the prepare votes to assign blame; then the records of the rounds before are fetched,
        because the fork may have begun earlier, in one view."""
        if ours.certificate == theirs.certificate:
            return
        cert = check_certificate(theirs.certificate, self.open,
                                 frozenset(self.members_at(theirs.round)), theirs.round, COMMIT)
        if isinstance(cert, str):
            self._reject(f"sync_{cert}", peer)
            return
        mine = [self.open(f) for f in ours.certificate]
        first: Vote = mine[0].message  # type: ignore[assignment]
        if (first.set_digest, first.model_hash) == (cert.set_digest, cert.model_hash):
            return  # the same outcome, certified by another quorum (or view)
        self._reject("fork_detected", peer)
        # the records' gradients, proposals and votes side by side: after a fork, the twins of
        # an equivocator sign different gradients for the rounds that follow
        accused = False
        for first_env, second in equivocations([*signed_in(ours, self.open),
                                                 *signed_in(theirs, self.open)]):
            if first_env.sender not in self.excluded and first_env.sender != self.id:
                self._accuse(first_env, second)
                accused = True
        if not accused and ours.round > 0 and (peer, ours.round) not in self._traced:
            self._traced.add((peer, ours.round))
            start = max(0, ours.round - self.config.sync_batch)
            self._send(peer, SyncRequest(self.round, start, ours.round - start))

    def _audit_head(self) -> None:
        """Anti-entropy of a finished node: ask the next peer in turn for its record of our
        last round; `_on_sync_response` compares it with ours (`_compare_records`)."""
        self._out.append(SetTimer("audit", self._audit_interval))
        peers = [m for m in self.members if m != self.id and m not in self.excluded]
        if peers and self.history:
            self._audited = (self._audited + 1) % len(peers)
            self._send(peers[self._audited], SyncRequest(self.round, self.round - 1, 1))

    @property
    def _audit_interval(self) -> float:
        return self.config.audit_interval or 2 * self.config.view_timeout

    def _accuse(self, first: Envelope, second: Envelope) -> None:
        frame = self._broadcast(Evidence(self.round, first.frame, second.frame))
        self._exclude(first.sender, frame)

    def _on_evidence(self, env: Envelope) -> None:
        ev: Evidence = env.message  # type: ignore[assignment]
        try:
            first, second = self.open(ev.first), self.open(ev.second)
        except DecodeError:
            self._reject("bad_evidence", env.sender)
            return
        if not conflicting(first, second) or first.sender not in self._member_set:
            self._reject("bad_evidence", env.sender)
            return
        if first.sender in self.excluded or first.sender == self.id:
            return
        # pass it on under our own signature: every honest node gets the proof even if the
        # accuser sent it to some peers only
        self._exclude(first.sender, self._broadcast(Evidence(self.round, ev.first, ev.second)))

    def _exclude(self, offender: int, proof: bytes) -> None:
        if offender in self.excluded or offender == self.id:
            return
        self.excluded[offender] = proof
        self.reputation[offender] = 0.0
        self._out.append(Persist(f"evidence/{offender}", proof))
        self._out.append(Emit(Excluded(self.id, offender, self.round, proof)))
        for book in self._books.values():
            book.drop_sender(offender)
        # its gradients already held stay: a set naming one may be certified already, and
        # then every node must apply (and log) it; `_usable` and `_maybe_prepare` keep the
        # offender out of new sets, `_on_gradient` ignores its later gradients

    # ---- membership changes (engine/consensus/membership.py) -----------------------------

    @property
    def epoch(self) -> int:
        """Changes committed so far: a request names it, so it is good for one membership."""
        return len(self.epochs) - 1

    def members_at(self, round: int) -> tuple[int, ...]:
        return members_at(self.epochs, round)

    def _rule(self, n: int) -> Aggregator:
        return make_aggregator(self.config.aggregator, f=max_faulty(n),
                               pre=self.config.pre_aggregation, **dict(self.config.aggregator_params))

    def _fits(self, n: int) -> bool:
        """A membership of n can run rounds: someone to vote, and enough inputs for the rule."""
        return n >= 1 and min_inputs(self._rule(n), max_faulty(n), n) is not None

    def _set_membership(self, members: tuple[int, ...]) -> None:
        """Everything that follows from who the members are: at the start, after a committed
        change, after a restart or an adopted checkpoint."""
        self.members = members
        self._member_set = frozenset(members)
        ever = frozenset(self.config.observers).union(self._admitted,
                                                      *(e.members for e in self.epochs))
        self._observers = ever - self._member_set  # may follow, and an observer may ask to join
        # a follower keeps the chain by verified records and checkpoints: it neither computes
        # gradients nor proposes nor votes
        self.follower = self.id not in self._member_set
        self.n = len(members)
        self.quorum = quorum(self.n)
        self.f = max_faulty(self.n)
        self.aggregate = self._rule(self.n)
        # the smallest set a round may agree on: a quorum, or more if the rule needs more
        # (Krum needs 2f + 3 inputs: above n - f when n < 3f + 3... then f silent peers stall it)
        self.min_set = max(self.quorum, min_inputs(self.aggregate, self.f, self.n) or self.n)
        self._offers = CheckpointOffers(self.f + 1)
        for m in members:
            if m != self.id:
                self.reputation.setdefault(m, 1.0)
        for book in self._books.values():  # votes filed early for the rounds from now on
            book.quorum = self.quorum
            for sender in ever - self._member_set:
                book.drop_sender(sender)
        self._settle_request()

    def admit_observer(self, node_id: int) -> None:
        """An observer the operator listed while this node runs (its key is in the opener's
        keyring from now on): it may follow, and ask to join."""
        if node_id not in self._member_set and node_id != self.id:
            self._admitted.add(node_id)
            self._observers = self._observers | {node_id}

    def _settle_request(self) -> None:
        if (self._asking, self.follower) in ((JOIN, False), (LEAVE, True)):
            self._asking = None  # what we asked for is done
            self._out.append(Persist("asking", b""))

    def change_problem(self, op: str) -> str | None:
        """Why this node cannot ask to `op` ("join" or "leave") now; None if it can."""
        if op not in OPS:
            return f"unknown change {op!r} (allowed: {', '.join(OPS)})"
        if self.finished:
            return "training has finished"
        if self._asking is not None:
            return f"a request to {OP_NAMES[self._asking]} is already pending"
        if op == "join":
            if not self.follower:
                return "already a member"
            if self.id not in self._observers:
                return "not an observer of the members file"
            return None if self._fits(self.n + 1) else "the aggregation rule cannot take more"
        if self.follower:
            return "not a member"
        if not self._fits(self.n - 1):
            return (f"leaving would leave {self.n - 1} members, fewer than "
                    f"{self.config.aggregator} needs")
        return None

    def _request_change(self, op: str) -> None:
        if self.change_problem(op) is not None:
            self._reject("change_refused", None)
            return
        self._asking = OPS[op]
        self._out.append(Persist("asking", bytes([self._asking])))  # asked until applied,
        self._ask()  # across restarts too
        self._poll_for_sync()  # a request names our epoch: be current when it arrives

    def _ask(self) -> None:
        """Send our request, naming the current epoch, until it is committed (a Byzantine
        leader may leave it out; the rotation brings an honest one that does not)."""
        if self._asking is None or self.finished:
            return
        frame = self._broadcast(MemberChange(self.round, self.epoch, self._asking))
        if not self.follower:  # we may lead a round: our own request is pending here too
            self._requests[self.id] = self.open(frame)
        self._out.append(SetTimer("member", self.config.view_timeout))

    def _change_problem(self, env: Envelope) -> str | None:
        return change_problem(env, self._member_set, self._observers, self.epoch, self._fits)

    def _on_member_change(self, env: Envelope) -> None:
        problem = self._change_problem(env)
        if problem == "change_stale_epoch":
            # the requester or we are behind; it asks again with the next epoch: if it is
            # behind, hand it the records from its round once (a follower polls slowly)
            behind = env.message.round  # type: ignore[union-attr]
            if behind < self.round and (env.sender, behind) not in self._helped:
                self._helped.add((env.sender, behind))
                self._send_records(env.sender, behind)
            return
        if problem:
            self._reject(problem, env.sender)
            return
        self._requests[env.sender] = env  # one per requester: its latest

    def _pick_change(self) -> bytes:
        """The pending request a proposal carries (the lowest requester's, at most one)."""
        for sender in sorted(self._requests):
            env = self._requests[sender]
            if self._change_problem(env) is None:
                return env.frame
        return b""

    def _proposal_change_problem(self, p: Proposal) -> str | None:
        try:
            env = self.open(p.change)
        except DecodeError:
            return "change_bad_frame"
        return self._change_problem(env)

    def _apply_change(self, env: Envelope) -> None:
        """A committed change takes effect from the round we just entered."""
        change: MemberChange = env.message  # type: ignore[assignment]
        members = applied(self.members, change.op, env.sender)
        self.epochs.append(Epoch(self.round, members))
        self._requests.clear()  # each named the epoch before
        self._set_membership(members)
        if self._asking is not None:  # ours is still to come, and named the old epoch: ask
            self._ask()  # again now rather than when the timer fires
        self._out.append(Emit(MembershipChanged(self.id, self.round, OP_NAMES[change.op],
                                                env.sender, members)))
        if change.op == JOIN and self.history and env.sender != self.id and (
                self.id in members[: self.f + 1]):
            # the joiner follows by polling: f + 1 members (one honest) hand it the record of
            # its admission at once, so it computes in its first round instead of a poll later
            self._send_records(env.sender, self.round - 1, 1)

    # ---- state sync ---------------------------------------------------------------------------

    def _request_sync(self, peer: int, from_round: int | None = None,
                      force: bool = False) -> None:
        """Ask `peer` for its records from `from_round` (default: ours). One unforced request
        is outstanding at a time; a forced one goes out regardless and blocks nothing."""
        if not force:
            if self.now < self._sync_until:
                return
            self._sync_until, self._sync_peer = self.now + self.config.round_timeout, peer
        start = self.round if from_round is None else max(0, from_round)
        self._send(peer, SyncRequest(self.round, start, self.config.sync_batch))

    def _poll_for_sync(self) -> None:
        """Silence may mean everyone else moved on: ask the next peer in turn for records."""
        peers = [m for m in self.members if m != self.id and m not in self.excluded]
        if peers:
            self._poll = (self._poll + 1) % len(peers)
            self._request_sync(peers[self._poll])

    def _on_sync_request(self, env: Envelope) -> None:
        req: SyncRequest = env.message  # type: ignore[assignment]
        if req.from_round < 0 or req.count <= 0:
            self._reject("bad_sync_request", env.sender)
            return
        # answer even with nothing: the asker learns our round and stops waiting on us
        self._send_records(env.sender, req.from_round, req.count)

    def _send_records(self, peer: int, from_round: int, count: int | None = None) -> None:
        count = min(count or self.config.sync_batch, self.config.sync_batch)
        start = from_round - self.history_base  # none before our base: the asker will ask
        records = tuple(self.history[start : start + count]) if start >= 0 else ()  # for a checkpoint
        self._send(peer, SyncResponse(self.round, records))

    def replay(self, records: list[RoundRecord]) -> str | None:
        """Verify and apply committed rounds from round `self.round` on, exactly as state sync
        does (signatures, the set, the commit certificate, the recomputed model hash): the
        audit of a node's log. Returns why the first bad record was refused, or None."""
        self._out = []
        for record in records:
            if record.round != self.round:
                return f"record for round {record.round} where {self.round} was next"
            problem = self._adopt(record)
            if problem:
                return f"round {record.round}: {problem}"
        return None

    def _adopt(self, record: RoundRecord) -> str | None:
        checked = self._verify_record(record)
        if isinstance(checked, str):
            return checked
        proposal, grads, cert = checked
        self._sets[cert.set_digest] = proposal
        result = self._results[cert.set_digest] = self._apply(grads, cert.set_digest)
        if result[2] != cert.model_hash:
            return "sync_bad_result"
        self._commit(proposal, grads, cert, record.prepared, via_sync=True)
        return None

    def _verify_record(self, record: RoundRecord) -> tuple[Envelope, list[Envelope],
                                                             Certificate] | str:
        """Check a replayed round: a leader-signed proposal, signed gradients matching its set,
        built on our model, and a commit certificate for that set."""
        try:
            proposal = self.open(record.proposal)
            grads = [self.open(f) for f in record.gradients]
        except DecodeError as err:
            return f"sync_{err.reason}"
        p = proposal.message
        if not isinstance(p, Proposal) or p.round != record.round or self._proposal_problem(
                proposal):
            return "sync_bad_proposal"
        if len(grads) != len(p.senders):
            return "sync_bad_set"
        for env, sender, digest in zip(grads, p.senders, p.digests, strict=True):
            g = env.message
            if (not isinstance(g, Gradient) or env.sender != sender or env.digest != digest
                    or g.round != record.round or self._gradient_problem(env)):
                return "sync_bad_set"
            if g.base_hash != self.model_hash:
                return "sync_other_model"
        cert = check_certificate(record.certificate, self.open, self._member_set, record.round,
                                 COMMIT)
        if isinstance(cert, str):
            return f"sync_{cert}"
        if cert.set_digest != set_digest(p):
            return "sync_certificate_other_set"
        if record.prepared:
            prepared = check_certificate(record.prepared, self.open, self._member_set,
                                         record.round, PREPARE)
            if isinstance(prepared, str) or (prepared.view, prepared.set_digest,
                                             prepared.model_hash) != (
                    cert.view, cert.set_digest, self.model_hash):
                return "sync_bad_prepared"
        return proposal, grads, cert

    def _on_sync_response(self, env: Envelope) -> None:
        resp: SyncResponse = env.message  # type: ignore[assignment]
        if env.sender == self._sync_peer:
            self._sync_until = -1.0
        if not self.finished and (resp.round - self.round > self.config.checkpoint_gap or (
                not resp.records and resp.round > self.round + 1)):
            # far behind, or the peer holds no records from our round on (it started from a
            # checkpoint itself): fetch a state rather than the rounds
            self._request_checkpoints()
            return
        applied = 0
        for record in resp.records:
            if record.round < self.round:
                if record.round >= self.history_base:
                    self._compare_records(self.history[record.round - self.history_base],
                                          record, env.sender)
                continue
            if record.round != self.round or self.finished:
                continue  # not next in line here (records are normally consecutive)
            problem = self._adopt(record)
            if problem:
                self._reject(problem, env.sender)
                if problem == "sync_other_model":  # their round was built on another model
                    self._probe_fork(env.sender)
                break
            applied += 1
        if resp.round > self.round and not self.finished:
            # more to fetch: at once after a full batch, else (records we could not use yet,
            # e.g. handed to us unasked) once the outstanding request had its time
            self._request_sync(env.sender, force=bool(applied) and applied == len(resp.records))

    # ---- checkpoint state sync (engine/consensus/checkpoint.py) ----------------------------

    def _request_checkpoints(self) -> None:
        """Ask f + 1 peers (the next ones in turn at each try) for their state."""
        if self.now < self._checkpoint_until:
            return
        self._checkpoint_until = self.now + self.config.view_timeout
        peers = [m for m in self.members if m != self.id and m not in self.excluded]
        for i in range(min(self.f + 1, len(peers))):
            peer = peers[(self._checkpoint_turn + i) % len(peers)]
            self._send(peer, CheckpointRequest(self.round))
        self._checkpoint_turn += self.f + 1

    def _on_checkpoint_request(self, env: Envelope) -> None:
        req: CheckpointRequest = env.message  # type: ignore[assignment]
        if (req.round >= self.round or not self.history or env.sender in self.excluded
                or (env.sender, self.round) in self._served):
            return  # not behind us, nothing to offer, or already sent this round's state
        self._served.add((env.sender, self.round))
        self._send(env.sender, Checkpoint(self.round, self.history[-1], self.params,
                                          self.velocity, self.last_update, tuple(self.epochs)))

    def _on_checkpoint(self, env: Envelope) -> None:
        cp: Checkpoint = env.message  # type: ignore[assignment]
        if cp.round <= self.round or self.finished:
            return
        cert = check_checkpoint(cp, self.open, self.params.shape, self.velocity.shape)
        if isinstance(cert, str):
            self._reject(cert, env.sender)
            return
        agreed = self._offers.add(env, cert)
        if agreed is not None:
            self._adopt_checkpoint(agreed[0], agreed[1])

    def _adopt_checkpoint(self, env: Envelope, cert: Certificate) -> None:
        """Continue from the agreed checkpoint `env`; the rounds before it stay with the peers
        (our log starts at its record, and keeps the checkpoint for audits as `base`)."""
        cp: Checkpoint = env.message  # type: ignore[assignment]
        self._install(cp, cert)
        self._out.append(Persist("base", env.frame))
        self._out.append(Persist(f"log/{cp.record.round}", cp.record))
        losses = []
        for frame in cp.record.gradients:
            with contextlib.suppress(DecodeError):
                losses.append(self.open(frame).message.loss)  # type: ignore[union-attr]
        self._out.append(Emit(RoundCommitted(
            self.id, cp.record.round, cert.view, len(cp.record.gradients),
            float(np.mean(losses)) if losses else math.nan, self.model_hash, True,
            self.params)))
        self._out.append(Persist("votes", msgpack.packb([])))
        self._out.append(Persist("checkpoint", self._checkpoint()))
        self._start_round()

    def _install(self, cp: Checkpoint, cert: Certificate) -> None:
        self.params = cp.params.copy()
        self.velocity, self.last_update = cp.velocity.copy(), cp.last_update.copy()
        self.worker_momentum = np.zeros_like(self.params)  # ours: what we would have sent
        if self.sender_adam is not None:
            self.sender_adam.reset()
        self.model_hash = cert.model_hash
        self.history, self.history_base = [cp.record], cp.record.round
        self.round, self.view = cp.round, cert.view
        self._lock = self._valid = None
        self._voted, self._abstain = set(), False
        self.epochs = list(cp.epochs)
        self._requests.clear()
        self._set_membership(self.epochs[-1].members)

    def replay_from(self, base: bytes) -> str | None:
        """Start an audit from the checkpoint a node's log begins with (the one it adopted):
        checked against its record's commit certificate, as when it was adopted."""
        try:
            env = self.open(base)
        except DecodeError as err:
            return f"base_{err.reason}"
        cp = env.message
        if not isinstance(cp, Checkpoint):
            return "base_not_a_checkpoint"
        cert = check_checkpoint(cp, self.open, self.params.shape, self.velocity.shape)
        if isinstance(cert, str):
            return f"base_{cert}"
        self._install(cp, cert)
        return None
