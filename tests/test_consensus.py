"""The BFT round's specifics: quorum arithmetic, certificates, vote books, no double signing,
Tendermint-style locks, equivocation evidence and exclusion, commit certificates in the log,
restarts with and without disk, and view changes that carry locks. Nodes are driven through the
deterministic `Pump` of `nodekit`; Byzantine members are played by forging frames with their
keys (`Kit.forge`, `Kit.vote`) or by rewriting what they send (`Pump.rewrite`)."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from nodekit import MEMBERS, ZERO_HASH, Kit, N, Pump, Rewrite

from phalanx.engine.consensus import (
    Certificate,
    VoteBook,
    check_certificate,
    conflicting,
    equivocations,
    max_faulty,
    quorum,
)
from phalanx.engine.events import (
    Broadcast,
    ComputeDone,
    Emit,
    Excluded,
    Persist,
    Received,
    Rejected,
    RoundCommitted,
    Started,
    ViewChanged,
)
from phalanx.engine.node import Node, set_digest
from phalanx.engine.workloads import GradientJob
from phalanx.net.crypto import Identity, sha256
from phalanx.net.envelope import Envelope, open_frame
from phalanx.net.messages import (
    COMMIT,
    PREPARE,
    Evidence,
    Gradient,
    Proposal,
    RoundRecord,
    SyncRequest,
    SyncResponse,
    ViewChange,
    Vote,
)

SEED = 23
KIT = Kit(SEED)
OPEN = KIT.open
MEMBER_SET = frozenset(MEMBERS)
D_A, D_B = sha256(b"set A"), sha256(b"set B")
OTHER_MODEL = sha256(b"another model")
STRANGER = Identity.derive(SEED + 1, 2)  # a key no keyring knows


def _votes(senders: tuple[int, ...], view: int = 0, phase: int = PREPARE, digest: bytes = D_A,
           model: bytes = ZERO_HASH, round: int = 0) -> tuple[bytes, ...]:
    return tuple(KIT.vote(s, round, view, phase, digest, model) for s in senders)


def _vote_of(env: Envelope) -> Vote:
    assert isinstance(env.message, Vote)
    return env.message


# ---- quorum arithmetic -------------------------------------------------------------------------


@pytest.mark.parametrize("n", range(4, 14))
def test_quorum_and_max_faulty(n: int) -> None:
    assert quorum(n) == min(k for k in range(n + 1) if 3 * k > 2 * n)
    assert max_faulty(n) == max(f for f in range(n) if 3 * f < n)
    # two quorums share more than f members, so an honest one
    assert 2 * quorum(n) - n > max_faulty(n)
    assert quorum(n) == n - max_faulty(n)


def test_quorum_known_values() -> None:
    assert [quorum(n) for n in range(4, 14)] == [3, 4, 5, 5, 6, 7, 7, 8, 9, 9]
    assert [max_faulty(n) for n in range(4, 14)] == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4]
    assert quorum(6) == 5 and quorum(9) == 7  # ceil(2n/3) would say 4 and 6
    for bad in (0, -1):
        with pytest.raises(ValueError, match="at least one member"):
            quorum(bad)
        with pytest.raises(ValueError, match="at least one member"):
            max_faulty(bad)


# ---- certificates --------------------------------------------------------------------------


def test_certificate_of_a_quorum_of_distinct_members_is_accepted() -> None:
    frames = _votes((3, 0, 2))
    assert check_certificate(frames, OPEN, MEMBER_SET, 0, PREPARE) == Certificate(
        0, 0, PREPARE, D_A, ZERO_HASH, frames)
    every = _votes(MEMBERS, view=5, phase=COMMIT, digest=D_B, model=OTHER_MODEL, round=7)
    cert = check_certificate(every, OPEN, MEMBER_SET, 7, COMMIT)
    assert isinstance(cert, Certificate)
    assert (cert.round, cert.view, cert.phase, cert.set_digest, cert.model_hash) == (
        7, 5, COMMIT, D_B, OTHER_MODEL)


def _bad_certificates() -> list[tuple[str, tuple[bytes, ...]]]:
    v0, v1, _ = _votes((0, 1, 2))
    gradient = KIT.forge(1, Gradient(0, ZERO_HASH, 0.5, 8, np.ones(4, np.float32)))
    resigned = KIT.forge(2, Vote(0, 0, PREPARE, D_A, ZERO_HASH), identity=STRANGER)
    by_other_key = KIT.forge(2, Vote(0, 0, PREPARE, D_A, ZERO_HASH), identity=KIT.ids[1])
    return [
        ("certificate_too_small", ()),
        ("certificate_too_small", (v0, v1)),
        ("certificate_bad_voters", (v0, v1, KIT.vote(1, 0, 0, PREPARE, D_A, ZERO_HASH))),
        ("certificate_bad_voters", (v0, v0, v1)),
        ("certificate_mixed_votes", (v0, v1, KIT.vote(2, 0, 1, PREPARE, D_A, ZERO_HASH))),
        ("certificate_mixed_votes", (v0, v1, KIT.vote(2, 0, 0, PREPARE, D_B, ZERO_HASH))),
        ("certificate_mixed_votes", (v0, v1, KIT.vote(2, 0, 0, PREPARE, D_A, OTHER_MODEL))),
        ("certificate_mixed_votes", (v0, v1, KIT.vote(2, 0, 0, COMMIT, D_A, ZERO_HASH))),
        ("certificate_mixed_votes", (v0, v1, KIT.vote(2, 1, 0, PREPARE, D_A, ZERO_HASH))),
        ("certificate_mixed_votes", _votes((0, 1, 2), phase=COMMIT)),  # wanted: PREPARE
        ("certificate_mixed_votes", _votes((0, 1, 2), round=1)),  # wanted: round 0
        ("certificate_mixed_votes", (v0, v1, gradient)),
        ("certificate_not_votes", (gradient, v0, v1)),
        ("certificate_bad_signature", (v0, v1, resigned)),
        ("certificate_bad_signature", (v0, v1, by_other_key)),
        ("certificate_malformed", (v0, v1, b"\x00not a frame")),
    ]


@pytest.mark.parametrize("case", range(len(_bad_certificates())))
def test_bad_certificate_is_rejected_with_its_reason(case: int) -> None:
    reason, frames = _bad_certificates()[case]
    assert check_certificate(frames, OPEN, MEMBER_SET, 0, PREPARE) == reason


def test_certificate_from_non_members_is_rejected() -> None:
    # sender 4 has a key the opener knows, but it is not a member
    stranger4 = Identity.derive(SEED, 4)
    opener = partial(open_frame, keyring={**KIT.keyring, 4: stranger4.public_key})
    frames = (*_votes((0, 1)), KIT.forge(4, Vote(0, 0, PREPARE, D_A, ZERO_HASH), stranger4))
    assert check_certificate(frames, opener, MEMBER_SET, 0, PREPARE) == "certificate_bad_voters"
    # and a member left out of the membership is a non-member too
    assert check_certificate(_votes((0, 1, 3)), OPEN, frozenset({0, 1, 2}), 0,
                             PREPARE) == "certificate_bad_voters"
    assert isinstance(check_certificate(_votes((0, 1, 2)), OPEN, frozenset({0, 1, 2}), 0,
                                        PREPARE), Certificate)


# ---- vote books ----------------------------------------------------------------------------


def test_vote_book_returns_a_conflicting_vote_as_evidence() -> None:
    book = VoteBook(0, N)
    first = OPEN(KIT.vote(1, 0, 0, PREPARE, D_A, ZERO_HASH))
    assert book.add(first) is None
    # an identical re-send (same content, fresh sequence number) is no evidence
    resend = OPEN(KIT.vote(1, 0, 0, PREPARE, D_A, ZERO_HASH))
    assert resend.frame != first.frame and resend.digest == first.digest
    assert book.add(resend) is None and book.add(first) is None
    # a second, different vote for the same (sender, view, phase) is
    other = OPEN(KIT.vote(1, 0, 0, PREPARE, D_B, ZERO_HASH))
    assert book.add(other) is first
    assert conflicting(first, other) and not conflicting(first, resend)
    assert book.add(OPEN(KIT.vote(1, 0, 0, PREPARE, D_A, OTHER_MODEL))) is first
    # the same sender in another view or phase fills another slot
    assert book.add(OPEN(KIT.vote(1, 0, 1, PREPARE, D_B, ZERO_HASH))) is None
    assert book.add(OPEN(KIT.vote(1, 0, 0, COMMIT, D_B, ZERO_HASH))) is None
    # conflicting votes are not counted
    assert book.count((0, PREPARE, D_A, ZERO_HASH)) == 1
    assert book.count((0, PREPARE, D_B, ZERO_HASH)) == 0


def test_vote_book_certificate_needs_a_quorum_and_drops_excluded_voters() -> None:
    book = VoteBook(0, N)
    key = (0, PREPARE, D_A, ZERO_HASH)
    for frame in _votes((2, 0)):
        book.add(OPEN(frame))
    assert book.certificate(key) is None
    book.add(OPEN(KIT.vote(3, 0, 0, PREPARE, D_A, ZERO_HASH)))
    cert = book.certificate(key)
    assert cert is not None and len(cert.frames) == 3
    assert check_certificate(cert.frames, OPEN, MEMBER_SET, 0, PREPARE) == cert
    assert list(book.keys(PREPARE)) == [key] and list(book.keys(COMMIT)) == []
    book.drop_sender(3)
    assert book.certificate(key) is None and book.count(key) == 2


# ---- a node driven by hand ------------------------------------------------------------------


def _solo(node_id: int, rounds: int = 2) -> Pump:
    """One node in a pump of its own (what it sends reaches nobody), started, its own gradient
    of round 0 computed."""
    pump = Pump({node_id: KIT.node(node_id, rounds)}, open=OPEN)
    pump.start()
    pump.run()
    return pump


def _gradient_frame(sender: int, round: int = 0, base: bytes = ZERO_HASH) -> bytes:
    g = KIT.workload.gradient(KIT.workload.init_params(), sender, round)
    return KIT.forge(sender, Gradient(round, base, g.loss, g.samples, g.values))


def _digests(node: Node, senders: tuple[int, ...]) -> tuple[bytes, ...]:
    held = node.gradients(0)
    return tuple(held[s].digest for s in senders)


SET_A, SET_B = (0, 1, 2, 3), (0, 1, 3)


def _feed_gradients(pump: Pump, node_id: int) -> None:
    for s in MEMBERS:
        if s != node_id:
            pump.feed(node_id, Received(_gradient_frame(s)))
    assert set(pump.nodes[node_id].gradients(0)) == set(MEMBERS)


def _signed(pump: Pump, node_id: int, since: int, phase: int | None = None) -> list[Vote]:
    """The votes `node_id` signed from `pump.log[since:]` on (of `phase` if given)."""
    votes = [_vote_of(e) for e in pump.signed_by(node_id, Vote, since)]
    return [v for v in votes if phase is None or v.phase == phase]


def _proposal(view: int, senders: tuple[int, ...], node: Node,
              justify: tuple[bytes, ...] = ()) -> bytes:
    leader = MEMBERS[view % N]  # round 0
    return KIT.forge(leader, Proposal(0, view, senders, _digests(node, senders), justify))


def _prepare_cert(view: int, senders: tuple[int, ...], node: Node,
                  voters: tuple[int, ...] = (0, 1, 2)) -> tuple[bytes, ...]:
    digest = set_digest(Proposal(0, view, senders, _digests(node, senders)))
    return _votes(voters, view=view, digest=digest)


def _locked(view: int) -> Pump:
    """Node 3 (no leader of views 0..2 of round 0) locked on SET_A at `view`: it prepared
    SET_A, saw a prepare quorum and voted COMMIT for it."""
    pump = _solo(3)
    node = pump.nodes[3]
    _to_view(pump, 3, view)
    _feed_gradients(pump, 3)
    pump.feed(3, Received(_proposal(view, SET_A, node)))
    digest = set_digest(OPEN(_proposal(view, SET_A, node)).message)  # type: ignore[arg-type]
    for frame in _votes((0, 1), view=view, digest=digest):
        pump.feed(3, Received(frame))
    votes = _signed(pump, 3, 0)
    assert [(v.view, v.phase, v.set_digest) for v in votes] == [
        (view, PREPARE, digest), (view, COMMIT, digest)]
    assert pump.disks[3].get("lock") is not None
    return pump


def _to_view(pump: Pump, node_id: int, view: int) -> None:
    """Time node `node_id` out into `view`, with two peers' ViewChanges (forged, lock-free)
    making the quorum that starts each view's timer."""
    node = pump.nodes[node_id]
    while node.view < view:
        pump.now += 4.0
        pump.fire(node_id, f"view/timeout:0:{node.view}")
        peers = [m for m in MEMBERS if m != node_id][:2]
        for p in peers:
            pump.feed(node_id, Received(KIT.forge(p, ViewChange(0, node.view, (), b""))))
    assert node.view == view


