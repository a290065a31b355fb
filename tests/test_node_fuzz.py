"""Fuzzing the Node: whatever a peer sends, `handle(Received(frame), now)` returns a list of
actions and never raises; frames that do not open are counted under the opener's reason."""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from nodekit import DIM, MEMBERS, ZERO_HASH, Kit, rejections_of

from phalanx.engine.events import (
    Action,
    Broadcast,
    CancelTimer,
    Compute,
    Emit,
    Persist,
    Received,
    Rejected,
    RoundCommitted,
    Send,
    SetTimer,
    Started,
)
from phalanx.engine.node import Node, set_digest
from phalanx.net.codec import DTYPES
from phalanx.net.crypto import sha256
from phalanx.net.errors import REASONS, DecodeError
from phalanx.net.messages import (
    COMMIT,
    PREPARE,
    Evidence,
    Gradient,
    Message,
    Proposal,
    RoundRecord,
    SyncRequest,
    SyncResponse,
    ViewChange,
    Vote,
)

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SEED = 11
KIT = Kit(SEED)
OPEN = KIT.open
ACTIONS = (Send, Broadcast, SetTimer, CancelTimer, Compute, Persist, Emit)
sign = KIT.forge


def _history() -> tuple[dict[str, Any], list[bytes]]:
    """Run 3 fault-free rounds through the pump; return node 0's disk and every frame that was
    sent (each once, in the order they went out)."""
    pump = KIT.cluster(rounds=3)
    pump.start()
    pump.run()
    assert all(n.finished for n in pump.nodes.values())
    frames = list(dict.fromkeys(frame for _, _, frame in pump.sent))
    # a sync round-trip, so valid SyncRequest/SyncResponse frames are in the pool too
    request = sign(1, SyncRequest(0, 0, 3))
    (reply,) = pump.nodes[0].handle(Received(request), 0.0)
    assert isinstance(reply, Send)
    return dict(pump.disks[0]), [*frames, request, reply.frame]


DISK, VALID_FRAMES = _history()
RECORDS: list[RoundRecord] = [v for k, v in sorted(DISK.items()) if k.startswith("log/")]


def pick(pool: list[Any]) -> st.SearchStrategy[Any]:
    """sampled_from without a strategy repr that spells out every (large) element."""
    return st.integers(0, len(pool) - 1).map(lambda i: pool[i])


def make_node(node_id: int, seasoned: bool) -> Node:
    """A node at round 0 (fresh) or at round 3 with three rounds of history (restarted)."""
    node = KIT.node(node_id, rounds=6)
    node.handle(Started(dict(DISK) if seasoned else {}), 0.0)
    assert node.round == (3 if seasoned else 0)
    return node


def deliver(node: Node, frame: bytes, now: float = 1.0) -> list[Action]:
    """Feed one frame; check the invariants every delivery must keep."""
    before = sum(node.rejections.values())
    actions = node.handle(Received(frame), now)
    assert isinstance(actions, list)
    assert all(isinstance(a, ACTIONS) for a in actions)
    rejected = rejections_of(actions)
    assert sum(node.rejections.values()) - before == len(rejected)
    for r in rejected:
        assert r.node == node.id and node.rejections[r.reason] >= 1
    for a in actions:
        if isinstance(a, Send | Broadcast):
            OPEN(a.frame)  # whatever the node sends opens cleanly
    return actions


def deliver_unopenable_or_any(node: Node, frame: bytes) -> None:
    """If the frame does not open, the node must reject it with the opener's reason."""
    try:
        OPEN(frame)
    except DecodeError as e:
        reason: str | None = e.reason
    else:
        reason = None
    actions = deliver(node, frame)
    if reason is not None:
        assert reason in REASONS
        rejected = [a.metric for a in actions if isinstance(a, Emit)]
        assert rejected == [Rejected(node.id, reason, None)]
        assert actions == [Emit(Rejected(node.id, reason, None))]


# ---- raw bytes and mutations of valid frames -----------------------------------------------

