"""The sans-IO Node: `handle(event, now) -> list[Action]`.

A round (this is the crash-fault round; the BFT consensus issue replaces steps 2-3 with voting):

1. every node computes a gradient on its shard and broadcasts it signed;
2. the round's leader, `members[(round + view) % n]`, waits until it holds every member's
   gradient, or until its gather timeout with at least a quorum (3·k > 2·n), and broadcasts a
   signed proposal: the set of (sender, digest) it will aggregate. The view carries over from
   round to round, so a leader that timed out is skipped until the rotation comes back to it;
3. every node that holds the proposal and all gradients in it aggregates them in sender order,
   applies the same optimizer step and records the model hash. A node without a proposal after
   the view timeout moves to the next view (next leader) and re-sends its gradient;
4. a node that learns it is behind (messages from later rounds, or silence) asks a peer for the
   signed round records it missed, checks every signature and digest, and replays them;
5. a node that has committed every round announces its `Head` (last round, proposal, model).

Without a voting phase, proposals of two views of one round can race and different nodes can
apply different ones: a fork. A node never applies a set built on a model other than its own;
it detects the fork there, from a gradient built on another model, or from a finished peer's
`Head` naming another set or model. It then fetches the peer's recent records, finds the first
round where the histories part, and applies a fork choice every node computes the same way
(the later view wins, the digest of the gradient set breaks ties):
the losing side rolls back (from a recent snapshot, or by replaying its own verified records
from the initial model) and replays the winner's records. Forks heal eventually rather than
never happening: removing them is the job of the consensus issue's voting phase.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import msgpack
import numpy as np

from phalanx.engine.aggregate import make_aggregator
from phalanx.engine.byzantine import Behaviour
from phalanx.engine.events import (
    Action,
    Broadcast,
    Compute,
    ComputeDone,
    Emit,
    Event,
    Finished,
    Persist,
    Received,
    Rejected,
    RolledBack,
    RoundCommitted,
    Send,
    SetTimer,
    Started,
    TimerFired,
)
from phalanx.engine.optim import MomentumSGD
from phalanx.engine.workloads import GradientJob, GradientResult, Workload
from phalanx.net.crypto import Identity, sha256
from phalanx.net.envelope import Envelope, seal
from phalanx.net.errors import DecodeError
from phalanx.net.messages import (
    Gradient,
    Head,
    Message,
    Proposal,
    RoundRecord,
    SyncRequest,
    SyncResponse,
)
from phalanx.net.replay import ReplayGuard

Opener = Callable[[bytes], Envelope]


@functools.lru_cache(maxsize=4096)  # pure; shared by the nodes of one simulation
def set_digest(proposal: Proposal) -> bytes:
    """What a round aggregated (senders and gradient digests), whichever view proposed it and
    whichever signed copy of each gradient was kept."""
    return sha256(b"".join(s.to_bytes(8, "big", signed=True) + d
                           for s, d in zip(proposal.senders, proposal.digests, strict=True)))


MAX_VIEW = 2**31  # views past this are refused: they would overflow the wire format later


def quorum(n: int) -> int:
    """Smallest k with 3·k > 2·n (integer arithmetic: ceil(2n/3) is one short when 3 | n)."""
    return 2 * n // 3 + 1


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node_id: int
    members: tuple[int, ...]
    rounds: int
    lr: float
    momentum: float
    round_timeout: float  # how long a leader waits for all gradients before settling for a quorum
    view_timeout: float  # how long a node waits for a proposal before trying the next leader
    aggregator: str = "mean"
    sync_batch: int = 16  # round records per sync response
    future_rounds: int = 2  # gradients buffered ahead of the node's own round
    rollback_rounds: int = 8  # recent states kept for cheap rollbacks; older ones are replayed
    dispute_retries: int = 20  # probes of a peer whose head disagrees, before giving up
    head_resends: int = 3  # resends of our head to peers that have not matched it


class Node:
    def __init__(self, config: NodeConfig, identity: Identity, workload: Workload,
                 opener: Opener, behaviour: Behaviour | None = None) -> None:
        self.config = config
        self.id = config.node_id
        self.members = config.members
        self._member_set = frozenset(config.members)
        self.n = len(config.members)
        self.quorum = quorum(self.n)
        self.identity = identity
        self.workload = workload
        self.open = opener
        self.behaviour = behaviour or Behaviour()
        self.aggregate = make_aggregator(config.aggregator)
        self.optimizer = MomentumSGD(config.lr, config.momentum)
        self.guard = ReplayGuard()
        self.rejections: Counter[str] = Counter()
        self.history: list[RoundRecord] = []
        self.round = 0
        self.view = 0
        self.finished = False
        self.seq = 0
        self.now = 0.0
        self.params = workload.init_params()
        self.velocity = np.zeros_like(self.params)
        self.model_hash = sha256(self.params.tobytes())
        self._grads: dict[int, dict[int, Envelope]] = {}
        self._proposals: dict[int, Envelope] = {}  # first valid proposal seen per round
        # state before each of the last rounds, for rolling back a fork (never mutated in place)
        self._snapshots: dict[int, tuple[np.ndarray, np.ndarray, bytes]] = {}
        self._proposed = False
        self._gather_expired = False
        self._own_result: GradientResult | None = None
        self._sync_until = -1.0
        self._sync_peer: int | None = None
        self._early_heads: dict[int, Envelope] = {}  # peers' heads for rounds not yet ours
        self._disputes: dict[int, Envelope] = {}  # peers' heads that disagree with ours
        self._dispute_tries: Counter[int] = Counter()  # probes per peer, bounded
        self._ranks: dict[int, tuple[int, bytes]] = {}  # fork-choice rank of our own rounds
        self._fork_round = -1  # the round in which we last found our model disagreeing
        self._stuck_on: Envelope | None = None  # a proposal we timed out on once
        self._agreed: set[int] = set()  # peers whose head matches ours
        self._head_resends = 0
        self._poll = 0
        self._out: list[Action] = []

    @property
    def settled(self) -> bool:
        """Finished, no peer's head left to reconcile with, and our head matched by every peer
        or resent as often as allowed (a driver may stop now)."""
        done_resending = (self._head_resends >= self.config.head_resends
                          or len(self._agreed) == self.n - 1)
        return self.finished and not self._disputes and done_resending

    # ---- the one entry point ------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Action]:
        self.now, self._out = now, []
        if type(event) is Received:  # one per delivered frame: skip the pattern match
            self._on_frame(event.frame)
            return self.behaviour.outgoing(self._out, self.round)
        match event:
            case TimerFired(name):
                self._on_timer(name)
            case ComputeDone(job, result):
                self._on_computed(job, result)
            case Started(disk):
                self._restore(disk)
                self._start_round()
        return self.behaviour.outgoing(self._out, self.round)

    # ---- helpers ----------------------------------------------------------------------------

    def leader(self, round: int, view: int) -> int:
        return self.members[(round + view) % self.n]

    def _seal(self, message: Message) -> bytes:
        # time-based, so a restarted node (with or without its disk) never reuses a number
        self.seq = max(self.seq + 1, int(self.now * 1_000_000) << 8)
        return seal(self.identity, self.id, self.seq, message)

    def _broadcast(self, message: Message) -> bytes:
        frame = self._seal(message)
        self._out.append(Broadcast(frame, type(message).KIND, message.round))
        return frame

    def _send(self, peer: int, message: Message) -> None:
        self._out.append(Send(peer, self._seal(message), type(message).KIND, message.round))

    def _reject(self, reason: str, sender: int | None) -> None:
        self.rejections[reason] += 1
        self._out.append(Emit(Rejected(self.id, reason, sender)))

    # ---- durable state ---------------------------------------------------------------------

    def _checkpoint(self) -> bytes:
        return msgpack.packb([self.round, self.view, self.model_hash, self.params.tobytes(),
                              self.velocity.tobytes()])

    def _restore(self, disk: Mapping[str, bytes | RoundRecord]) -> None:
        blob = disk.get("checkpoint")
        if not isinstance(blob, bytes):
            return
        round_, view, model_hash, params, velocity = msgpack.unpackb(blob)
        self.round, self.view, self.model_hash = round_, view, model_hash
        self.params = np.frombuffer(params, dtype=np.float32).copy()
        self.velocity = np.frombuffer(velocity, dtype=np.float32).copy()
        records = [disk.get(f"log/{r}") for r in range(round_)]
        self.history = [r for r in records if isinstance(r, RoundRecord)]

    # ---- rounds ------------------------------------------------------------------------------

    def _start_round(self) -> None:
        if self.round >= self.config.rounds:
            if not self.finished:
                self.finished = True
                self._out.append(Emit(Finished(self.id, self.round, self.model_hash)))
                if self.history:
                    self._broadcast(self._head())
                    self._head_resends = 0
                    self._out.append(SetTimer("rehead", self.config.view_timeout))
                early, self._early_heads = self._early_heads, {}
                for env in early.values():
                    self._on_head(env)
            return
        self._proposed, self._gather_expired = False, False
        self._own_result = None
        self._out.append(Compute(GradientJob(self.workload, self.id, self.round, self.params)))
        self._arm_view_timer()
        if self.leader(self.round, self.view) == self.id:
            self._out.append(SetTimer(f"gather:{self.round}", self.config.round_timeout))

    def _arm_view_timer(self) -> None:
        self._out.append(SetTimer(f"view:{self.round}:{self.view}", self.config.view_timeout))

    def _on_computed(self, job: object, result: GradientResult) -> None:
        if not isinstance(job, GradientJob) or job.round != self.round or self.finished:
            return  # stale: the node moved on (e.g. by sync) while it computed
        problem = self._check_gradient(Gradient(self.round, self.model_hash, result.loss,
                                                result.samples, result.values))
        if problem:  # e.g. a diverged model: never send what every peer would reject
            self._reject(f"own_{problem}", self.id)
            return
        self._own_result = result
        self._send_own_gradient()
        self._progress()

    def _send_own_gradient(self) -> None:
        r = self._own_result
        if r is None:
            return
        frame = self._broadcast(Gradient(self.round, self.model_hash, r.loss, r.samples, r.values))
        self._grads.setdefault(self.round, {})[self.id] = self.open(frame)

    def _on_timer(self, name: str) -> None:
        kind, _, rest = name.partition(":")
        if kind == "rehead":
            self._resend_head()
            return
        if kind == "settle":  # retry the heads we disagreed with (probes can be lost too)
            disputes, self._disputes = self._disputes, {}
            for env in disputes.values():
                self._on_head(env)
            return
        if self.finished:
            return
        if kind == "gather" and int(rest) == self.round:
            self._gather_expired = True
            self._progress()
        elif kind == "view" and rest == f"{self.round}:{self.view}":
            self._view_timeout()

    def _view_timeout(self) -> None:
        proposal = self._proposals.get(self.round)
        if proposal is not None and self._stuck_on is not proposal:
            # we have the set but not every gradient in it: fetch the round from the next peer
            # in turn, and re-send ours in case the set names it
            self._stuck_on = proposal
            self._send_own_gradient()
            self._poll_for_sync(force=True)
            self._arm_view_timer()
            return
        if proposal is not None:  # a second timeout: its gradients are gone (e.g. replaced
            del self._proposals[self.round]  # after a rollback); move on to the next view
        self.view += 1
        self._gather_expired = True  # a later leader settles for a quorum: everyone has waited
        self._send_own_gradient()  # re-send with a fresh sequence number (loss, new leader)
        self._arm_view_timer()
        self._poll_for_sync()
        self._progress()

    def _progress(self) -> None:
        while not self.finished:
            if self.leader(self.round, self.view) == self.id and not self._proposed:
                self._maybe_propose()
            proposal = self._proposals.get(self.round)
            if proposal is None:
                return
            have = self._grads.get(self.round, {})
            p: Proposal = proposal.message  # type: ignore[assignment]
            if len(have) < len(p.senders):
                return  # cannot be complete yet: skip the O(n) scan on every early arrival
            envs = [have.get(s) for s in p.senders]
            if any(e is None or e.digest != d for e, d in zip(envs, p.digests, strict=True)):
                return
            if self._bases(envs) != {self.model_hash}:  # type: ignore[arg-type]
                self._fork_detected(proposal.sender)  # never apply a set built on another model
                return
            self._commit(proposal, envs, via_sync=False)  # type: ignore[arg-type]
            self._start_round()

    @staticmethod
    def _bases(envs: list[Envelope]) -> set[bytes]:
        return {e.message.base_hash for e in envs}  # type: ignore[union-attr]

    def _fork_detected(self, peer: int) -> None:
        """The set we are asked to apply was built on another model than ours: our histories
        part somewhere. Fetch the peer's recent records once per round; the fork choice in
        `_on_sync_response` decides who adopts whose rounds."""
        if self._fork_round != self.round:
            self._fork_round = self.round
            self._reject("fork_detected", peer)
            self._request_sync(peer, self.round - self.config.rollback_rounds, force=True)

    def _maybe_propose(self) -> None:
        held = self._grads.get(self.round, {})
        if len(held) < (self.quorum if self._gather_expired else self.n):
            return  # cheap exit before the O(n) filter below
        have = {s: e for s, e in held.items()
                if e.message.base_hash == self.model_hash}  # type: ignore[union-attr]
        if self.id not in have:
            return
        if len(have) < self.n and not (self._gather_expired and len(have) >= self.quorum):
            return
        senders = tuple(sorted(have))
        proposal = Proposal(self.round, self.view, senders, tuple(have[s].digest for s in senders))
        self._proposals[self.round] = self.open(self._broadcast(proposal))
        self._proposed = True

    def _commit(self, proposal: Envelope, envs: list[Envelope], via_sync: bool) -> None:
        grads: list[Gradient] = [e.message for e in envs]  # type: ignore[misc]
        self._snapshots[self.round] = (self.params, self.velocity, self.model_hash)
        self._snapshots.pop(self.round - self.config.rollback_rounds, None)
        fork = self._fork_round == self.round  # a fork was found (and resolved) this round
        update = self.aggregate([g.values for g in grads])
        self.params, self.velocity = self.optimizer.step(self.params, self.velocity, update)
        self.model_hash = sha256(self.params.tobytes())
        record = RoundRecord(self.round, proposal.frame, tuple(e.frame for e in envs))
        self.history.append(record)
        self._out.append(Persist(f"log/{self.round}", record))
        view = self.view = proposal.message.view  # type: ignore[union-attr]
        loss = float(np.mean([g.loss for g in grads]))
        self._out.append(Emit(RoundCommitted(self.id, self.round, view, len(grads), loss,
                                             self.model_hash, via_sync, fork, self.params)))
        self._grads.pop(self.round, None)
        self._proposals.pop(self.round, None)
        self.round += 1
        self._out.append(Persist("checkpoint", self._checkpoint()))

    # ---- incoming messages -------------------------------------------------------------------

    def _on_frame(self, frame: bytes) -> None:
        try:
            env = self.open(frame)
        except DecodeError as err:
            self._reject(err.reason, None)
            return
        if env.sender == self.id or env.sender not in self._member_set:
            self._reject("not_member", env.sender)
            return
        if not self.guard.check(env.sender, env.seq):
            self._reject("replay", env.sender)
            return
        match env.message:
            case Gradient():
                self._on_gradient(env)
            case Proposal():
                self._on_proposal(env)
            case SyncRequest():
                self._on_sync_request(env)
            case SyncResponse():
                self._on_sync_response(env)
            case Head():
                self._on_head(env)

    def _gradient_problem(self, env: Envelope) -> str | None:
        # a pure function of the message and the model's shape: memoized on the envelope, so
        # nodes sharing a memoizing opener check each broadcast gradient once
        key = ("gradient_problem", self.params.shape)
        facts = env.facts
        if key not in facts:
            facts[key] = self._check_gradient(env.message)  # type: ignore[arg-type]
        return facts[key]  # type: ignore[no-any-return]

    def _check_gradient(self, g: Gradient) -> str | None:
        v = g.values
        if v.dtype != np.float32 or v.shape != self.params.shape:
            return "bad_gradient_shape"
        # a float64 sum of float32 values cannot overflow, so it is finite iff every value is
        if not (math.isfinite(v.sum(dtype=np.float64)) and math.isfinite(g.loss)) or (
                g.samples <= 0):
            return "bad_gradient_values"
        return None

    def _on_gradient(self, env: Envelope) -> None:
        g: Gradient = env.message  # type: ignore[assignment]
        if g.round < self.round or self.finished:
            return  # stale: that round is settled here
        if g.round > self.round + self.config.future_rounds:
            self._request_sync(env.sender)
            return
        problem = self._gradient_problem(env)
        if problem:
            self._reject(problem, env.sender)
            return
        held = self._grads.setdefault(g.round, {})
        previous = held.get(env.sender)
        if previous is not None and previous.digest != env.digest and previous.seq > env.seq:
            return  # an older copy arriving late; keep the newest
        held[env.sender] = env
        if g.round > self.round + 1:
            self._request_sync(env.sender)  # the sender has committed rounds we have not
        elif g.round == self.round and g.base_hash != self.model_hash:
            # built on another model: the sender applied another set in an earlier round;
            # fetch its recent records and let the fork choice decide who adopts whose
            self._request_sync(env.sender, self.round - self.config.rollback_rounds)
        self._progress()

    def _proposal_problem(self, env: Envelope) -> str | None:
        p: Proposal = env.message  # type: ignore[assignment]
        if not 0 <= p.view < MAX_VIEW:
            return "proposal_bad_view"
        if env.sender != self.leader(p.round, p.view):
            return "proposal_not_leader"
        if len(p.senders) != len(p.digests) or len(p.senders) < self.quorum:
            return "proposal_too_small"
        if list(p.senders) != sorted(set(p.senders)) or not self._member_set.issuperset(
                p.senders):
            return "proposal_bad_senders"
        return None

    def _on_proposal(self, env: Envelope) -> None:
        p: Proposal = env.message  # type: ignore[assignment]
        if p.round < self.round or self.finished:
            return
        problem = self._proposal_problem(env)
        if problem:
            self._reject(problem, env.sender)
            return
        if p.round > self.round:
            self._request_sync(env.sender)  # its leader committed our round already
        if p.round <= self.round + self.config.future_rounds:  # bounded: no memory for far rounds
            self._proposals.setdefault(p.round, env)
            self._progress()

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

    def _poll_for_sync(self, force: bool = False) -> None:
        """Silence may mean everyone else moved on: ask the next peer in turn for records."""
        peers = [m for m in self.members if m != self.id]
        if peers:
            self._poll = (self._poll + 1) % len(peers)
            self._request_sync(peers[self._poll], force=force)

    def _on_sync_request(self, env: Envelope) -> None:
        req: SyncRequest = env.message  # type: ignore[assignment]
        if req.from_round < 0 or req.count <= 0:
            self._reject("bad_sync_request", env.sender)
            return
        count = min(req.count, self.config.sync_batch)
        records = tuple(self.history[req.from_round : req.from_round + count])
        # answer even with nothing: the asker learns our round and stops waiting on us
        self._send(env.sender, SyncResponse(self.round, records))

    def _verify_record(self, record: RoundRecord) -> tuple[Envelope, list[Envelope]] | str:
        """Check a replayed round: leader-signed proposal, signed gradients matching its set."""
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
        return proposal, grads

    def _rank(self, record: RoundRecord) -> tuple[int, bytes]:
        """Fork choice between two records of one round: the later view wins, and the digest
        of the gradient set breaks ties; every node ranks any two records the same way."""
        mine = record.round < len(self.history) and self.history[record.round] is record
        if mine and record.round in self._ranks:
            return self._ranks[record.round]  # every peer's head is compared with our last round
        proposal: Proposal = self.open(record.proposal).message  # type: ignore[assignment]
        rank = proposal.view, set_digest(proposal)
        if mine:
            self._ranks[record.round] = rank
        return rank

    def _same_set(self, ours: RoundRecord, theirs: RoundRecord) -> bool:
        if ours.proposal == theirs.proposal:
            return True
        try:
            proposal = self.open(theirs.proposal).message
        except DecodeError:
            return False  # not ours; verification rejects it with its reason
        return isinstance(proposal, Proposal) and set_digest(proposal) == self._rank(ours)[1]

    def _state_before(self, round: int) -> tuple[np.ndarray, np.ndarray, bytes]:
        """The model before `round`: a recent snapshot, or else (after a restart, or for an old
        round) recomputed from the initial model through our own verified records."""
        if round in self._snapshots:
            return self._snapshots[round]
        params = self.workload.init_params()
        velocity = np.zeros_like(params)
        for record in self.history[:round]:
            envs = [self.open(f) for f in record.gradients]
            update = self.aggregate([e.message.values for e in envs])  # type: ignore[union-attr]
            params, velocity = self.optimizer.step(params, velocity, update)
        return params, velocity, sha256(params.tobytes())

    def _rollback(self, round: int) -> None:
        self.params, self.velocity, self.model_hash = self._state_before(round)
        for r in [r for r in self._ranks if r >= round]:
            del self._ranks[r]
        for r in [r for r in self._snapshots if r >= round]:
            del self._snapshots[r]
        del self.history[round:]
        for table in (self._proposals, self._grads):  # what we held for the abandoned fork
            for r in [r for r in table if r >= round]:
                del table[r]
        self.round, self.finished = round, False
        self._agreed.clear()
        self._out.append(Emit(RolledBack(self.id, round)))

    def _on_sync_response(self, env: Envelope) -> None:
        resp: SyncResponse = env.message  # type: ignore[assignment]
        if env.sender == self._sync_peer:
            self._sync_until = -1.0
        applied = 0
        for record in resp.records:
            if not 0 <= record.round <= min(self.round, self.config.rounds - 1):
                continue  # not next in line here (records are normally consecutive)
            ours = self.history[record.round] if record.round < len(self.history) else None
            if ours is not None and self._same_set(ours, record):
                continue  # the same round on both sides (maybe proposed in two views)
            checked = self._verify_record(record)
            if isinstance(checked, str):
                self._reject(checked, env.sender)
                break
            before = self._state_before(record.round)[2] if ours else self.model_hash
            if self._bases(checked[1]) != {before}:
                # their round was built on another model: we part before any round this
                # answer holds; look further back (no earlier round: nothing to fix here)
                first = resp.records[0].round
                if first > 0:
                    self._request_sync(env.sender, first - self.config.sync_batch, force=True)
                break
            if ours is not None:  # the histories part at this round: rank the two
                if self._rank(record) < self._rank(ours):
                    self._send(env.sender, self._head(record.round))  # ours wins: they fetch it
                    break
                self._rollback(record.round)
            self._commit(*checked, via_sync=True)
            applied += 1
        if applied:
            self._start_round()
            if applied == len(resp.records) and resp.round > self.round:
                self._request_sync(env.sender)
            self._progress()

    def _on_head(self, env: Envelope) -> None:
        head: Head = env.message  # type: ignore[assignment]
        if head.round < 0 or not 0 <= head.view < MAX_VIEW:
            self._reject("bad_head", env.sender)
            return
        if head.round >= len(self.history):
            if head.round > self.round:  # (the round in progress: its proposal is on its way)
                self._request_sync(env.sender)  # it has committed rounds we have not
            self._early_heads[env.sender] = env  # compare once we have committed that round
            return
        ours = self._rank(self.history[head.round])
        if head.set_digest == ours[1]:  # the same round: a different model means an earlier split
            disagree = head.round == len(self.history) - 1 and head.model_hash != self.model_hash
        else:
            disagree = (head.view, head.set_digest) > ours
        if disagree:  # the histories part at or before that round
            # forced, so every peer's head that disagrees gets its own probe; retried on the
            # settle timer, a bounded number of times per peer
            self._dispute_tries[env.sender] += 1
            if self._dispute_tries[env.sender] <= self.config.dispute_retries:
                self._request_sync(env.sender, head.round - self.config.rollback_rounds + 1,
                                   force=True)
                self._disputes[env.sender] = env
                self._out.append(SetTimer("settle", self.config.round_timeout))
        elif head.set_digest != ours[1]:
            self._send(env.sender, self._head(head.round))  # ours ranks higher: they should know
        elif head.round == len(self.history) - 1:  # the same last round and model: agreed
            self._agreed.add(env.sender)
            self._dispute_tries.pop(env.sender, None)

    def _resend_head(self) -> None:
        """Heads can be lost (or cut off by a partition): send ours again, with backoff, to
        every peer whose head has not yet matched it."""
        if not self.finished or not self.history:
            return
        missing = [m for m in self.members if m != self.id and m not in self._agreed]
        if missing and self._head_resends < self.config.head_resends:
            self._head_resends += 1
            head = self._head()
            for peer in missing:
                self._send(peer, head)
            delay = self.config.view_timeout * 2**self._head_resends
            self._out.append(SetTimer("rehead", delay))

    def _head(self, round: int | None = None) -> Head:
        """Our record of `round` (default: the last): its rank and the model right after it."""
        last = len(self.history) - 1
        round = last if round is None else round
        view, digest = self._rank(self.history[round])
        after = self.model_hash if round == last else self._state_before(round + 1)[2]
        return Head(round, view, digest, after)