def test_locked_node_refuses_another_set_without_justification() -> None:
    pump = _locked(0)
    node = pump.nodes[3]
    _to_view(pump, 3, 1)
    mark = len(pump.log)
    pump.feed(3, Received(_proposal(1, SET_B, node)))
    assert _signed(pump, 3, mark) == [] and not node.rejections
    # the same fresh set does get a vote from a node that is not locked
    free = _solo(3)
    _to_view(free, 3, 1)
    _feed_gradients(free, 3)
    free.feed(3, Received(_proposal(1, SET_B, free.nodes[3])))
    assert [(v.view, v.phase, v.justify_view) for v in _signed(free, 3, 0)] == [
        (1, PREPARE, -1)]  # it cites no certificate
    # and the locked node still prepares its own set, unjustified, in a later view, citing its
    # lock's view
    _to_view(pump, 3, 2)
    pump.feed(3, Received(_proposal(2, SET_A, node)))
    assert [(v.view, v.phase, v.justify_view) for v in _signed(pump, 3, mark)] == [
        (2, PREPARE, 0)]


@pytest.mark.parametrize(("lock_view", "cert_view", "view", "prepares"),
                         [(0, 0, 1, True), (0, 0, 2, True), (0, 1, 2, True), (1, 1, 2, True),
                          (1, 0, 2, False)])
