"""Reconfiguration in the sans-IO node: an observer joins and a member leaves through rounds the
members commit; forged, stale, replayed and impossible requests change nothing; the
memberships survive restarts and travel in checkpoints."""

from __future__ import annotations

from collections.abc import Callable

from nodekit import MEMBERS, Kit, Pump, config

from phalanx.engine.events import MembershipChanged, Received, RequestChange, Started
from phalanx.engine.node import Node
from phalanx.net.crypto import Identity
from phalanx.net.messages import (
    JOIN,
    LEAVE,
    Epoch,
    Gradient,
    MemberChange,
    Proposal,
)

OBSERVER = 4


def with_observer(kit: Kit, rounds: int, **kw: object) -> Pump:
    """The four members plus node 4, an observer every member's file lists."""
    identity = Identity.derive(kit.seed, OBSERVER)
    kit.keyring[OBSERVER] = identity.public_key  # the opener reads this keyring
    nodes = {i: kit.node(i, rounds, observers=(OBSERVER,), **kw) for i in MEMBERS}
    nodes[OBSERVER] = Node(config(OBSERVER, rounds, observers=(OBSERVER,), **kw), identity,
                           kit.workload, kit.open)
    return Pump(nodes, open=kit.open)


def run_until(pump: Pump, done: Callable[[], bool], timers: int = 200) -> None:
    for _ in range(timers):
        pump.run(until=done)
        if done():
            return
        assert pump.advance(), "nothing left to do"
    raise AssertionError("condition never held")


def changes(pump: Pump, node: int) -> list[MembershipChanged]:
    return [m for m in pump.metrics[node] if isinstance(m, MembershipChanged)]


def test_an_observer_joins_and_a_member_leaves_from_the_round_after_the_commit() -> None:
    kit = Kit(21)
    pump = with_observer(kit, rounds=16)
    nodes = pump.nodes
    pump.start()
    run_until(pump, lambda: nodes[0].round >= 3)
    assert nodes[OBSERVER].change_problem("join") is None
    pump.feed(OBSERVER, RequestChange("join"))
    run_until(pump, lambda: not nodes[OBSERVER].follower)
    joined = nodes[0].epochs[1].round
    run_until(pump, lambda: nodes[0].round >= joined + 3)
    pump.feed(1, RequestChange("leave"))
    pump.run_to_end()

    five, four = (0, 1, 2, 3, 4), (0, 2, 3, 4)
    left = nodes[0].epochs[2].round
    for i in (*MEMBERS, OBSERVER):
        node = nodes[i]
        assert node.epochs == [Epoch(0, MEMBERS), Epoch(joined, five), Epoch(left, four)], i
        assert node.model_hash == nodes[0].model_hash and node.finished
        got = [(m.round, m.op, m.subject, m.members) for m in changes(pump, i)]
        assert got == [(joined, "join", 4, five), (left, "leave", 1, four)]
    assert (nodes[1].follower, nodes[OBSERVER].follower) == (True, False)
    assert (nodes[0].n, nodes[0].quorum) == (4, 3)
    # every record certified by its round's members; the joiner computed from its first round
    # on and the leaver stopped at its last
    for record in nodes[0].history:
        signers = {kit.open(f).sender for f in record.certificate}
        assert signers <= set(nodes[0].members_at(record.round)), record.round
    rounds_of = {i: {e.message.round for e in pump.signed_by(i, Gradient)} for i in (1, 4)}
    assert min(rounds_of[4]) == joined and max(rounds_of[1]) == left - 1
    assert all(r["not_member"] == 0 for r in (n.rejections for n in nodes.values()))


def test_forged_impossible_and_stale_requests_are_refused() -> None:
    kit = Kit(22)
    pump = with_observer(kit, rounds=4)
    member = pump.nodes[0]
    pump.feed(0, Started({}))
    stranger = Identity.derive(22, 9)  # no key in the members file
    observer = Identity.derive(22, OBSERVER)
    cases = [
        (kit.forge(OBSERVER, MemberChange(0, 0, JOIN), stranger), "bad_signature"),
        (kit.forge(9, MemberChange(0, 0, JOIN), stranger), "unknown_sender"),
        (kit.forge(2, MemberChange(0, 0, JOIN)), "change_already_member"),
        (kit.forge(OBSERVER, MemberChange(0, 0, LEAVE), observer), "change_not_member"),
        (kit.forge(OBSERVER, MemberChange(0, 0, 7), observer), "change_bad_op"),
    ]
    for frame, reason in cases:
        before = member.rejections[reason]
        pump.feed(0, Received(frame))
        assert member.rejections[reason] == before + 1, reason
    pump.feed(0, Received(kit.forge(OBSERVER, MemberChange(0, 5, JOIN), observer)))  # epoch 5
    assert member.membership.requests == {}  # nothing pending: no proposal can carry any of them