nodes_st = st.builds(make_node, st.sampled_from(MEMBERS), st.booleans())
ints = st.integers(-(2**63), 2**64 - 1)
header_like = st.lists(
    st.one_of(ints, st.binary(max_size=70), st.none(), st.floats(), st.text(max_size=4)),
    min_size=0,
    max_size=9,
).map(lambda xs: msgpack.packb(xs))


@FUZZ
@given(node=nodes_st, frame=st.binary(max_size=300) | header_like)
def test_arbitrary_bytes_never_raise(node: Node, frame: bytes) -> None:
    deliver_unopenable_or_any(node, frame)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    frame = bytearray(draw(pick(VALID_FRAMES)))
    ops = draw(
        st.lists(st.sampled_from(["flip", "truncate", "append", "set"]), min_size=1, max_size=3)
    )
    for op in ops:
        if op == "flip" and frame:
            i = draw(st.integers(0, len(frame) - 1))
            frame[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            frame = frame[: draw(st.integers(0, len(frame)))]
        elif op == "append":
            frame += draw(st.binary(min_size=1, max_size=16))
        elif op == "set" and frame:
            i = draw(st.integers(0, len(frame) - 1))
            frame[i] = draw(st.integers(0, 255))
    return bytes(frame)


@FUZZ
@given(node=nodes_st, frames=st.lists(mutated(), min_size=1, max_size=4))
def test_mutated_frames_never_raise(node: Node, frames: list[bytes]) -> None:
    for frame in frames:
        deliver_unopenable_or_any(node, frame)


@FUZZ
@given(node=nodes_st, frames=st.lists(pick(VALID_FRAMES), min_size=1, max_size=8))
def test_genuine_frames_in_any_order_never_raise(node: Node, frames: list[bytes]) -> None:
    seen: set[bytes] = set()
    for frame in frames:
        actions = deliver(node, frame)
        sender = OPEN(frame).sender
        reasons = [r.reason for r in rejections_of(actions)]
        if sender == node.id:
            assert reasons == ["not_member"]
        elif frame in seen:
            assert reasons == ["replay"]
        else:
            assert "replay" not in reasons and "not_member" not in reasons
        seen.add(frame)


# ---- valid signatures, hostile contents --------------------------------------------------------

rounds = st.one_of(
    st.integers(-3, 8),
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([-(2**63), 2**63 - 1, 2**62]),
)
big = st.one_of(st.integers(-3, 20), ints)
hashes = st.binary(min_size=32, max_size=32) | st.sampled_from([sha256(b"x"), b"\x00" * 32])
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5) | st.just((DIM,))
arrays = st.sampled_from(sorted(DTYPES)).flatmap(lambda name: hnp.arrays(DTYPES[name], shapes))


def _gradients() -> st.SearchStrategy[Gradient]:
    return st.builds(Gradient, rounds, hashes, st.floats(), big, arrays)


frame_bytes = pick(VALID_FRAMES) | st.binary(max_size=64) | mutated()
frame_tuples = st.lists(frame_bytes, max_size=5).map(tuple)
VOTE_FRAMES = [f for f in VALID_FRAMES if isinstance(OPEN(f).message, Vote)]
# frames that may make a certificate: genuine votes of one round and phase, or anything
certificates = st.one_of(
    frame_tuples,
    st.lists(pick(VOTE_FRAMES), max_size=5).map(tuple),
    pick(RECORDS).map(lambda r: r.certificate),
)


def _proposals() -> st.SearchStrategy[Proposal]:
    return st.builds(
        Proposal,
        rounds,
        big,
        st.lists(st.one_of(st.sampled_from(MEMBERS), big), max_size=6).map(tuple),
        st.lists(hashes, max_size=6).map(tuple),
        st.just(()) | certificates,
    )


def _sync_requests() -> st.SearchStrategy[SyncRequest]:
    return st.builds(SyncRequest, rounds, big, big)


records = st.one_of(
    pick(RECORDS),
    st.builds(RoundRecord, rounds, frame_bytes, frame_tuples, certificates),
    st.builds(
        lambda r, g: RoundRecord(r.round, r.proposal, g, r.certificate),
        pick(RECORDS),
        frame_tuples,
    ),
    st.builds(
        lambda r, c: RoundRecord(r.round, r.proposal, r.gradients, c),
        pick(RECORDS),
        certificates,
    ),
)