def test_locked_node_follows_a_justification_from_its_lock_view_or_later(
        lock_view: int, cert_view: int, view: int, prepares: bool) -> None:
    pump = _locked(lock_view)
    node = pump.nodes[3]
    _to_view(pump, 3, view)
    mark = len(pump.log)
    justify = _prepare_cert(cert_view, SET_B, node)
    pump.feed(3, Received(_proposal(view, SET_B, node, justify)))
    assert not node.rejections  # the proposal itself is fine either way
    digest_b = set_digest(OPEN(_proposal(view, SET_B, node)).message)  # type: ignore[arg-type]
    expected = [(view, PREPARE, digest_b, cert_view)] if prepares else []
    assert [(v.view, v.phase, v.set_digest, v.justify_view)
            for v in _signed(pump, 3, mark)] == expected  # citing the justification's view


def test_bad_justifications_are_rejected_with_their_reason() -> None:
    base = _solo(3)
    node = base.nodes[3]
    _feed_gradients(base, 3)
    cases = [
        ("proposal_bad_justification", _prepare_cert(0, SET_A, node)),  # another set
        ("proposal_bad_justification", _prepare_cert(2, SET_B, node)),  # not an earlier view
        ("proposal_bad_justification", _prepare_cert(3, SET_B, node)),  # a later view
        ("proposal_certificate_too_small", _prepare_cert(1, SET_B, node, voters=(0, 1))),
        ("proposal_certificate_bad_voters", _prepare_cert(1, SET_B, node, voters=(0, 1, 1))),
        ("proposal_certificate_mixed_votes", tuple(
            KIT.vote(s, 0, 1, COMMIT, OPEN(f).message.set_digest, ZERO_HASH)  # type: ignore[union-attr]
            for s, f in zip((0, 1, 2), _prepare_cert(1, SET_B, node), strict=True))),
    ]
    for reason, justify in cases:
        pump = _solo(3)
        _feed_gradients(pump, 3)
        _to_view(pump, 3, 2)
        actions = pump.feed(3, Received(_proposal(2, SET_B, node, justify)))
        assert [a.metric for a in actions if isinstance(a, Emit)] == [Rejected(3, reason, 2)]
        assert pump.nodes[3].rejections == {reason: 1}
        assert _signed(pump, 3, 0) == []


# ---- no double signing ----------------------------------------------------------------------


def _one_vote_per_slot(pump: Pump, nodes: tuple[int, ...]) -> None:
    for i in nodes:
        for slot, digests in pump.votes_by(i).items():
            assert len(digests) == 1, (i, slot)


def test_leader_equivocation_is_detected_and_never_double_signed() -> None:
    """Leader 0 of (round 0, view 0) shows node 1 and node 3 two different proposals (in both
    orders) and node 2 only the first. No node signs two votes for one slot; nodes 1 and 3
    prove the equivocation, node 2 learns it from them, and everyone excludes node 0."""
    pump: Pump
    forged: dict[bytes, bytes] = {}  # the genuine proposal -> its one forged twin

    def rewrite(src: int, dst: int, frame: bytes) -> list[bytes]:
        env = OPEN(frame)
        if src != 0 or not isinstance(env.message, Proposal) or env.round != 0:
            return [frame]
        if frame not in forged:
            held = pump.nodes[0].gradients(0)
            forged[frame] = KIT.forge(0, Proposal(0, 0, (0, 1, 2),
                                                  tuple(held[s].digest for s in (0, 1, 2))))
        other = forged[frame]
        return {1: [frame, other], 2: [frame], 3: [other, frame]}[dst]

    pump = KIT.cluster(rounds=2, rewrite=rewrite)
    pump.start()
    pump.run()
    (genuine,) = pump.sent_by(0, Proposal)[:1]
    proposals = {e.frame for e in pump.sent_by(0, Proposal) if e.message.round == 0}  # type: ignore[union-attr]
    assert len(proposals) == 2
    for i in (1, 2, 3):
        (ex,) = pump.excluded(i)
        assert ex.offender == 0 and pump.nodes[i].excluded == {0: ex.proof}
        proof = OPEN(ex.proof).message
        assert isinstance(proof, Evidence) and {proof.first, proof.second} == proposals
    # the nodes that saw both proposals accused node 0 themselves, and prepared the first
    for i, first in ((1, genuine.frame), (3, (proposals - {genuine.frame}).pop())):
        accusations = [OPEN(e.frame).message for e in pump.sent_by(i, Evidence)]
        assert accusations and accusations[0].first == first  # type: ignore[union-attr]
        (prepare,) = [v for v in _signed(pump, i, 0, PREPARE) if v.round == 0 and v.view == 0]
        assert prepare.set_digest == set_digest(OPEN(first).message)  # type: ignore[arg-type]
    _one_vote_per_slot(pump, MEMBERS)
    # the others go on without node 0, through view changes where node 0 would lead
    pump.run_to_end(nodes=(1, 2, 3))
    assert len({pump.nodes[i].model_hash for i in (1, 2, 3)}) == 1
    for i in (1, 2, 3):
        assert [c.round for c in pump.commits(i)] == [0, 1]
    _one_vote_per_slot(pump, MEMBERS)


