"""The sans-IO Node driven by hand through the deterministic message pump of `nodekit`, no
simulator: fault-free rounds, bad frames, state sync (with commit certificates), restarts, view
changes and timers. The BFT specifics (certificates, locks, evidence, abstention) are in
`test_consensus.py`."""

from __future__ import annotations

import numpy as np
from nodekit import DIM, MEMBERS, ZERO_HASH, Kit, N, Pump, config, rejections_of

from phalanx.engine.consensus import Certificate, check_certificate
from phalanx.engine.events import (
    Action,
    Broadcast,
    Compute,
    Emit,
    Finished,
    Persist,
    Received,
    Rejected,
    RoundCommitted,
    Send,
    SetTimer,
    Started,
    TimerFired,
)
from phalanx.engine.node import MAX_VIEW, Node, set_digest
from phalanx.net.crypto import Identity, sha256
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

SEED = 7
KIT = Kit(SEED)
OPEN, WORKLOAD = KIT.open, KIT.workload
make_node, forge, cluster = KIT.node, KIT.forge, KIT.cluster


# ---- 1. fault-free -----------------------------------------------------------------------------


def test_fault_free_rounds_commit_identically_and_finish() -> None:
    pump = cluster(rounds=5)
    pump.start()
    pump.run()
    hashes: dict[int, set[bytes]] = {}
    for i in MEMBERS:
        commits = pump.commits(i)
        assert [c.round for c in commits] == [0, 1, 2, 3, 4]
        for c in commits:
            assert (c.view, c.contributors, c.via_sync) == (0, 4, False)
            hashes.setdefault(c.round, set()).add(c.model_hash)
        assert pump.metrics[i][-1] == Finished(i, 5, pump.nodes[i].model_hash)
        assert len(pump.finished(i)) == 1
        assert pump.rejected(i) == [] and not pump.nodes[i].rejections
        assert pump.view_changes(i) == [] and pump.excluded(i) == []
    assert all(len(h) == 1 for h in hashes.values())
    assert len({h for hs in hashes.values() for h in hs}) == 5  # the model really moves
    # no timer was needed: every leader held all four gradients
    assert pump.now == 0.0
    # each round: one proposal by its leader, a PREPARE and a COMMIT vote by every node
    for r in range(5):
        (p,) = [e for i in MEMBERS for e in pump.sent_by(i, Proposal) if e.round == r]
        assert p.sender == r % N
    for i in MEMBERS:
        assert sorted(pump.votes_by(i)) == [(r, 0, ph) for r in range(5) for ph in (PREPARE,
                                                                                     COMMIT)]


def test_fault_free_training_reduces_loss() -> None:
    pump = cluster(rounds=5)
    pump.start()
    pump.run()
    losses = [c.train_loss for c in pump.commits(0)]
    assert losses[-1] < losses[0]
    params = pump.commits(0)[-1].params
    assert WORKLOAD.evaluate(params)["loss"] < WORKLOAD.evaluate(WORKLOAD.init_params())["loss"]


def test_fault_free_is_deterministic() -> None:
    runs = []
    for _ in range(2):
        pump = cluster(rounds=3)
        pump.start()
        pump.run()
        runs.append([(c.round, c.model_hash) for c in pump.commits(2)])
    assert runs[0] == runs[1]


def test_node_quorum_values() -> None:
    node = make_node(0)
    assert (node.n, node.quorum, node.f) == (4, 3, 1)
    for n, q, f in ((6, 5, 1), (7, 5, 2), (9, 7, 2), (10, 7, 3)):
        big = Node(config(0, members=tuple(range(n))), KIT.ids[0], WORKLOAD, OPEN)
        assert (big.quorum, big.f) == (q, f)


# ---- 2. rejections ----------------------------------------------------------------------------


def _gradient(
    rnd: int = 0,
    values: np.ndarray | None = None,
    loss: float = 0.5,
    samples: int = 8,
    base: bytes = ZERO_HASH,
) -> Gradient:
    if values is None:
        values = np.ones(DIM, dtype=np.float32)
    return Gradient(rnd, base, loss, samples, values)


