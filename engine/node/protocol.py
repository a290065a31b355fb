"""The round protocol's decisions: propose, prepare, commit-vote, decide, and commit.

A round at one node (n members, f < n/3 Byzantine, quorum q = 2n//3 + 1):

1. it computes a gradient on its shard and broadcasts it signed (engine/node/sender.py);
2. the leader of (round, view), `members[(round + view) % n]`, proposes a set of gradient
   digests: in the round's first view (the view the previous round committed in, so a leader
   that timed out is skipped) every member's once it holds them all, or at least q of them
   after its gather timeout; in a later view, once q members moved to that view, the set of
   the highest prepare certificate it knows (with the certificate as justification) or else a
   fresh set;
3. PREPARE: it votes for the view's proposal only if it holds every gradient in the set, each
   validated and computed on its own model, and its lock allows it: a node locked on another
   set votes only for a proposal justified by a prepare certificate from a view at or above
   its lock's;
4. COMMIT: on q prepare votes of its view it locks on the set, computes the aggregate and the
   optimizer step, and votes COMMIT with the resulting model hash;
5. on q commit votes for one (view, set, model) it applies the set (the same bit-exact
   aggregate gives the same hash) and logs the round with its commit certificate.

View changes (engine/node/views.py) move a stuck round on; the locks travel with them, so a
later honest leader proposes the set every locked node accepts. Safety (two commit
certificates of a round name one set and model): q commit votes mean more than n/3 honest
nodes locked on the set; a prepare certificate for another set in a later view needs one of
them, which votes for it only if shown a prepare certificate for it from a view at or above its
lock, and by induction there is none.

Each step checks what the round's state allows and `advance` runs them until nothing moves.
What a node signs is recorded per slot (round, view, phase) before the message leaves
(`sign_once`), and signing one slot twice is a `ProtocolError`: the one transition the
protocol must never make.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from phalanx.engine.aggregate import AggregationContext
from phalanx.engine.consensus import Certificate, Key, VoteBook, check_certificate
from phalanx.engine.events import RoundCommitted
from phalanx.engine.node.persisted import SavedLock, SignedSlots
from phalanx.engine.node.proposals import contributions, set_digest
from phalanx.engine.node.service import Disk, ProtocolError, Route, Service
from phalanx.engine.workloads import GradientJob, GradientResult
from phalanx.net.crypto import sha256
from phalanx.net.envelope import Envelope
from phalanx.net.messages import (
    COMMIT,
    PREPARE,
    Certified,
    Fetch,
    Frames,
    Gradient,
    Proposal,
    RoundRecord,
    Vote,
)

if TYPE_CHECKING:
    from phalanx.engine.node.node import Node

Result = tuple[np.ndarray, np.ndarray, bytes, np.ndarray]  # params, velocity, model hash and
# the aggregate (the next round's centre for centered clipping) after a round
PROPOSE = 0  # the leader's slot, beside the PREPARE and COMMIT votes


@dataclass(slots=True)
class RoundState:
    """What a node holds of the round it is in; a new one when the round starts."""

    first_view: int = 0  # the view the round started in
    valid: Certificate | None = None  # highest prepare certificate seen this round
    gather_expired: bool = False  # the leader settles for a quorum of gradients
    patient: bool = False  # the leader, holding a quorum, set how long it waits for the rest
    timer_view: int = -1  # the view of this round whose timer runs
    moved: dict[int, int] = field(default_factory=dict)  # peer -> highest view it moved to
    results: dict[bytes, Result] = field(default_factory=dict)  # set digest -> outcome
    own_result: GradientResult | None = None  # our gradient (or what we send for it)
    own_gradient: Gradient | None = None  # as sent (encoded once: error feedback)
    sent_ratio: float | None = None  # top-k ratio of our gradient, when adaptive


class RoundProtocol(Service):
    """Owns the round's traffic (gradients, proposals, votes, fetches) and its decisions."""

    name = "round"
    messages = (Gradient, Proposal, Vote, Certified, Fetch, Frames)

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        self.grads: dict[int, dict[int, Envelope]] = {}  # round -> sender -> gradient
        self.proposals: dict[tuple[int, int], Envelope] = {}  # (round, view) -> proposal
        self.sets: dict[bytes, Envelope] = {}  # set digest -> a proposal naming it
        self.books: dict[int, VoteBook] = {}  # round -> votes
        self.signed: set[tuple[int, int, int]] = set()  # (round, view, phase) we signed in
        self.lock: Certificate | None = None  # prepare certificate we committed-voted on
        self.abstain = False  # restarted without our disk: we may have voted before
        self.certified: set[tuple[int, Key]] = set()  # quorums we broadcast (linear voting)
        self.state = RoundState()
        self.excluded = node.accountability.excluded  # the same dict, read on hot paths

    def routes(self) -> list[Route]:
        intake = self.node.inbox
        return [Route(Gradient, intake.on_gradient), Route(Proposal, intake.on_proposal),
                Route(Vote, intake.on_vote), Route(Certified, intake.on_certified),
                Route(Fetch, intake.on_fetch), Route(Frames, intake.on_frames)]

    def on_timer(self, name: str) -> None:
        kind, _, rest = name.partition(":")
        if kind != "gather":
            raise ProtocolError(f"unknown round timer {name!r}")
        if not self.node.finished and int(rest) == self.node.round:
            self.state.gather_expired = True
            self.advance()

    def restore(self, disk: Disk) -> None:
        votes = disk.get("votes")
        if votes is not None:  # what we signed in the round we were in: never re-sign
            self.signed = SignedSlots.read(votes).as_set()
        lock = disk.get("lock")
        if lock is not None:  # the prepare certificate we commit-voted on, kept as
            saved = SavedLock.read(lock)  # carefully as our votes
            node = self.node
            cert = check_certificate(saved.votes, node.open, node.membership.member_set,
                                     saved.round, PREPARE)
            if saved.round == node.round and isinstance(cert, Certificate):
                self.lock = cert  # `start_round` keeps a lock of the round it starts
                self.sets[cert.set_digest] = node.open(saved.proposal)

    def on_members(self, members: tuple[int, ...]) -> None:
        quorum = self.node.membership.quorum
        gone = self.node.membership.observers
        for book in self.books.values():  # votes filed early for the rounds from now on
            book.quorum = quorum
            for sender in gone:
                book.drop_sender(sender)

    # ---- a round begins ------------------------------------------------------------------

    def start_round(self) -> None:
        node = self.node
        if node.round >= node.config.rounds:
            node.finish()
            return
        if node.membership.follower:
            node.sync.follow()
            return
        r = node.round
        if self.lock is not None and self.lock.round != r:
            self.lock = None
        # the view carries over from the round's commit: a leader that timed out is skipped
        # until the rotation comes back to it
        self.state = RoundState(first_view=node.view, valid=self.lock)
        self.sets = {digest: env for digest, env in self.sets.items() if env.round == r}
        for table in (self.grads, self.books):
            for old in [k for k in table if k < r]:
                del table[old]
        for key in [k for k in self.proposals if k[0] < r]:
            del self.proposals[key]
        if self.certified:  # quorums of past rounds are never certified again
            self.certified = {c for c in self.certified if c[0] >= r}
        self._judge_early_proposals(r)
        node.accountability.forget_before(r)
        node.detector.round_started()
        node.compute(GradientJob(node.workload, node.id, r, node.params,
                                 context=node.workload_inputs()))
        node.views.arm_timer()
        if node.leader(r, node.view) == node.id:
            node.set_timer(self, f"gather:{r}", node.config.round_timeout)
        self.advance()

    def _judge_early_proposals(self, r: int) -> None:
        """Proposals that came before we reached their round were judged on their form only:
        this round's members judge them now."""
        node = self.node
        for key in [k for k in self.proposals if k[0] == r]:
            env = self.proposals[key]
            problem = node.intake.proposal_problem(env)
            if problem:
                del self.proposals[key]
                digest = set_digest(env.message)  # type: ignore[arg-type]
                if self.sets.get(digest) is env:
                    del self.sets[digest]
                node.reject(problem, env.sender)

    # ---- the round's progress ------------------------------------------------------------

    def advance(self) -> None:
        """Do whatever the current round's state allows: propose, vote, decide."""
        node = self.node
        while not node.finished:
            round_before = node.round
            self._maybe_propose()
            self._maybe_prepare()
            self._maybe_commit_vote()
            self._maybe_decide()
            if node.round == round_before:
                return

    def usable(self, round: int) -> dict[int, Envelope]:
        """Gradients of `round` we could put in a set: built on our model, sender not excluded."""
        members, model = self.node.membership.member_set, self.node.model_hash
        return {s: e for s, e in self.grads.get(round, {}).items()
                if s not in self.excluded and s in members  # not one that just left
                and e.message.base_hash == model}  # type: ignore[union-attr]

    def _maybe_propose(self) -> None:
        node, m = self.node, self.node.membership
        r, v = node.round, node.view
        if node.leader(r, v) != node.id or (r, v, PROPOSE) in self.signed or self.abstain:
            return
        if v == self.state.first_view:
            proposal = self._first_view_proposal(r, v)
        else:
            if sum(1 for w in self.state.moved.values() if w >= v) < m.quorum:
                return  # wait until a quorum left the old views: their locks come with them
            best = self.best_certificate()
            earlier = self.sets.get(best.set_digest) if best else None
            if best is not None and earlier is not None:
                p: Proposal = earlier.message  # type: ignore[assignment]
                proposal = Proposal(r, v, p.senders, p.digests, best.frames, p.change,
                                    p.contributions)
            else:
                proposal = self._fresh_proposal(r, v, self.usable(r))
        if proposal is None:
            return
        self.sign_once(v, PROPOSE)
        self.accept_proposal(node.open(node.broadcast(proposal)))

    def _first_view_proposal(self, r: int, v: int) -> Proposal | None:
        """Every member's gradient we still expect (engine/node/detector.py), or after the
        gather timeout at least the smallest set."""
        node, m, state = self.node, self.node.membership, self.state
        held = self.grads.get(r, {})
        if len(held) < m.min_set or (
                not state.gather_expired and state.patient and not node.detector.suspected
                and len(held) < m.n - len(self.excluded)):
            return None  # cheap exits before the O(n) filter below
        have = self.usable(r)
        if node.id not in have or len(have) < m.min_set:
            return None
        if not state.gather_expired:
            missing = [p for p in m.members if p not in have and p not in self.excluded]
            awaited = node.detector.awaited(missing)
            if awaited:
                self._be_patient(r, awaited)
                return None
        return self._fresh_proposal(r, v, have)

    def _be_patient(self, r: int, awaited: list[int]) -> None:
        """Holding a quorum, wait for the rest only as long as they have taken before."""
        state, node = self.state, self.node
        if state.patient:
            return
        state.patient = True
        until = node.detector.wait_until(awaited)
        if until < node.detector.round_start + node.config.round_timeout:
            node.set_timer(self, f"gather:{r}", max(0.0, until - node.now))

    def _fresh_proposal(self, r: int, v: int, have: dict[int, Envelope]) -> Proposal | None:
        if len(have) < self.node.membership.min_set:
            return None
        node = self.node
        given = {s.name: s.contribution() for s in node.services if s is not node.membership}
        return Proposal(r, v, tuple(sorted(have)), tuple(have[s].digest for s in sorted(have)),
                        change=node.membership.contribution(),
                        contributions=contributions(given))

    def set_gradients(self, proposal: Proposal) -> list[Envelope] | None:
        """The gradients a set names, if we hold every one and each was built on our model."""
        held = self.grads.get(proposal.round, {})
        model = self.node.model_hash
        envs = []
        for s, d in zip(proposal.senders, proposal.digests, strict=True):
            e = held.get(s)
            if e is None or e.digest != d or e.message.base_hash != model:  # type: ignore[union-attr]
                return None
            envs.append(e)
        return envs

    def _maybe_prepare(self) -> None:
        node = self.node
        r, v = node.round, node.view
        env = self.proposals.get((r, v))
        if env is None or (r, v, PREPARE) in self.signed or self.abstain:
            return
        p: Proposal = env.message  # type: ignore[assignment]
        digest = set_digest(p)
        justified = self.justification(p)
        lock = self.lock
        if lock is not None and lock.set_digest != digest and (
                justified is None or justified.view < lock.view):
            return  # locked on another set: only a later certificate releases us
        if not p.justify and any(s in self.excluded for s in p.senders):
            return  # a fresh set with an offender's gradient; a justified one a quorum
            # prepared (maybe committed somewhere) must stay electable, or its locks never free
        if self.set_gradients(p) is None:
            return  # re-checked as gradients arrive
        cited = max(justified.view if justified else -1,
                    lock.view if lock and lock.set_digest == digest else -1)
        self.vote(v, PREPARE, digest, node.model_hash, cited)

    def justification(self, p: Proposal) -> Certificate | None:
        if not p.justify:
            return None
        cert = check_certificate(p.justify, self.node.open, self.node.membership.member_set,
                                 p.round, PREPARE)
        return cert if isinstance(cert, Certificate) else None

    def _maybe_commit_vote(self) -> None:
        node = self.node
        r, v = node.round, node.view
        book = self.books.get(r)
        if book is None or (r, v, COMMIT) in self.signed or self.abstain:
            return
        for key in book.keys(PREPARE):
            if key[0] != v or key[3] != node.model_hash:
                continue
            cert = book.certificate(key)
            if cert is None:
                continue
            result = self.result(cert.set_digest)
            if result is None:
                return  # we lack the proposal or a gradient: wait for them
            self.lock = cert
            node.persist("lock", SavedLock(r, cert.frames,  # before the vote goes out
                                           self.sets[cert.set_digest].frame))
            self.note_certificate(cert)
            self.vote(v, COMMIT, cert.set_digest, result[2])
            return

    def _maybe_decide(self) -> None:
        node = self.node
        book = self.books.get(node.round)
        if book is None:
            return
        for key in book.keys(COMMIT):
            cert = book.certificate(key)
            if cert is None:
                continue
            result = self.result(cert.set_digest)
            if result is None:
                node.sync.request(self._voters(cert)[0])  # decided without us: fetch it
                return
            if result[2] != cert.model_hash:
                node.reject("commit_model_mismatch", None)
                node.sync.request(self._voters(cert)[0])
                return
            proposal = self.sets[cert.set_digest]
            self.commit(proposal, self.set_gradients(proposal.message) or [], cert,  # type: ignore[arg-type]
                        self._prepared(cert), via_sync=False)
            return

    def _voters(self, cert: Certificate) -> list[int]:
        """Peers that signed `cert` (they have decided the round), else every peer."""
        node = self.node
        signers = [node.open(f).sender for f in cert.frames]
        return [s for s in signers if s != node.id] or [
            m for m in node.membership.members if m != node.id]

    def result(self, digest: bytes) -> Result | None:
        """Our model after applying the set `digest` (memoized per round), if we can."""
        results = self.state.results
        if digest not in results:
            proposal = self.sets.get(digest)
            envs = None if proposal is None else self.set_gradients(
                proposal.message)  # type: ignore[arg-type]
            if envs is None:
                return None
            results[digest] = self.apply(envs, digest)
        return results[digest]

    def apply(self, envs: list[Envelope], digest: bytes) -> Result:
        # the context is the same on every honest node: the rule's f, a seed from the set, the
        # last update
        node, m = self.node, self.node.membership
        ctx = AggregationContext(m.rule_f, int.from_bytes(digest[:8], "big") >> 1,
                                 node.last_update)
        update = m.aggregate([node.dense(e) for e in envs], ctx)
        params, velocity = node.optimizer.step(node.params, node.velocity, update,
                                               node.round + 1)
        return params, velocity, sha256(params.tobytes()), update

    # ---- what we sign ----------------------------------------------------------------------

    def sign_once(self, view: int, phase: int) -> None:
        """Remember (and persist, before anything is sent) that we signed in this slot: a
        restart with this disk never signs a second, different message for it."""
        slot = (self.node.round, view, phase)
        if slot in self.signed:
            raise ProtocolError(f"slot {slot} signed twice")
        self.signed.add(slot)
        self.node.persist("votes", SignedSlots.of(self.signed))

    def vote(self, view: int, phase: int, digest: bytes, model_hash: bytes,
             justify_view: int = -1) -> None:
        node = self.node
        self.sign_once(view, phase)
        vote = Vote(node.round, view, phase, digest, model_hash, justify_view)
        leader = node.leader(node.round, view)
        if not node.config.votes_to_leader:
            frame = node.broadcast(vote)
        elif leader == node.id:
            frame = node.sign(vote)
        else:
            frame = node.sign(vote)
            node.send_frame(leader, frame, vote)
        self.book(node.round).add(node.open(frame))
        self.certify(node.round, (view, phase, digest, model_hash))

    def certify(self, round: int, key: Key) -> None:
        """Linear voting: as the view's leader, broadcast each quorum of votes once."""
        node = self.node
        if not node.config.votes_to_leader or node.leader(round, key[0]) != node.id:
            return
        if (round, key) in self.certified:
            return
        cert = self.book(round).certificate(key)
        if cert is not None:
            self.certified.add((round, key))
            node.broadcast(Certified(round, key[1], cert.frames))

    def book(self, round: int) -> VoteBook:
        book = self.books.get(round)
        if book is None:
            book = self.books[round] = VoteBook(round, self.node.membership.n)
        return book

    def note_certificate(self, cert: Certificate) -> None:
        if self.state.valid is None or cert.view > self.state.valid.view:
            self.state.valid = cert

    def best_certificate(self) -> Certificate | None:
        valid, lock = self.state.valid, self.lock
        if valid is None or (lock is not None and lock.view > valid.view):
            return lock
        return valid

    def _prepared(self, cert: Certificate) -> tuple[bytes, ...]:
        """The prepare certificate behind a commit certificate, if we hold it (our lock, or a
        quorum of prepare votes in our book)."""
        lock = self.lock
        if lock is not None and (lock.view, lock.set_digest) == (cert.view, cert.set_digest):
            return lock.frames
        book = self.books.get(self.node.round)
        prepared = book and book.certificate((cert.view, PREPARE, cert.set_digest,
                                              self.node.model_hash))
        return prepared.frames if prepared else ()

    def accept_proposal(self, env: Envelope) -> None:
        p: Proposal = env.message  # type: ignore[assignment]
        self.proposals.setdefault((p.round, p.view), env)
        self.sets.setdefault(set_digest(p), env)
        if p.round == self.node.round:
            justified = self.justification(p)
            if justified is not None:
                self.note_certificate(justified)
            self.node.inbox.fetch_missing(env)
            self.advance()

    # ---- the round commits -----------------------------------------------------------------

    def commit(self, proposal: Envelope, envs: list[Envelope], cert: Certificate,
               prepared: tuple[bytes, ...], via_sync: bool) -> None:
        node = self.node
        grads: list[Gradient] = [e.message for e in envs]  # type: ignore[misc]
        node.params, node.velocity, node.model_hash, node.last_update = self.state.results[
            cert.set_digest]
        record = RoundRecord(node.round, proposal.frame, tuple(e.frame for e in envs),
                             cert.frames, prepared)
        node.sync.keep(record)
        p: Proposal = proposal.message  # type: ignore[assignment]
        if not via_sync:
            node.detector.round_committed(node.round, self.grads.get(node.round, {}))
        node.set_last_set(p.senders)
        node.persist(f"log/{node.round}", record)
        loss = float(np.mean([g.loss for g in grads]))
        own = self.state.own_result
        node.emit(RoundCommitted(node.id, node.round, cert.view, len(grads), loss,
                                 node.model_hash, via_sync, node.params, self.state.sent_ratio,
                                 dict(own.metrics) if own is not None else {}))
        included = {e.sender for e in envs}
        for peer in node.reputation:
            if peer not in self.excluded:  # moving average of "its gradient made the round"
                node.reputation[peer] = 0.9 * node.reputation[peer] + 0.1 * (peer in included)
        node.sender.committed(self.state.own_result)
        node.round, node.view = node.round + 1, cert.view
        given = {c.service: c.data for c in p.contributions}
        for service in node.services:  # membership's contribution rides in `change`
            service.on_commit(p.change if service is node.membership
                              else given.get(service.name, b""))
        self.abstain = False
        self.signed = {v for v in self.signed if v[0] >= node.round}
        node.persist("votes", SignedSlots.of(self.signed))
        node.persist("checkpoint", node.saved_state())
        self.start_round()