def test_a_node_shown_two_proposals_signs_once() -> None:
    pump = _solo(2)
    node = pump.nodes[2]
    _feed_gradients(pump, 2)
    first, second = _proposal(0, SET_A, node), _proposal(0, SET_B, node)
    pump.feed(2, Received(first))
    actions = pump.feed(2, Received(second))
    votes = _signed(pump, 2, 0)
    assert [(v.view, v.phase) for v in votes] == [(0, PREPARE)]
    assert votes[0].set_digest == set_digest(OPEN(first).message)  # type: ignore[arg-type]
    (evidence,) = [OPEN(a.frame).message for a in actions if isinstance(a, Broadcast)]
    assert evidence == Evidence(0, first, second)
    assert [a.metric.offender for a in actions  # type: ignore[union-attr]
            if isinstance(a, Emit) and isinstance(a.metric, Excluded)] == [0]
    # prepare votes of a quorum for the second set change nothing: node 2 never prepared it
    digest_b = set_digest(OPEN(second).message)  # type: ignore[arg-type]
    for frame in _votes((1, 3), digest=digest_b):
        pump.feed(2, Received(frame))
    assert len(_signed(pump, 2, 0)) == 1


# ---- Byzantine voters: evidence and exclusion ----------------------------------------------------


def _double_voter(offender: int, phases: tuple[int, ...] = (PREPARE, COMMIT)) -> Rewrite:
    """A rewrite hook: every vote `offender` sends of one of `phases` is followed by a second,
    different vote for the same slot."""
    def rewrite(src: int, dst: int, frame: bytes) -> list[bytes]:
        m = OPEN(frame).message
        if src == offender and isinstance(m, Vote) and m.phase in phases:
            return [frame, KIT.vote(offender, m.round, m.view, m.phase, sha256(frame), m.model_hash)]
        return [frame]
    return rewrite


def _check_excluded_everywhere(pump: Pump, offender: int) -> None:
    for i in MEMBERS:
        if i == offender:
            continue
        node = pump.nodes[i]
        (ex,) = pump.excluded(i)
        assert ex.offender == offender and set(node.excluded) == {offender}
        assert pump.disks[i][f"evidence/{offender}"] == ex.proof == node.excluded[offender]
        proof = OPEN(ex.proof).message
        assert isinstance(proof, Evidence)
        first, second = OPEN(proof.first), OPEN(proof.second)
        assert first.sender == second.sender == offender and conflicting(first, second)
        assert node.reputation[offender] == 0.0


def test_double_voter_is_excluded_by_everyone_and_rounds_commit() -> None:
    pump = KIT.cluster(rounds=4, rewrite=_double_voter(3))
    pump.start()
    pump.run_to_end(nodes=(0, 1, 2))
    _check_excluded_everywhere(pump, 3)
    hashes = [[c.model_hash for c in pump.commits(i)] for i in (0, 1, 2)]
    assert hashes[0] == hashes[1] == hashes[2] and len(hashes[0]) == 4
    # round 0's set was certified with node 3's gradient before the exclusion and is applied
    # whole; from then on node 3's gradients are ignored
    for i in (0, 1, 2):
        sets = [OPEN(r.proposal).message.senders for r in pump.nodes[i].history]  # type: ignore[union-attr]
        assert sets[0] == (0, 1, 2, 3) and all(3 not in s for s in sets[1:])
        assert [c.contributors for c in pump.commits(i)] == [4, 3, 3, 3]
        assert all(len(r.gradients) == len(s) for r, s in
                   zip(pump.nodes[i].history, sets, strict=True))
        assert 3 not in pump.nodes[i].gradients(pump.nodes[i].round)
        assert not pump.nodes[i].rejections
    # a gradient node 3 sends now is ignored, silently
    late = _gradient_frame(3, round=4, base=pump.nodes[0].model_hash)
    assert pump.nodes[0].handle(Received(late), pump.now) == []
    # the exclusion survives a restart with the disk (the proof was persisted with it)
    reborn = KIT.node(0)
    reborn.handle(Started(dict(pump.disks[0])), pump.now)
    assert reborn.excluded == pump.nodes[0].excluded and reborn.reputation[3] == 0.0


def test_offender_excluded_after_the_others_locked_does_not_block_the_round() -> None:
    """Everyone locks on round 0's set (which holds node 3's gradient); the commit votes of view
    0 are lost, and node 3 double-votes COMMIT, so it is excluded. The view-1 leader proposes
    the locked set again, justified: it must still be electable (regression: an excluded
    member's gradient made the locked set unvotable forever, and its gradient was dropped)."""
    def lose_commits(src: int, dst: int, frame: bytes) -> list[bytes]:
        m = OPEN(frame).message
        if isinstance(m, Vote) and (m.round, m.view, m.phase) == (0, 0, COMMIT):
            return _double_voter(3)(src, dst, frame) if src == 3 else []
        return [frame]

    pump = KIT.cluster(rounds=2, rewrite=lose_commits)
    pump.start()
    pump.run()
    for i in MEMBERS:
        assert pump.nodes[i].round == 0 and pump.nodes[i].protocol.lock is not None
    pump.run_to_end(nodes=(0, 1, 2))
    _check_excluded_everywhere(pump, 3)
    for i in (0, 1, 2):
        first = pump.commits(i)[0]
        assert (first.round, first.view, first.contributors) == (0, 1, 4)
        assert [c.round for c in pump.commits(i)] == [0, 1]
    assert len({pump.nodes[i].model_hash for i in (0, 1, 2)}) == 1


def test_offender_gradient_still_completes_a_justified_set() -> None:
    """As above, but node 1 missed node 3's gradient in view 0 (so only 0, 2 and 3 prepared and
    locked), and it excluded node 3 before the gradient came again: it must still take that
    gradient to complete the justified set, or the two other honest nodes never make a quorum
    (regression: gradients of excluded senders were all ignored)."""
    pump: Pump
    g3: list[bytes] = []  # node 3's gradient frame of round 0

    def rules(src: int, dst: int, frame: bytes) -> list[bytes]:
        m = OPEN(frame).message
        if isinstance(m, Gradient) and src == 3 and not g3:
            g3.append(frame)
        # node 1 gets node 3's gradient (directly, or relayed inside any other message) only
        # once it has excluded node 3
        if dst == 1 and g3 and g3[0] in frame and 3 not in pump.nodes[1].excluded:
            return []
        if isinstance(m, Vote) and (m.round, m.view, m.phase) == (0, 0, COMMIT):
            return _double_voter(3)(src, dst, frame) if src == 3 else []
        return [frame]

    pump = KIT.cluster(rounds=2, rewrite=rules)
    pump.start()
    pump.run()
    assert g3 and 3 not in pump.nodes[1].gradients(0)
    assert pump.nodes[1].protocol.lock is None
    assert all(pump.nodes[i].protocol.lock is not None for i in (0, 2))
    pump.run_to_end(nodes=(0, 1, 2))
    _check_excluded_everywhere(pump, 3)
    for i in (0, 1, 2):
        first = pump.commits(i)[0]
        assert (first.round, first.view, first.contributors) == (0, 1, 4)
    assert len({pump.nodes[i].model_hash for i in (0, 1, 2)}) == 1
    # gradients of an excluded member that no known set names are still ignored
    node = pump.nodes[0]
    stray = _gradient_frame(3, round=node.round, base=node.model_hash)
    assert node.handle(Received(stray), pump.now) == [] and 3 not in node.gradients(node.round)