def _sync_responses() -> st.SearchStrategy[SyncResponse]:
    return st.builds(SyncResponse, rounds, st.lists(records, max_size=4).map(tuple))


def _votes() -> st.SearchStrategy[Vote]:
    return st.builds(Vote, rounds, big, st.sampled_from([PREPARE, COMMIT]) | big, hashes, hashes)


def _view_changes() -> st.SearchStrategy[ViewChange]:
    return st.builds(ViewChange, rounds, big, certificates, frame_bytes | st.just(b""))


def _evidence() -> st.SearchStrategy[Evidence]:
    return st.builds(Evidence, rounds, frame_bytes, frame_bytes)


messages = st.one_of(_gradients(), _proposals(), _sync_requests(), _sync_responses(), _votes(),
                     _view_changes(), _evidence())


@FUZZ
@given(
    node=nodes_st,
    batch=st.lists(st.tuples(st.sampled_from(MEMBERS), messages), min_size=1, max_size=5),
)
def test_signed_hostile_messages_never_raise(node: Node, batch: list[tuple[int, Message]]) -> None:
    for sender, message in batch:
        deliver(node, sign(sender, message))
        assert node.round >= 0


@st.composite
def coherent_round(draw: st.DrawFn) -> tuple[int, list[bytes], tuple[int, ...]]:
    """Well-formed gradients of the three other members (values anywhere in float32's finite
    range), round 0's proposal of them by its leader (node 0, view 0) and PREPARE votes for it
    by two of them, in any order; plus the two members that will vote COMMIT."""
    target = draw(st.sampled_from(MEMBERS[1:]))
    senders = tuple(m for m in MEMBERS if m != target)
    values = hnp.arrays(
        np.float32, (DIM,), elements=st.floats(allow_nan=False, allow_infinity=False, width=32)
    )
    frames = [
        sign(
            s,
            Gradient(
                0,
                ZERO_HASH,  # a set built on another model is never voted for (test_node)
                draw(st.floats(-1e300, 1e300)),
                draw(st.integers(1, 10**6)),
                draw(values),
            ),
        )
        for s in senders
    ]
    proposal = Proposal(0, 0, senders, tuple(OPEN(f).digest for f in frames))
    digest = set_digest(proposal)
    preparers = draw(st.permutations(senders))[:2]
    prepares = [sign(s, Vote(0, 0, PREPARE, digest, ZERO_HASH)) for s in preparers]
    order = draw(st.permutations([*frames, sign(0, proposal), *prepares]))
    committers = tuple(draw(st.permutations(senders))[:2])
    return target, list(order), committers


@FUZZ
@given(case=coherent_round())
def test_adversarial_but_wellformed_round_commits_without_raising(
    case: tuple[int, list[bytes], tuple[int, ...]],
) -> None:
    target, frames, committers = case
    node = make_node(target, seasoned=False)
    actions: list[Action] = []
    with np.errstate(all="ignore"):
        for frame in frames:
            actions += deliver(node, frame)
        votes = [OPEN(a.frame).message for a in actions
                 if isinstance(a, Broadcast) and a.kind == Vote.KIND]
        assert [v.phase for v in votes] == [PREPARE, COMMIT]  # type: ignore[union-attr]
        mine = votes[1]
        assert isinstance(mine, Vote) and node.round == 0
        for s in committers:
            actions += deliver(node, sign(s, Vote(0, 0, COMMIT, mine.set_digest,
                                                  mine.model_hash)))
    commits = [a.metric for a in actions
               if isinstance(a, Emit) and isinstance(a.metric, RoundCommitted)]
    assert [c.round for c in commits] == [0]
    assert node.round == 1 and commits[0].contributors == 3
    assert node.model_hash == sha256(node.params.tobytes()) == commits[0].model_hash
    assert commits[0].model_hash == mine.model_hash
    assert not node.rejections
    (record,) = node.history
    assert record.certificate and len(record.certificate) == node.quorum