def test_the_operator_hears_why_a_change_cannot_be_asked_for() -> None:
    kit = Kit(23)
    pump = with_observer(kit, rounds=4)
    pump.start()
    assert pump.nodes[0].change_problem("join") == "already a member"
    assert pump.nodes[OBSERVER].change_problem("leave") == "not a member"
    assert pump.nodes[0].change_problem("dance") == "unknown change 'dance' (allowed: join, leave)"
    outsider = kit.node(1, 4)  # its file lists no observers: node 1 is a member there
    assert outsider.change_problem("leave") is None
    lonely = Node(config(0, 4, members=(0,)), kit.ids[0], kit.workload, kit.open)
    assert lonely.change_problem("leave") == ("leaving would leave 0 members, whose n − f sure "
                                              "gradients are fewer than mean needs")
    pump.feed(1, RequestChange("leave"))
    assert pump.nodes[1].change_problem("leave") == "a request to leave is already pending"


def test_a_byzantine_leader_cannot_slip_in_a_bad_or_replayed_change() -> None:
    """A proposal's change is under the set digest and checked by every voter: garbage, a
    request for another epoch (a leave replayed after the member came back) or a join by a
    member gets no vote, and the round commits without it after a view change."""
    kit = Kit(24)
    pump = with_observer(kit, rounds=12)
    nodes = pump.nodes
    pump.start()
    old_leave = kit.forge(2, MemberChange(0, 0, LEAVE))  # signed at epoch 0
    pump.feed(OBSERVER, RequestChange("join"))
    run_until(pump, lambda: all(nodes[i].epoch == 1 for i in MEMBERS))
    r = nodes[0].round
    leader = nodes[0].leader(r, nodes[0].view)
    honest = [i for i in MEMBERS if i != leader]
    run_until(pump, lambda: len(nodes[honest[0]].gradients(r)) >= 4)
    held = nodes[honest[0]].gradients(r)
    senders = tuple(sorted(held))
    digests = tuple(held[s].digest for s in senders)
    for bad, reason in ((b"garbage", "proposal_change_bad_frame"),
                        (old_leave, "proposal_change_stale_epoch"),
                        (kit.forge(3, MemberChange(r, 1, JOIN)), "proposal_change_already_member")):
        proposal = kit.forge(leader, Proposal(r, nodes[0].view, senders, digests, change=bad))
        for i in honest:
            before = nodes[i].rejections[reason]
            pump.feed(i, Received(proposal))
            assert nodes[i].rejections[reason] == before + 1, (reason, i)
    pump.run_to_end()
    assert all(nodes[i].epoch == 1 and nodes[i].members == (0, 1, 2, 3, 4) for i in nodes)
    assert len({nodes[i].model_hash for i in nodes}) == 1


def test_memberships_survive_a_restart_and_travel_in_checkpoints() -> None:
    kit = Kit(25)
    pump = with_observer(kit, rounds=40, checkpoint_gap=8)
    nodes = pump.nodes
    pump.drop = lambda src, dst, kind, rnd: 3 in (src, dst)  # node 3 is away
    pump.start()
    pump.feed(OBSERVER, RequestChange("join"))
    others = (0, 1, 2, OBSERVER)
    run_until(pump, lambda: min(nodes[i].round for i in others) >= 25, timers=3000)
    assert nodes[3].round == 0 and nodes[0].members == (0, 1, 2, 3, 4)
    pump.drop = lambda src, dst, kind, rnd: False  # it comes back, far behind
    pump.run_to_end()
    late = nodes[3]
    assert late.history_base >= 24  # it adopted a checkpoint certified by the new members
    assert late.epochs == nodes[0].epochs and late.members == (0, 1, 2, 3, 4)
    assert late.model_hash == nodes[0].model_hash and late.rejections == {}
    reborn = Node(config(OBSERVER, 40, observers=(OBSERVER,), checkpoint_gap=8),
                  Identity.derive(kit.seed, OBSERVER), kit.workload, kit.open)
    pump.restart(OBSERVER, reborn)  # with its disk: it is still a member
    assert reborn.epochs == nodes[0].epochs and not reborn.follower


def test_a_request_outlives_a_restart_until_it_is_applied() -> None:
    """The operator asked node 4 to join; its request was lost and the node restarted: it asks
    again from its disk (a request is kept until a committed round applies it)."""
    kit = Kit(26)
    pump = with_observer(kit, rounds=12)
    nodes = pump.nodes
    pump.drop = lambda src, dst, kind, rnd: src == OBSERVER  # its requests get nowhere
    pump.start()
    pump.feed(OBSERVER, RequestChange("join"))
    run_until(pump, lambda: nodes[0].round >= 3)
    assert nodes[0].epoch == 0 and pump.disks[OBSERVER]["asking"] == bytes([JOIN])
    pump.drop = lambda src, dst, kind, rnd: False
    reborn = Node(config(OBSERVER, 12, observers=(OBSERVER,)), Identity.derive(kit.seed, OBSERVER),
                  kit.workload, kit.open)
    pump.restart(OBSERVER, reborn)
    pump.run_to_end()
    assert all(nodes[i].members == (0, 1, 2, 3, 4) for i in nodes)
    assert not reborn.follower and pump.disks[OBSERVER]["asking"] == b""
    assert reborn.membership.asking is None  # nothing pending any more