def _evidence_frames() -> dict[str, tuple[bytes, bytes]]:
    a = KIT.vote(3, 0, 0, PREPARE, D_A, ZERO_HASH)
    b = KIT.vote(3, 0, 0, PREPARE, D_B, ZERO_HASH)
    flipped = bytearray(b)
    pos = b.index(OPEN(b).signature)
    flipped[pos + 3] ^= 0x01
    commit_a = KIT.vote(3, 0, 1, COMMIT, D_A, OTHER_MODEL)

    def prepare_b(view: int, cites: int) -> bytes:
        return KIT.vote(3, 0, view, PREPARE, D_B, ZERO_HASH, justify_view=cites)

    return {
        "genuine": (a, b),
        "resigned_by_another": (a, KIT.vote(2, 0, 0, PREPARE, D_B, ZERO_HASH)),
        "claimed_with_another_key": (a, KIT.vote(3, 0, 0, PREPARE, D_B, ZERO_HASH,
                                                 identity=KIT.ids[2])),
        "identical": (a, a),
        "same_content": (a, KIT.vote(3, 0, 0, PREPARE, D_A, ZERO_HASH)),
        "bad_signature": (a, bytes(flipped)),
        "other_slot": (a, KIT.vote(3, 0, 1, PREPARE, D_B, ZERO_HASH)),
        "not_a_slot": (KIT.forge(3, SyncRequest(0, 0, 1)), KIT.forge(3, SyncRequest(0, 1, 1))),
        "garbage": (a, b"junk"),
        # a broken lock: COMMIT for A in view 1, then PREPARE for B in view 3 citing view 0
        "genuine_broken_lock": (commit_a, prepare_b(3, 0)),
        "genuine_broken_lock_either_order": (prepare_b(2, -1), commit_a),
        "lock_freed_by_a_certificate_from_its_view": (commit_a, prepare_b(3, 1)),
        "lock_freed_by_a_later_certificate": (commit_a, prepare_b(3, 2)),
        "lock_on_the_same_set": (commit_a, KIT.vote(3, 0, 3, PREPARE, D_A, ZERO_HASH,
                                                    justify_view=-1)),
        "prepare_before_the_lock": (commit_a, prepare_b(0, -1)),
        "prepare_in_the_lock_view": (commit_a, prepare_b(1, -1)),
        "lock_of_another_round": (commit_a, KIT.vote(3, 1, 3, PREPARE, D_B, ZERO_HASH,
                                                     justify_view=-1)),
        "lock_of_another_member": (commit_a, KIT.vote(2, 0, 3, PREPARE, D_B, ZERO_HASH,
                                                      justify_view=-1)),
        "two_commits": (commit_a, KIT.vote(3, 0, 3, COMMIT, D_B, OTHER_MODEL)),
    }


@pytest.mark.parametrize("case", sorted(_evidence_frames()))
def test_evidence_is_checked_before_anyone_is_excluded(case: str) -> None:
    first, second = _evidence_frames()[case]
    node = KIT.node(0)
    node.handle(Started(), 0.0)
    actions = node.handle(Received(KIT.forge(1, Evidence(0, first, second))), 1.0)
    if case.startswith("genuine"):
        assert node.excluded == {3: actions[0].frame}  # type: ignore[union-attr]
        relayed = OPEN(actions[0].frame).message  # type: ignore[union-attr]
        assert isinstance(actions[0], Broadcast) and relayed == Evidence(0, first, second)
        assert Persist("evidence/3", actions[0].frame) in actions
        assert [a.metric for a in actions if isinstance(a, Emit)] == [
            Excluded(0, 3, 0, actions[0].frame)]
        assert not node.rejections
        return
    assert node.excluded == {} and node.reputation[3] == 1.0
    assert actions == [Emit(Rejected(0, "bad_evidence", 1))]
    assert node.rejections == {"bad_evidence": 1}


# ---- commit certificates -----------------------------------------------------------------------


def _check_logged_certificates(pump: Pump, nodes: tuple[int, ...]) -> None:
    for i in nodes:
        node, commits = pump.nodes[i], pump.commits(i)
        assert len(node.history) == len({c.round for c in commits}) > 0
        after = {c.round: c.model_hash for c in commits}
        for r, record in enumerate(node.history):
            assert record.round == r and pump.disks[i][f"log/{r}"] == record
            cert = check_certificate(record.certificate, OPEN, MEMBER_SET, r, COMMIT)
            assert isinstance(cert, Certificate), (i, r, cert)
            assert cert.phase == COMMIT and cert.round == r
            assert cert.model_hash == after[r]
            proposal = OPEN(record.proposal).message
            assert isinstance(proposal, Proposal) and cert.set_digest == set_digest(proposal)
        assert node.model_hash == after[len(node.history) - 1]


def test_every_logged_round_carries_a_valid_commit_certificate() -> None:
    pump = KIT.cluster(rounds=3)
    pump.start()
    pump.run()
    _check_logged_certificates(pump, MEMBERS)
    # a certificate from one round is no certificate for another, nor for the other phase
    record = pump.nodes[0].history[1]
    assert check_certificate(record.certificate, OPEN, MEMBER_SET, 2, COMMIT) == (
        "certificate_mixed_votes")
    assert check_certificate(record.certificate, OPEN, MEMBER_SET, 1, PREPARE) == (
        "certificate_mixed_votes")


# ---- restarts -------------------------------------------------------------------------------


def _first(pump: Pump, node_id: int, since: int, what: str) -> int:
    """Index in `pump.log` of node_id's first commit ('commit') or first vote or proposal
    ('sign') from `since` on (len(log) if none)."""
    for k in range(since, len(pump.log)):
        i, a = pump.log[k]
        if i != node_id:
            continue
        if what == "commit" and isinstance(a, Emit) and isinstance(a.metric, RoundCommitted):
            return k
        if what == "sign" and isinstance(a, Broadcast) and isinstance(
                OPEN(a.frame).message, Vote | Proposal):
            return k
    return len(pump.log)