def _bad_frames(target: int) -> list[tuple[str, int | None, bytes]]:
    """(expected reason, expected sender, frame) for a node at round 0, view 0 (leader: 0)."""
    assert target == 1
    other = 2
    stranger = Identity.derive(SEED + 1, other)  # a key that is not in the keyring
    good = forge(other, _gradient())
    flipped = bytearray(good)
    # the signature is the 64 bytes right before the payload's bin header; find it by value
    env = OPEN(good)
    pos = good.index(env.signature)
    flipped[pos + 10] ^= 0x01
    digests = (sha256(b"a"), sha256(b"b"), sha256(b"c"))
    d = sha256(b"set")
    vote_a = KIT.vote(other, 0, 0, PREPARE, d, ZERO_HASH)
    return [
        ("bad_signature", None, forge(other, _gradient(), identity=stranger)),
        ("bad_signature", None, bytes(flipped)),
        ("malformed", None, b"\x00garbage\xff" * 3),
        ("malformed", None, b""),
        ("not_member", target, forge(target, _gradient())),
        ("bad_gradient_shape", other, forge(other, _gradient(values=np.ones(DIM + 1, np.float32)))),
        ("bad_gradient_shape", other, forge(other, _gradient(values=np.ones(DIM, np.float64)))),
        ("bad_gradient_shape", other, forge(other, _gradient(values=np.ones((2, 2), np.float32)))),
        (
            "bad_gradient_values",
            other,
            forge(other, _gradient(values=np.array([1, np.nan, 0, 0], np.float32))),
        ),
        (
            "bad_gradient_values",
            other,
            forge(other, _gradient(values=np.array([1, np.inf, 0, 0], np.float32))),
        ),
        ("bad_gradient_values", other, forge(other, _gradient(loss=float("nan")))),
        ("bad_gradient_values", other, forge(other, _gradient(samples=0))),
        # round 0, view 0: the leader is node 0, so `other` proposing for view 0 is an impostor
        ("proposal_not_leader", other, forge(other, Proposal(0, 0, (1, 2, 3), digests))),
        ("proposal_too_small", 0, forge(0, Proposal(0, 0, (1, 2), digests[:2]))),
        ("proposal_too_small", 0, forge(0, Proposal(0, 0, (1, 2, 3), digests[:2]))),
        ("proposal_bad_senders", 0, forge(0, Proposal(0, 0, (3, 2, 1), digests))),
        ("proposal_bad_senders", 0, forge(0, Proposal(0, 0, (1, 2, 7), digests))),
        ("proposal_bad_view", 0, forge(0, Proposal(0, -4, (1, 2, 3), digests))),
        ("proposal_bad_view", 0, forge(0, Proposal(0, MAX_VIEW, (1, 2, 3), digests))),
        ("proposal_certificate_too_small", other,  # view 2's leader is node 2 = other
         forge(other, Proposal(0, 2, (1, 2, 3), digests, (vote_a,)))),
        ("bad_vote", other, KIT.vote(other, 0, 0, 3, d, ZERO_HASH)),
        ("bad_vote", other, KIT.vote(other, 0, -1, PREPARE, d, ZERO_HASH)),
        ("bad_vote", other, KIT.vote(other, 0, MAX_VIEW, COMMIT, d, ZERO_HASH)),
        ("bad_view_change", other, forge(other, ViewChange(0, 0, (), b""))),
        ("bad_view_change", other, forge(other, ViewChange(0, MAX_VIEW, (), b""))),
        ("view_change_certificate_too_small", other,
         forge(other, ViewChange(0, 1, (vote_a,), b""))),
        ("bad_evidence", other, forge(other, Evidence(0, vote_a, vote_a))),
        ("bad_sync_request", other, forge(other, SyncRequest(0, -1, 4))),
        ("bad_sync_request", other, forge(other, SyncRequest(0, 0, 0))),
    ]


def test_each_bad_frame_is_rejected_with_its_reason() -> None:
    target = 1
    for reason, sender, frame in _bad_frames(target):
        node = make_node(target)
        node.handle(Started(), 0.0)
        actions = node.handle(Received(frame), 0.0)
        assert rejections_of(actions) == [Rejected(target, reason, sender)], reason
        assert node.rejections == {reason: 1}
        assert node.round == 0 and node.view == 0 and node.protocol.proposals == {}
        assert node.excluded == {}
        assert not any(isinstance(a, Send | Broadcast | Persist) for a in actions)


def test_replayed_frame_is_rejected_the_second_time() -> None:
    node = make_node(1)
    node.handle(Started(), 0.0)
    frame = forge(2, _gradient())
    assert rejections_of(node.handle(Received(frame), 0.0)) == []
    assert rejections_of(node.handle(Received(frame), 0.0)) == [Rejected(1, "replay", 2)]
    assert node.rejections == {"replay": 1}
    # same content, fresh sequence number: not a replay
    assert rejections_of(node.handle(Received(forge(2, _gradient())), 0.0)) == []