def test_restart_with_empty_disk_abstains_until_it_commits_by_sync() -> None:
    # without the failure detector the others wait for node 2 at each round's gather timer,
    # which the pump fires only when idle: node 2 catches up while they still run rounds
    # (with it, they race to the end in zero pump time and node 2 never votes again)
    pump = KIT.cluster(rounds=5, detect_failures=False)
    pump.start()
    pump.run(until=lambda: pump.nodes[2].round == 3)
    mark = len(pump.log)
    pump.restart(2, KIT.node(2, detect_failures=False), keep_disk=False)
    assert pump.nodes[2].round == 0
    pump.run_to_end()
    first_commit = _first(pump, 2, mark, "commit")
    assert first_commit < len(pump.log)
    assert _first(pump, 2, mark, "sign") > first_commit
    synced = [c for c in pump.commits(2)[3:] if c.via_sync]
    assert [c.round for c in synced][:3] == [0, 1, 2]
    # once it has committed, it votes again (it is not silenced for good)
    assert _first(pump, 2, mark, "sign") < len(pump.log)
    assert len({pump.nodes[i].model_hash for i in MEMBERS}) == 1
    _one_vote_per_slot(pump, MEMBERS)


def test_restart_with_empty_disk_does_not_vote_on_what_a_fresh_node_would() -> None:
    ref = KIT.cluster(rounds=2)
    ref.start()
    ref.run()
    record0 = ref.nodes[0].history[0]

    def frames(round: int, kinds: tuple[type, ...], phase: int | None = None) -> list[bytes]:
        out = []
        for s, _, f in dict.fromkeys(ref.sent):
            m = OPEN(f).message
            if s != 3 and m.round == round and isinstance(m, kinds) and (
                    phase is None or not isinstance(m, Vote) or m.phase == phase):
                out.append(f)
        return list(dict.fromkeys(out))

    round0 = frames(0, (Gradient, Proposal, Vote), PREPARE)  # no commit votes: no decision
    round1 = frames(1, (Gradient, Proposal))
    for lost_disk in (False, True):
        node = KIT.node(3, rounds=2)
        actions = node.handle(Started({}, lost_disk=lost_disk), 0.0)
        actions += node.handle(_computed(node), 0.0)
        for frame in round0:
            actions += node.handle(Received(frame), 0.5)
        signed = [OPEN(a.frame).message for a in actions
                  if isinstance(a, Broadcast) and a.kind == Vote.KIND]
        expected = [] if lost_disk else [(0, PREPARE), (0, COMMIT)]
        assert [(v.view, v.phase) for v in signed] == expected, lost_disk  # type: ignore[union-attr]
    # the restarted node commits round 0 by sync, and from then on it votes
    assert node.round == 0
    node.handle(Received(KIT.forge(0, SyncResponse(2, (record0,)))), 1.0)
    assert node.round == 1 and node.model_hash == ref.commits(0)[0].model_hash
    actions = node.handle(_computed(node), 1.0)
    for frame in round1:
        actions += node.handle(Received(frame), 1.5)
    signed = [OPEN(a.frame).message for a in actions
              if isinstance(a, Broadcast) and a.kind == Vote.KIND]
    assert [(v.round, v.phase) for v in signed] == [(1, PREPARE)]  # type: ignore[union-attr]


def _computed(node: Node) -> ComputeDone:
    """What the driver hands back for the gradient job of the node's current round."""
    job = GradientJob(node.workload, node.id, node.round, node.params)
    return ComputeDone(job, job.run())


@pytest.mark.parametrize("lost", [PREPARE, COMMIT])
def test_restart_with_disk_never_signs_a_slot_twice(lost: int) -> None:
    """Round 0's votes of phase `lost` are lost, so the round hangs in view 0 after every node
    signed its PREPARE (and, when the COMMIT votes are lost, its COMMIT: every node is then
    locked). Node 2 restarts with its disk and is shown every view-0 message again, then a
    second, different proposal of leader 0 for view 0: it signs nothing for view 0 (from its
    disk it knows it did), and the round commits in view 1."""
    lose = KIT.unless(lambda s, d, e: isinstance(e.message, Vote)
                      and (e.message.round, e.message.view, e.message.phase) == (0, 0, lost))
    pump = KIT.cluster(rounds=2, rewrite=lose)
    pump.start()
    pump.run()
    assert all(pump.nodes[i].round == 0 for i in MEMBERS)
    signed = {PREPARE: {(0, 0, PREPARE)}, COMMIT: {(0, 0, PREPARE), (0, 0, COMMIT)}}[lost]
    assert set(pump.votes_by(2)) == signed
    view0 = list(dict.fromkeys(f for _, d, f in pump.sent if d == 2))
    mark = len(pump.log)
    pump.restart(2, KIT.node(2, rounds=2))
    assert (pump.nodes[2].protocol.lock is not None) == (lost == COMMIT)
    pump.run()  # its own gradient, computed again
    for frame in view0:
        pump.feed(2, Received(frame))
    held = pump.nodes[2].gradients(0)
    assert set(held) == set(MEMBERS)
    other = KIT.forge(0, Proposal(0, 0, (0, 1, 2), tuple(held[s].digest for s in (0, 1, 2))))
    pump.feed(2, Received(other))
    pump.run()
    assert _first(pump, 2, mark, "sign") == len(pump.log)
    assert pump.excluded(2)[0].offender == 0  # it saw leader 0's two proposals
    pump.run_to_end()
    again = _signed(pump, 2, mark)
    assert again and all(v.view >= 1 for v in again)
    for i in MEMBERS:
        assert (pump.commits(i)[0].round, pump.commits(i)[0].view) == (0, 1)
    assert len({pump.nodes[i].model_hash for i in MEMBERS}) == 1
    _one_vote_per_slot(pump, MEMBERS)
    _check_logged_certificates(pump, MEMBERS)


def test_votes_of_an_excluded_member_stop_counting() -> None:
    pump = _solo(2)
    node = pump.nodes[2]
    _feed_gradients(pump, 2)
    pump.feed(2, Received(_proposal(0, SET_A, node)))
    digest = set_digest(OPEN(_proposal(0, SET_A, node)).message)  # type: ignore[arg-type]
    pump.feed(2, Received(KIT.vote(3, 0, 0, PREPARE, digest, ZERO_HASH)))
    # node 3 is proven to have equivocated elsewhere (view 5): its prepare vote is void
    evidence = Evidence(0, KIT.vote(3, 0, 5, PREPARE, D_A, ZERO_HASH),
                        KIT.vote(3, 0, 5, PREPARE, D_B, ZERO_HASH))
    pump.feed(2, Received(KIT.forge(1, evidence)))
    assert set(node.excluded) == {3}
    pump.feed(2, Received(KIT.vote(0, 0, 0, PREPARE, digest, ZERO_HASH)))
    assert [v.phase for v in _signed(pump, 2, 0)] == [PREPARE]  # 2 + 0: no quorum
    pump.feed(2, Received(KIT.vote(3, 0, 0, COMMIT, digest, ZERO_HASH)))  # ignored
    pump.feed(2, Received(KIT.vote(1, 0, 0, PREPARE, digest, ZERO_HASH)))
    assert [v.phase for v in _signed(pump, 2, 0)] == [PREPARE, COMMIT]


def test_restart_with_disk_keeps_its_lock() -> None:
    """Regression: the lock was not persisted, so a node that voted COMMIT for set A and
    restarted with its disk prepared a fresh set B in the next view (breaking the argument
    that q commit votes for A leave no prepare quorum for another set)."""
    pump = _locked(0)
    node = pump.nodes[3]
    disk = dict(pump.disks[3])
    reborn = Pump({3: KIT.node(3)}, open=OPEN)
    reborn.disks[3] = disk
    reborn.restart(3, KIT.node(3))
    reborn.run()
    _feed_gradients(reborn, 3)
    _to_view(reborn, 3, 1)
    mark = len(reborn.log)
    reborn.feed(3, Received(_proposal(1, SET_B, node)))
    assert _signed(reborn, 3, mark) == []
    # its lock's set, re-proposed with its certificate, still gets its vote
    _to_view(reborn, 3, 2)
    justify = _prepare_cert(0, SET_A, node, voters=(0, 1, 3))
    reborn.feed(3, Received(_proposal(2, SET_A, node, justify)))
    assert [(v.view, v.phase) for v in _signed(reborn, 3, mark)] == [(2, PREPARE)]
    # and its ViewChanges (views 1 and 2) tell the next leaders about the lock
    digest_a = set_digest(OPEN(_proposal(0, SET_A, node)).message)  # type: ignore[arg-type]
    changes = [e.message for e in reborn.signed_by(3, ViewChange)]
    assert [vc.view for vc in changes] == [1, 2]  # type: ignore[union-attr]
    for vc in changes:
        assert isinstance(vc, ViewChange)
        cert = check_certificate(vc.lock, OPEN, MEMBER_SET, 0, PREPARE)
        assert isinstance(cert, Certificate) and (cert.view, cert.set_digest) == (0, digest_a)
        assert set_digest(OPEN(vc.proposal).message) == digest_a  # type: ignore[arg-type]


# ---- view changes ---------------------------------------------------------------------------


def test_next_leader_proposes_after_a_quorum_of_view_changes() -> None:
    pump = KIT.cluster(rounds=1, drop=lambda src, dst, kind, rnd: src == 0)
    pump.start()
    pump.run()
    pump.now = 4.0
    pump.fire(1, "view/timeout:0:0")
    pump.run()
    # one peer ahead (f = 1) pulls nobody, and node 1 (view 1's leader) has no quorum
    assert [pump.nodes[i].view for i in (1, 2, 3)] == [1, 0, 0]
    assert pump.sent_by(1, Proposal) == []
    pump.fire(2, "view/timeout:0:0")
    pump.run()
    # f + 1 peers ahead pulled node 3 into view 1 before its own timer fired
    assert pump.view_changes(3) == [ViewChanged(3, 0, 1)]
    assert "view/timeout:0:0" in pump.timers[3]
    (proposal,) = pump.sent_by(1, Proposal)
    assert isinstance(proposal.message, Proposal)
    assert (proposal.message.view, proposal.message.senders, proposal.message.justify) == (
        1, (1, 2, 3), ())
    # it was proposed only once node 3's ViewChange (the third of the quorum) reached node 1
    vc3 = next(k for k, (s, d, f) in enumerate(pump.sent)
               if (s, d) == (3, 1) and isinstance(OPEN(f).message, ViewChange))
    first = next(k for k, (s, _, f) in enumerate(pump.sent) if f == proposal.frame)
    assert vc3 < first
    for i in (1, 2, 3):
        (c,) = pump.commits(i)
        assert (c.round, c.view, c.contributors) == (0, 1, 3)
    _check_logged_certificates(pump, (1, 2, 3))


def test_lock_travels_with_view_changes_and_the_committed_set_survives() -> None:
    """View 0: leader 0 proposes A = {0, 1, 2} (node 3's gradient never reaches it); nodes 0, 2
    and 3 see a prepare quorum and lock on A, node 1 sees none; only node 0 gets the commit
    votes, commits A, and falls silent. View 1's leader is node 1, which holds all four
    gradients and no lock: it must learn the lock from the ViewChanges and propose A again
    (a fresh set would differ and stall the locked nodes), so every node commits A."""
    pump: Pump

    def rules(src: int, dst: int, frame: bytes) -> list[bytes]:
        m = OPEN(frame).message
        if src == 0 and pump.nodes[0].round >= 1:
            return []  # node 0 committed round 0, then went silent
        if isinstance(m, Gradient) and (src, dst, m.round) == (3, 0, 0):
            return []
        lost = {PREPARE: dst == 1, COMMIT: dst != 0}  # in view 0
        if isinstance(m, Vote) and (m.round, m.view) == (0, 0) and lost[m.phase]:
            return []
        return [frame]

    pump = KIT.cluster(rounds=1, rewrite=rules)
    pump.start()
    pump.run()
    pump.now = 1.0
    pump.fire(0, "round/gather:0")
    pump.run()
    (a_commit,) = pump.commits(0)
    assert (a_commit.view, a_commit.contributors) == (0, 3)
    a_env = pump.sent_by(0, Proposal)[0]
    a_digest = set_digest(a_env.message)  # type: ignore[arg-type]
    locks = {i: pump.nodes[i].protocol.lock for i in (1, 2, 3)}
    assert locks[1] is None and all(
        lk is not None and lk.set_digest == a_digest for lk in (locks[2], locks[3]))
    assert all(pump.nodes[i].round == 0 for i in (1, 2, 3))
    pump.now = 4.0
    for i in (1, 2, 3):
        pump.fire(i, "view/timeout:0:0")
    pump.run()
    # the locked nodes' ViewChanges carried their prepare certificate and A's proposal
    for i in (2, 3):
        (vc,) = [e.message for e in pump.sent_by(i, ViewChange)]
        assert isinstance(vc, ViewChange) and vc.proposal == a_env.frame
        cert = check_certificate(vc.lock, OPEN, MEMBER_SET, 0, PREPARE)
        assert isinstance(cert, Certificate) and (cert.view, cert.set_digest) == (0, a_digest)
    (again,) = pump.sent_by(1, Proposal)
    p = again.message
    assert isinstance(p, Proposal) and p.view == 1 and set_digest(p) == a_digest
    assert p.senders == (0, 1, 2) and p.justify
    for i in (1, 2, 3):
        (c,) = pump.commits(i)
        assert (c.round, c.view, c.contributors) == (0, 1, 3)
        assert c.model_hash == a_commit.model_hash
    _check_logged_certificates(pump, MEMBERS)
    _one_vote_per_slot(pump, MEMBERS)