def test_rejections_do_not_disturb_the_round() -> None:
    """Every kind of bad frame hits node 1 before and during round 0; it still commits rounds 0
    and 1 exactly like the others, and the counters add up."""
    target = 1
    pump = cluster(rounds=2)
    bad = _bad_frames(target)
    replayed = forge(2, SyncRequest(0, 0, 1))  # valid once, then replayed
    pump.start()
    for _, _, frame in bad[: len(bad) // 2]:
        pump.feed(target, Received(frame))
    pump.feed(target, Received(replayed))
    # mid-round: the leader holds the proposal, the votes are still on their way
    pump.run(until=lambda: bool(pump.sent_by(0, Proposal)))
    assert pump.nodes[target].round == 0
    for _, _, frame in bad[len(bad) // 2 :]:
        pump.feed(target, Received(frame))
    pump.feed(target, Received(replayed))
    pump.run()

    expected: dict[str, int] = {"replay": 1}
    for reason, _, _ in bad:
        expected[reason] = expected.get(reason, 0) + 1
    assert dict(pump.nodes[target].rejections) == expected
    emitted: dict[str, int] = {}
    for r in pump.rejected(target):
        emitted[r.reason] = emitted.get(r.reason, 0) + 1
    assert emitted == expected
    for i in MEMBERS:
        if i != target:
            assert not pump.nodes[i].rejections
        assert pump.excluded(i) == []
    ref = [(c.round, c.model_hash, c.contributors) for c in pump.commits(0)]
    assert [(c.round, c.model_hash, c.contributors) for c in pump.commits(target)] == ref
    assert [r for r, _, _ in ref] == [0, 1]
    assert all(pump.nodes[i].finished for i in MEMBERS)


def test_bad_frames_after_commit_then_next_round_still_commits() -> None:
    pump = cluster(rounds=3)
    pump.start()
    pump.run(until=lambda: pump.nodes[1].round == 1)
    assert pump.nodes[1].round == 1
    # bad frames addressed at round 1 (the round node 1 is in now)
    digests = (sha256(b"a"), sha256(b"b"), sha256(b"c"))
    h = pump.nodes[1].model_hash
    for reason, frame in [
        ("bad_gradient_values", forge(2, _gradient(1, np.full(DIM, np.nan, np.float32), base=h))),
        ("bad_gradient_shape", forge(3, _gradient(1, np.ones(1, np.float32), base=h))),
        ("proposal_not_leader", forge(3, Proposal(1, 0, (0, 1, 2), digests))),  # leader: 1
        ("bad_vote", KIT.vote(2, 1, 0, 0, digests[0], h)),
        ("not_member", forge(1, _gradient(1, base=h))),
    ]:
        before = pump.nodes[1].rejections[reason]
        actions = pump.feed(1, Received(frame))
        assert [r.reason for r in rejections_of(actions)] == [reason]
        assert pump.nodes[1].rejections[reason] == before + 1
    pump.run()
    ref = [c.model_hash for c in pump.commits(0)]
    assert len(ref) == 3
    for i in MEMBERS:
        assert [c.model_hash for c in pump.commits(i)] == ref
        assert pump.nodes[i].finished


def test_stale_frames_are_ignored_silently() -> None:
    pump = cluster(rounds=2)
    pump.start()
    pump.run(until=lambda: pump.nodes[1].round == 1)
    assert pump.nodes[1].round == 1
    for frame in [
        forge(3, Proposal(0, 0, (0, 1, 2), (ZERO_HASH,) * 3)),
        KIT.vote(2, 0, 0, PREPARE, sha256(b"x"), ZERO_HASH),
        KIT.vote(3, 0, 7, COMMIT, sha256(b"y"), ZERO_HASH),
    ]:
        assert pump.feed(1, Received(frame)) == []
    # a gradient of a committed round: its sender lags (or forked); it gets our records, once
    stale = forge(2, _gradient(0, np.full(DIM, np.nan, np.float32)))
    (answer,) = pump.feed(1, Received(stale))
    assert isinstance(answer, Send) and answer.peer == 2
    records = KIT.open(answer.frame).message.records  # type: ignore[union-attr]
    assert [r.round for r in records] == [0]
    assert pump.feed(1, Received(forge(2, _gradient(0, np.zeros(DIM, np.float32))))) == []
    assert not pump.nodes[1].rejections


# ---- 3. state sync -----------------------------------------------------------------------------


def _isolate_node3_until_round3(src: int, dst: int, kind: int, rnd: int) -> bool:
    return dst == 3 and rnd <= 2


def test_lagging_node_syncs_and_converges() -> None:
    pump = cluster(rounds=5, drop=_isolate_node3_until_round3)
    pump.start()
    caught_up = lambda: all(pump.nodes[i].round >= 3 for i in (0, 1, 2))  # noqa: E731
    pump.run(until=caught_up)
    # rounds 0..2 commit without node 3 hearing anything (its round-0 gradient got out); the
    # leaders settle for a quorum when their gather timers fire. Node 3's own timers stay put,
    # so it cannot go polling for records on its own.
    for _ in range(50):
        if caught_up():
            break
        pump.advance(only=(0, 1, 2))
        pump.run(until=caught_up)
    assert [pump.nodes[i].round for i in MEMBERS] == [3, 3, 3, 0]
    assert pump.commits(3) == []
    # the round-3 gradients reach node 3; it is 3 rounds behind and asks the first sender
    # for the records it missed, once (rate-limited), and gets them
    sent_before = len(pump.sent)
    pump.run()
    to_3 = [(s, OPEN(f).message) for s, d, f in pump.sent[sent_before:] if d == 3]
    from_3 = [(d, OPEN(f).message) for s, d, f in pump.sent[sent_before:] if s == 3]
    first_sender, first = to_3[0]
    assert isinstance(first, Gradient) and first.round == 3
    requests = [(d, m) for d, m in from_3 if isinstance(m, SyncRequest)]
    assert requests[0] == (first_sender, SyncRequest(0, 0, 16))
    responses = [m for s, m in to_3 if isinstance(m, SyncResponse)]
    assert [r.round for r in responses[0].records][:3] == [0, 1, 2]
    synced = [c for c in pump.commits(3) if c.via_sync]
    assert [c.round for c in synced][:3] == [0, 1, 2]
    ref = {c.round: c.model_hash for c in pump.commits(0)}
    assert all(c.model_hash == ref[c.round] for c in synced)
    pump.run_to_end()
    final = {pump.nodes[i].model_hash for i in MEMBERS}
    assert len(final) == 1
    for i in MEMBERS:
        assert [c.round for c in pump.commits(i)] == [0, 1, 2, 3, 4]
        assert pump.finished(i)[0].model_hash == pump.nodes[i].model_hash
        # the synced records name the sets and carry certificates for the models the others
        # logged (the frames may be other copies: re-sent gradients, another quorum of votes)
        assert _log_summary(pump.nodes[i]) == _log_summary(pump.nodes[0])
    assert not pump.nodes[3].rejections


def _log_summary(node: Node) -> list[tuple[int, bytes, bytes]]:
    """(round, set digest, model hash its commit certificate vouches for) per logged round."""
    out = []
    for record in node.history:
        cert = check_certificate(record.certificate, OPEN, frozenset(MEMBERS), record.round,
                                 COMMIT)
        assert isinstance(cert, Certificate)
        out.append((record.round, set_digest(OPEN(record.proposal).message),  # type: ignore[arg-type]
                    cert.model_hash))
    return out


def test_sync_request_is_answered_from_history() -> None:
    pump = cluster(rounds=3)
    pump.start()
    pump.run()
    node = pump.nodes[2]
    actions = node.handle(Received(forge(1, SyncRequest(0, 1, 99))), 1.0)
    (send,) = actions
    assert isinstance(send, Send) and send.peer == 1
    resp = OPEN(send.frame).message
    assert isinstance(resp, SyncResponse) and resp.round == 3
    assert [r.round for r in resp.records] == [1, 2]
    assert resp.records == tuple(node.history[1:])
    assert all(len(r.certificate) >= node.quorum for r in resp.records)
    # past the end of the history: an empty answer, so the asker stops waiting on us
    (send,) = node.handle(Received(forge(1, SyncRequest(0, 3, 4))), 1.0)
    empty = OPEN(send.frame).message  # type: ignore[union-attr]
    assert isinstance(empty, SyncResponse) and empty.records == () and empty.round == 3


def test_stuck_peer_view_change_is_answered_with_records_once() -> None:
    pump = cluster(rounds=3)
    pump.start()
    pump.run()
    node = pump.nodes[2]
    (send,) = node.handle(Received(forge(1, ViewChange(0, 1, (), b""))), 1.0)
    assert isinstance(send, Send) and send.peer == 1
    resp = OPEN(send.frame).message
    assert isinstance(resp, SyncResponse) and resp.records == tuple(node.history)
    assert node.handle(Received(forge(1, ViewChange(0, 2, (), b""))), 1.0) == []


def test_sync_requests_are_rate_limited() -> None:
    node = make_node(3)
    node.handle(Started(), 0.0)

    def requests(actions: list[Action]) -> list[tuple[int, SyncRequest]]:
        return [(a.peer, OPEN(a.frame).message) for a in actions if isinstance(a, Send)]  # type: ignore[misc]

    far = _gradient(5, base=sha256(b"elsewhere"))
    assert requests(node.handle(Received(forge(0, far)), 1.0)) == [(0, SyncRequest(0, 0, 16))]
    # more evidence within one round timeout (1.0) asks nobody else
    assert requests(node.handle(Received(forge(1, far)), 1.5)) == []
    assert requests(node.handle(Received(forge(2, _gradient(3))), 1.9)) == []
    # once it has passed, the next sign of lagging asks again
    assert requests(node.handle(Received(forge(2, far)), 2.1)) == [(2, SyncRequest(0, 0, 16))]
    assert node.round == 0 and not node.rejections


def _record_and_fresh_node() -> tuple[RoundRecord, Pump, Node]:
    pump = cluster(rounds=1)
    pump.start()
    pump.run()
    (record,) = pump.nodes[0].history
    fresh = make_node(3, rounds=1)
    fresh.handle(Started(), 0.0)
    return record, pump, fresh


def _respond(sender: int, *records: RoundRecord) -> bytes:
    return forge(sender, SyncResponse(1, tuple(records)))


def test_valid_sync_record_is_applied() -> None:
    record, pump, fresh = _record_and_fresh_node()
    prepared = check_certificate(record.prepared, OPEN, frozenset(MEMBERS), 0, PREPARE)
    assert isinstance(prepared, Certificate)  # the record keeps what the commit rests on
    committed = OPEN(record.certificate[0]).message
    assert (prepared.view, prepared.set_digest, prepared.model_hash) == (
        committed.view, committed.set_digest, ZERO_HASH)  # type: ignore[union-attr]
    actions = fresh.handle(Received(_respond(1, record)), 0.0)
    commits = [
        a.metric for a in actions if isinstance(a, Emit) and isinstance(a.metric, RoundCommitted)
    ]
    assert [(c.round, c.via_sync, c.model_hash) for c in commits] == [
        (0, True, pump.nodes[0].model_hash)
    ]
    assert fresh.round == 1 and fresh.finished
    assert Persist("log/0", record) in actions
    assert fresh.history == [record]


def _tampered_records(record: RoundRecord, model_after: bytes) -> list[tuple[str, RoundRecord]]:
    proposal: Proposal = OPEN(record.proposal).message  # type: ignore[assignment]
    grads = list(record.gradients)
    g1 = OPEN(grads[1])
    other: Gradient = g1.message  # type: ignore[assignment]
    # valid signature by the right sender, but other values: its digest is not in the proposal
    resigned = forge(
        g1.sender,
        Gradient(
            other.round, other.base_hash, other.loss, other.samples, other.values + np.float32(1)
        ),
    )
    swapped = [*grads]
    swapped[1] = grads[2]  # a genuine gradient frame, but by a different sender
    leader = OPEN(record.proposal).sender
    impostor = (leader + 1) % N
    fake_proposal = forge(impostor, Proposal(0, proposal.view, proposal.senders, proposal.digests))
    nan_grad = forge(
        g1.sender,
        Gradient(
            other.round,
            other.base_hash,
            other.loss,
            other.samples,
            np.full(DIM, np.nan, np.float32),
        ),
    )
    flipped = bytearray(grads[0])
    flipped[-1] ^= 0xFF
    cert = record.certificate
    digest = set_digest(proposal)
    elsewhere = sha256(b"another model")

    def votes(phase: int, set_d: bytes, model: bytes, voters: tuple[int, ...] = (0, 1, 2),
              round: int = 0) -> tuple[bytes, ...]:
        return tuple(KIT.vote(s, round, 0, phase, set_d, model) for s in voters)

    def with_cert(frames: tuple[bytes, ...]) -> RoundRecord:
        return RoundRecord(0, record.proposal, record.gradients, frames)

    stranger = Identity.derive(SEED + 1, 2)
    return [
        ("sync_bad_set", RoundRecord(0, record.proposal, (grads[0], resigned, *grads[2:]), cert)),
        ("sync_bad_set", RoundRecord(0, record.proposal, tuple(swapped), cert)),
        ("sync_bad_set", RoundRecord(0, record.proposal, tuple(grads[:-1]), cert)),
        ("sync_bad_set", RoundRecord(0, record.proposal, (grads[0], nan_grad, *grads[2:]), cert)),
        ("sync_bad_set", RoundRecord(0, record.proposal, (record.proposal, *grads[1:]), cert)),
        ("sync_bad_proposal", RoundRecord(0, fake_proposal, record.gradients, cert)),
        ("sync_bad_proposal", RoundRecord(0, grads[0], record.gradients, cert)),
        ("sync_bad_digest", RoundRecord(0, record.proposal, (bytes(flipped), *grads[1:]), cert)),
        ("sync_malformed", RoundRecord(0, b"junk", record.gradients, cert)),
        # the commit certificate
        ("sync_certificate_too_small", with_cert(())),
        ("sync_certificate_too_small", with_cert(cert[:2])),
        ("sync_certificate_bad_voters", with_cert((cert[0], cert[0], cert[1]))),
        ("sync_certificate_mixed_votes", with_cert(votes(PREPARE, digest, ZERO_HASH))),
        ("sync_certificate_mixed_votes", with_cert(votes(COMMIT, digest, model_after, round=1))),
        ("sync_certificate_mixed_votes", with_cert((*votes(COMMIT, digest, model_after)[:2],
                                                    *votes(COMMIT, digest, elsewhere, (3,))))),
        ("sync_certificate_bad_signature", with_cert((
            *cert[:2], forge(2, Vote(0, 0, COMMIT, digest, model_after), identity=stranger)))),
        ("sync_certificate_other_set", with_cert(votes(COMMIT, sha256(b"other"), model_after))),
        # a well-formed certificate for a model the set does not produce
        ("sync_bad_result", with_cert(votes(COMMIT, digest, elsewhere))),
        # the prepare certificate kept as evidence must be one, for the committed set
        ("sync_bad_prepared", RoundRecord(0, record.proposal, record.gradients, cert, cert)),
        ("sync_bad_prepared", RoundRecord(0, record.proposal, record.gradients, cert,
                                          votes(PREPARE, sha256(b"other"), ZERO_HASH))),
        ("sync_bad_prepared", RoundRecord(0, record.proposal, record.gradients, cert,
                                          votes(PREPARE, digest, elsewhere))),
    ]


def test_tampered_sync_records_are_rejected_and_node_does_not_advance() -> None:
    record, pump, _ = _record_and_fresh_node()
    assert len(record.gradients) == 4
    model_after = pump.nodes[0].model_hash
    # forged votes with the right contents do make a certificate (the control case)
    forged = tuple(KIT.vote(s, 0, 0, COMMIT, set_digest(OPEN(record.proposal).message),  # type: ignore[arg-type]
                            model_after) for s in (0, 1, 3))
    assert isinstance(check_certificate(forged, OPEN, frozenset(MEMBERS), 0, COMMIT),
                      Certificate)
    for reason, bad in _tampered_records(record, model_after):
        fresh = make_node(3)
        fresh.handle(Started(), 0.0)
        actions = fresh.handle(Received(_respond(1, bad)), 0.0)
        assert rejections_of(actions) == [Rejected(3, reason, 1)], reason
        assert fresh.rejections == {reason: 1}
        assert fresh.round == 0 and fresh.history == [] and fresh.model_hash == ZERO_HASH
        assert not any(isinstance(a, Persist) for a in actions)
        # the genuine record still applies afterwards
        fresh.handle(Received(_respond(2, record)), 0.0)
        assert fresh.round == 1 and fresh.model_hash == model_after
    control = make_node(3)
    control.handle(Started(), 0.0)
    control.handle(Received(_respond(1, RoundRecord(0, record.proposal, record.gradients,
                                                    forged))), 0.0)
    assert control.round == 1 and not control.rejections


def test_sync_stops_at_the_first_bad_record() -> None:
    pump = cluster(rounds=3)
    pump.start()
    pump.run()
    r0, r1, r2 = pump.nodes[0].history
    bad_r1 = RoundRecord(1, r1.proposal, tuple(reversed(r1.gradients)), r1.certificate)
    fresh = make_node(3, rounds=3)
    fresh.handle(Started(), 0.0)
    fresh.handle(Received(_respond(0, r0, bad_r1, r2)), 0.0)
    assert fresh.round == 1 and fresh.rejections == {"sync_bad_set": 1}
    assert fresh.model_hash == pump.commits(0)[0].model_hash
    # a record whose certificate belongs to another round stops it too
    mixed = RoundRecord(1, r1.proposal, r1.gradients, r2.certificate)
    fresh.handle(Received(_respond(0, mixed, r2)), 0.0)
    assert fresh.round == 1 and fresh.rejections["sync_certificate_mixed_votes"] == 1


def test_sync_records_for_other_rounds_are_skipped() -> None:
    pump = cluster(rounds=3)
    pump.start()
    pump.run()
    r0, r1, r2 = pump.nodes[0].history
    fresh = make_node(3, rounds=3)
    fresh.handle(Started(), 0.0)
    # nothing for round 0: it asks the responder for the rounds from its own on
    asked = fresh.handle(Received(_respond(0, r1, r2)), 0.0)
    assert [type(OPEN(a.frame).message) for a in asked] == [SyncRequest]
    assert OPEN(asked[0].frame).message.from_round == 0
    assert fresh.round == 0 and not fresh.rejections
    fresh.handle(Received(_respond(0, r2, r0, r1)), 0.0)  # r2 skipped, then 0 and 1 applied
    assert fresh.round == 2
    assert fresh.model_hash == pump.commits(0)[1].model_hash


# ---- 4. restart from disk -----------------------------------------------------------------------


def test_restart_from_disk_restores_round_and_model() -> None:
    pump = cluster(rounds=5)
    pump.start()
    pump.run(until=lambda: pump.nodes[2].round == 3)
    before = pump.nodes[2]
    assert before.round == 3
    disk = dict(pump.disks[2])
    assert {"checkpoint", "log/0", "log/1", "log/2", "votes"} <= set(disk) <= {
        "checkpoint", "log/0", "log/1", "log/2", "votes", "lock"}
    reborn = make_node(2)
    reborn.handle(Started(disk), pump.now + 1.0)
    assert reborn.round == before.round
    assert reborn.view == before.view
    assert reborn.model_hash == before.model_hash
    assert reborn.params.tobytes() == before.params.tobytes()
    assert reborn.velocity.tobytes() == before.velocity.tobytes()
    assert reborn.history == before.history
    assert reborn.model_hash == sha256(reborn.params.tobytes())
    assert reborn.protocol.signed == before.protocol.signed and not reborn.protocol.abstain


def test_restart_mid_run_rejoins_and_finishes_identically() -> None:
    pump = cluster(rounds=5)
    pump.start()
    pump.run(until=lambda: pump.nodes[2].round == 3)
    # crash node 2: its in-flight events and timers are lost; it comes back a second later
    pump.now += 1.0
    pump.restart(2, make_node(2))
    assert pump.nodes[2].round == 3
    pump.run_to_end()
    final = {pump.nodes[i].model_hash for i in MEMBERS}
    assert len(final) == 1
    assert [c.round for c in pump.commits(2)] == [0, 1, 2, 3, 4]
    for i in MEMBERS:
        assert _log_summary(pump.nodes[i]) == _log_summary(pump.nodes[0])


def test_first_start_with_empty_disk_starts_at_round_zero() -> None:
    node = make_node(1)
    actions = node.handle(Started({}), 5.0)
    assert node.round == 0 and node.model_hash == ZERO_HASH and node.history == []
    assert not node.protocol.abstain  # a first start has signed nothing before
    (compute,) = [a for a in actions if isinstance(a, Compute)]
    assert compute.job.round == 0
    assert SetTimer("view/timeout:0:0", 4.0) in actions
    assert not any(isinstance(a, SetTimer) and a.name.startswith("gather") for a in actions)
    leader = make_node(0)
    assert SetTimer("round/gather:0", 1.0) in leader.handle(Started({}), 5.0)


def test_restart_after_finishing_reports_finished_again() -> None:
    pump = cluster(rounds=2)
    pump.start()
    pump.run()
    reborn = make_node(0, rounds=2)
    actions = reborn.handle(Started(dict(pump.disks[0])), 10.0)
    assert actions == [Emit(Finished(0, 2, pump.nodes[0].model_hash)),
                       SetTimer("accountability/audit", 8.0)]  # and it goes on comparing heads with peers
    assert reborn.finished and reborn.history == pump.nodes[0].history
    # and it still serves its records to a peer that asks
    (send,) = reborn.handle(Received(forge(1, SyncRequest(0, 0, 4))), 10.0)
    assert OPEN(send.frame).message.records == tuple(reborn.history)  # type: ignore[union-attr]


# ---- 5. view change ----------------------------------------------------------------------------


def _silence_node0(src: int, dst: int, kind: int, rnd: int) -> bool:
    return src == 0


def test_view_change_when_leader_is_silent() -> None:
    pump = cluster(rounds=3, drop=_silence_node0)
    pump.start()
    pump.run()
    for i in (1, 2, 3):
        assert pump.nodes[i].round == 0 and pump.commits(i) == []
        assert "view/timeout:0:0" in pump.timers[i]
    pump.now = 4.0
    for i in (1, 2, 3):
        pump.fire(i, "view/timeout:0:0")
        assert pump.nodes[i].view == 1
    pump.run(until=lambda: all(pump.commits(i) for i in (1, 2, 3)))
    for i in (1, 2, 3):
        (c,) = pump.commits(i)
        assert (c.round, c.view, c.contributors, c.via_sync) == (0, 1, 3, False)
        # node 0's gradient missed the committed set: it leads no view of the next round
        assert {pump.nodes[i].leader(1, v) for v in range(6)} == {1, 2, 3}
    assert len({pump.commits(i)[0].model_hash for i in (1, 2, 3)}) == 1
    # the proposal came from node 1 and listed the three live nodes
    proposals = [OPEN(f) for s, _, f in pump.sent if isinstance(OPEN(f).message, Proposal)]
    assert {p.sender for p in proposals} == {1}
    assert {p.message.senders for p in proposals} == {(1, 2, 3)}  # type: ignore[union-attr]
    # the view carries over; with node 0 still silent (and suspected: nobody waits for it)
    # the rest commit to the end without another timer
    pump.run()
    assert all(pump.nodes[i].finished for i in (1, 2, 3))
    hashes = {pump.nodes[i].model_hash for i in (1, 2, 3)}
    assert len(hashes) == 1
    for i in (1, 2, 3):
        assert [c.round for c in pump.commits(i)] == [0, 1, 2]
        assert all(c.contributors == 3 for c in pump.commits(i))


def test_leader_settles_for_quorum_after_gather_timeout() -> None:
    # node 3 is silent; round 0's leader (node 0) waits for all four, then its gather timer
    pump = cluster(rounds=1, drop=lambda src, dst, kind, rnd: src == 3)
    pump.start()
    pump.run()
    assert pump.nodes[0].round == 0 and pump.sent_by(0, Proposal) == []
    pump.now = 1.0
    pump.fire(0, "round/gather:0")
    pump.run()
    (p,) = pump.sent_by(0, Proposal)
    assert p.message.senders == (0, 1, 2)  # type: ignore[union-attr]
    for i in (0, 1, 2):
        (c,) = pump.commits(i)
        assert (c.round, c.view, c.contributors) == (0, 0, 3)


def test_gather_timeout_without_quorum_does_not_propose() -> None:
    pump = cluster(rounds=1, drop=lambda src, dst, kind, rnd: src in (2, 3))
    pump.start()
    pump.run()
    pump.fire(0, "round/gather:0")
    pump.run()
    assert pump.sent_by(0, Proposal) == [] and pump.commits(0) == []


def test_stale_timers_are_ignored() -> None:
    pump = cluster(rounds=2)
    pump.start()
    pump.run()
    for i in MEMBERS:
        assert pump.nodes[i].handle(TimerFired("view/timeout:0:0"), 9.0) == []
        assert pump.nodes[i].handle(TimerFired("round/gather:1"), 9.0) == []
    node = make_node(1)
    node.handle(Started(), 0.0)
    assert node.handle(TimerFired("view/timeout:0:5"), 1.0) == []
    assert node.handle(TimerFired("view/timeout:1:0"), 1.0) == []
    assert node.handle(TimerFired("round/gather:3"), 1.0) == []
    assert node.view == 0
    # the live one moves the view
    actions = node.handle(TimerFired("view/timeout:0:0"), 4.0)
    # alone in view 1: its timer waits for a quorum there; meanwhile it repeats its ViewChange
    assert node.view == 1 and SetTimer("view/rejoin:0:1", 4.0) in actions
    assert not any(isinstance(a, SetTimer) and a.name.startswith("view/timeout:") for a in actions)


# ---- bounds and models -------------------------------------------------------------------------


def test_future_proposals_are_bounded() -> None:
    node = make_node(1, rounds=10**9)
    node.handle(Started(), 0.0)
    digests = (sha256(b"a"), sha256(b"b"), sha256(b"c"))
    for r in range(10, 210):
        view = (2 - r) % N  # make node 2 the leader of (r, view)
        node.handle(Received(forge(2, Proposal(r, view, (0, 1, 2), digests))), 0.0)
    assert len(node.protocol.proposals) <= node.config.future_rounds + 1
    for r in range(10, 110):
        node.handle(Received(KIT.vote(2, r, 0, PREPARE, digests[0], ZERO_HASH)), 0.0)
    assert len(node.protocol.books) <= node.config.future_rounds + 1


def test_a_set_built_on_another_model_is_never_voted_for() -> None:
    # node 3 holds a valid, leader-signed proposal whose gradients were all computed on some
    # other model: it reports them and never votes for the set
    node = make_node(3)
    node.handle(Started(), 0.0)
    other = sha256(b"a model node 3 never had")
    frames = [forge(s, _gradient(0, base=other)) for s in (0, 1, 2)]
    digests = tuple(OPEN(f).digest for f in frames)
    actions = []
    for frame in [*frames, forge(0, Proposal(0, 0, (0, 1, 2), digests))]:
        actions += node.handle(Received(frame), 0.5)
    assert node.round == 0 and node.history == []
    assert node.rejections == {"gradient_other_model": 3}
    assert not any(isinstance(a, Broadcast) and a.kind == Vote.KIND for a in actions)


# ---- worker momentum ---------------------------------------------------------------------------


def test_worker_momentum_is_what_a_node_sends_and_survives_a_restart() -> None:
    beta = 0.9
    pump = KIT.cluster(rounds=2, worker_momentum=beta)
    pump.start()
    pump.run_to_end()
    sent = [e.message for e in pump.signed_by(0, Gradient)]
    by_round = {g.round: g for g in sent}  # re-sends repeat the same vector
    assert sorted(by_round) == [0, 1]
    node = pump.nodes[0]
    params0 = KIT.workload.init_params()
    g0 = KIT.workload.gradient(params0, 0, 0).values
    m0 = ((1 - beta) * g0.astype(np.float64)).astype(np.float32)
    assert by_round[0].values.tobytes() == m0.tobytes()
    after0 = pump.commits(0)[0].params  # the model round 1's gradient is computed on
    g1 = KIT.workload.gradient(after0, 0, 1).values
    m1 = (beta * m0.astype(np.float64) + (1 - beta) * g1.astype(np.float64)).astype(np.float32)
    assert by_round[1].values.tobytes() == m1.tobytes()
    assert node.worker_momentum.tobytes() == m1.tobytes()
    reborn = KIT.node(0, rounds=2, worker_momentum=beta)
    reborn.handle(Started(dict(pump.disks[0])), pump.now)
    assert reborn.worker_momentum.tobytes() == m1.tobytes()