# ---- forks beyond the bound: finished nodes compare heads ----------------------------------------


def _finished_cluster() -> Pump:
    pump = KIT.cluster(rounds=2)
    pump.start()
    pump.run_to_end()
    return pump


def test_finished_node_compares_its_head_with_every_peer_in_turn() -> None:
    pump = _finished_cluster()
    node = pump.nodes[0]
    assert node.finished and pump.timers[0]["accountability/audit"] == pump.now + 8.0  # two view timeouts
    asked = []
    for _ in range(3):
        mark = len(pump.log)
        pump.fire(0, "accountability/audit")
        (request,) = pump.signed_by(0, SyncRequest, since=mark)
        assert request.message == SyncRequest(2, 1, 1)  # our last round's record, please
        asked.append(next(dst for src, dst, f in pump.sent if f == request.frame))
        assert "accountability/audit" in pump.timers[0]  # re-armed
        pump.run()
    assert sorted(asked) == [1, 2, 3]
    assert all(not pump.nodes[i].rejections and not pump.nodes[i].excluded for i in MEMBERS)


def _fork_of(record: RoundRecord, view: int, signers: tuple[int, ...],
             prepared_cites: int | None = None) -> RoundRecord:
    """A record of the same round for another set, certified in `view` by `signers` (with
    their prepare certificate citing `prepared_cites`, when given)."""
    leader = MEMBERS[(record.round + view) % N]
    proposal = KIT.forge(leader, Proposal(record.round, view, (1, 2, 3), (D_B, D_B, D_B)))
    commits = tuple(KIT.vote(s, record.round, view, COMMIT, D_B, OTHER_MODEL) for s in signers)
    prepared = () if prepared_cites is None else tuple(
        KIT.vote(s, record.round, view, PREPARE, D_B, ZERO_HASH, justify_view=prepared_cites)
        for s in signers)
    return RoundRecord(record.round, proposal, (), commits, prepared)


def _show(pump: Pump, node: int, record: RoundRecord) -> set[int]:
    """Feed `node` a peer's answer holding `record`; the members it excluded."""
    pump.feed(node, Received(KIT.forge(1, SyncResponse(2, (record,)))))
    return set(pump.nodes[node].excluded)


def test_fork_certified_in_one_view_names_every_double_signer() -> None:
    pump = _finished_cluster()
    ours = pump.nodes[0].history[-1]
    view = OPEN(ours.certificate[0]).message.view  # type: ignore[union-attr]
    signers = {OPEN(f).sender for f in ours.certificate}
    leader = MEMBERS[(ours.round + view) % N]  # it signed both sides' proposals, too
    assert _show(pump, 0, _fork_of(ours, view, (1, 2, 3))) == (signers & {1, 2, 3}) | (
        {leader} - {0})
    assert pump.nodes[0].rejections["fork_detected"] == 1
    for ex in pump.excluded(0):  # each with a proof any node checks
        proof = OPEN(ex.proof).message
        assert isinstance(proof, Evidence) and conflicting(OPEN(proof.first), OPEN(proof.second))


def test_fork_certified_in_a_later_view_names_the_signers_that_broke_their_locks() -> None:
    pump = _finished_cluster()
    ours = pump.nodes[0].history[-1]
    view = OPEN(ours.certificate[0]).message.view  # type: ignore[union-attr]
    signers = {OPEN(f).sender for f in ours.certificate}
    # they commit-voted our set in `view`, then prepared another in `view + 1` citing nothing
    assert _show(pump, 0, _fork_of(ours, view + 1, (1, 2, 3), prepared_cites=-1)) == (
        signers & {1, 2, 3})
    for ex in pump.excluded(0):
        proof = OPEN(ex.proof).message
        assert isinstance(proof, Evidence)
        phases = {OPEN(proof.first).message.phase, OPEN(proof.second).message.phase}  # type: ignore[union-attr]
        assert phases == {PREPARE, COMMIT}


def test_fork_without_proof_in_its_round_is_traced_back_and_excludes_nobody() -> None:
    """Prepare votes citing our commit's view (a certificate we do not hold) prove nothing:
    nobody is excluded, and the node asks the peer for the rounds before, where the fork may
    have begun."""
    pump = _finished_cluster()
    ours = pump.nodes[0].history[-1]
    view = OPEN(ours.certificate[0]).message.view  # type: ignore[union-attr]
    mark = len(pump.log)
    assert _show(pump, 0, _fork_of(ours, view + 1, (1, 2, 3), prepared_cites=view)) == set()
    assert pump.nodes[0].rejections == {"fork_detected": 1}
    (trace,) = pump.signed_by(0, SyncRequest, since=mark)
    assert trace.message == SyncRequest(2, 0, 1)
    # an agreeing record of the same round (another quorum, the same outcome) is no fork
    again = _finished_cluster()
    same = RoundRecord(ours.round, ours.proposal, ours.gradients, ours.certificate[::-1])
    assert _show(again, 0, same) == set() and not again.nodes[0].rejections


def test_equivocations_yield_each_proof_once() -> None:
    a, b = KIT.vote(3, 0, 0, PREPARE, D_A, ZERO_HASH), KIT.vote(3, 0, 0, PREPARE, D_B, ZERO_HASH)
    commit = KIT.vote(2, 0, 1, COMMIT, D_A, OTHER_MODEL)
    broken = KIT.vote(2, 0, 2, PREPARE, D_B, ZERO_HASH, justify_view=0)
    kept = KIT.vote(1, 0, 2, PREPARE, D_B, ZERO_HASH, justify_view=1)
    frames = [a, commit, a, b, kept, broken, commit, KIT.vote(1, 0, 1, COMMIT, D_A, OTHER_MODEL)]
    pairs = [(x.frame, y.frame) for x, y in equivocations(OPEN(f) for f in frames)]
    assert pairs == [(a, b), (commit, broken)]
