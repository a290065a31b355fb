"""Checkpoint state sync in the sans-IO node: a node far behind adopts the state f + 1 peers
offer identically, verified against a commit certificate; forged or lone offers are refused."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from nodekit import MEMBERS, Kit, Pump

from phalanx.engine.consensus import check_checkpoint, state_digest
from phalanx.engine.events import Received, Started
from phalanx.engine.node import Node
from phalanx.net.crypto import Identity
from phalanx.net.messages import Checkpoint, CheckpointRequest, Epoch, RoundRecord, SyncRequest

ROUNDS, GAP = 40, 8


def absent_until(pump: Pump, node: int, round: int) -> None:
    """Run the others, with `node` cut off, until they reach `round`."""
    pump.drop = lambda src, dst, kind, rnd: node in (src, dst)
    pump.start()
    others = tuple(i for i in MEMBERS if i != node)
    def there() -> bool:
        return min(pump.nodes[i].round for i in others) >= round

    for _ in range(20 * round):  # the others stop waiting for it once they suspect it
        pump.run(until=there)
        if there():
            break
        pump.advance(only=others)
    assert min(pump.nodes[i].round for i in others) >= round


def test_a_late_joiner_starts_from_an_agreed_checkpoint_and_finishes_on_the_same_model() -> None:
    kit = Kit(5)
    pump = kit.cluster(rounds=ROUNDS, checkpoint_gap=GAP)
    absent_until(pump, 3, 25)
    assert pump.nodes[3].round == 0
    pump.drop = lambda src, dst, kind, rnd: False  # node 3 joins
    pump.run_to_end()
    late = pump.nodes[3]
    assert late.history_base >= 24 and late.rejections == {}
    assert len({pump.nodes[i].model_hash for i in MEMBERS}) == 1
    asked = [e for e in pump.signed_by(3) if isinstance(e.message, CheckpointRequest)]
    assert len(asked) >= 2  # f + 1 = 2 peers asked
    commits = pump.commits(3)
    assert commits[0].via_sync and commits[0].round == late.history_base
    ref = {c.round: c.model_hash for c in pump.commits(0)}
    assert all(c.model_hash == ref[c.round] for c in commits)
    # its disk holds the rounds from the checkpoint on, and a restart from it resumes there
    log = sorted(int(k.split("/")[1]) for k in pump.disks[3] if k.startswith("log/"))
    assert log == list(range(late.history_base, ROUNDS))
    assert isinstance(pump.disks[3]["base"], bytes)  # the adopted checkpoint, for audits
    reborn = kit.node(3, ROUNDS, checkpoint_gap=GAP)
    pump.restart(3, reborn)
    assert reborn.round == ROUNDS and reborn.history_base == late.history_base
    assert reborn.model_hash == late.model_hash


def test_a_node_behind_by_less_than_the_gap_replays_records_instead() -> None:
    kit = Kit(5)
    pump = kit.cluster(rounds=12, checkpoint_gap=GAP)
    absent_until(pump, 3, 5)
    pump.drop = lambda src, dst, kind, rnd: False
    pump.run_to_end()
    assert pump.nodes[3].history_base == 0
    assert [c.round for c in pump.commits(3)] == list(range(12))


def finished_state(kit: Kit, rounds: int = 6) -> tuple[Node, Checkpoint]:
    pump = kit.cluster(rounds=rounds)
    pump.start()
    pump.run_to_end()
    done = pump.nodes[0]
    return done, Checkpoint(done.round, done.history[-1], done.params, done.velocity,
                            done.last_update, tuple(done.epochs))


def offer(node: Node, kit: Kit, sender: int, cp: Checkpoint) -> None:
    node.handle(Received(kit.forge(sender, cp)), 0.0)


def test_forged_checkpoints_are_refused_with_their_reason() -> None:
    kit = Kit(6)
    done, cp = finished_state(kit)
    other: RoundRecord = done.history[-2]
    nan = cp.velocity.copy()
    nan[0] = np.nan
    short = RoundRecord(cp.record.round, cp.record.proposal, cp.record.gradients,
                        cp.record.certificate[:2])
    members = cp.epochs[0].members
    forged = [
        ("checkpoint_bad_hash", replace(cp, params=cp.params + 1)),
        ("checkpoint_bad_record", replace(cp, record=other)),
        ("checkpoint_bad_state", replace(cp, params=cp.params[:-1])),
        ("checkpoint_bad_state", replace(cp, velocity=nan)),
        ("checkpoint_certificate_too_small", replace(cp, record=short)),
        # the memberships: missing, out of order, from a later round, or naming other voters
        ("checkpoint_bad_epochs", replace(cp, epochs=())),
        ("checkpoint_bad_epochs", replace(cp, epochs=(Epoch(0, members), Epoch(0, members)))),
        ("checkpoint_bad_epochs", replace(cp, epochs=(Epoch(0, members),
                                                      Epoch(cp.round + 1, members[:3])))),
        ("checkpoint_bad_epochs", replace(cp, epochs=(Epoch(0, members[::-1]),))),
        ("checkpoint_certificate_bad_voters", replace(cp, epochs=(Epoch(0, (4, 5, 6, 7)),))),
    ]
    for reason, bad in forged:
        fresh = kit.node(3, 6)
        fresh.handle(Started({}), 0.0)
        offer(fresh, kit, 1, bad)
        offer(fresh, kit, 2, bad)  # two peers agreeing on a forgery changes nothing
        assert fresh.round == 0 and fresh.rejections == {reason: 2}, (reason, fresh.rejections)
    # a signer outside the membership cannot vouch either
    outsider = kit.forge(1, cp, Identity.generate())
    fresh = kit.node(3, 6)
    fresh.handle(Received(outsider), 0.0)
    assert fresh.rejections["bad_signature"] == 1


def test_one_peer_cannot_move_a_node_and_f_plus_1_identical_offers_do() -> None:
    kit = Kit(7)
    done, cp = finished_state(kit)
    # a lying peer keeps the certified parameters but changes the optimizer state: the
    # certificate cannot see it, the count of identical offers does
    twisted = replace(cp, velocity=cp.velocity * 2)
    assert check_checkpoint(twisted, kit.open, cp.params.shape, cp.velocity.shape) is not None
    assert state_digest(twisted) != state_digest(cp)
    fresh = kit.node(3, 8)
    fresh.handle(Started({}), 0.0)
    offer(fresh, kit, 2, twisted)
    offer(fresh, kit, 0, cp)
    assert fresh.round == 0  # one offer of each: no state has f + 1 = 2 peers behind it
    offer(fresh, kit, 1, cp)
    assert fresh.round == cp.round and fresh.model_hash == done.model_hash
    np.testing.assert_array_equal(fresh.velocity, cp.velocity)
    assert fresh.history_base == cp.round - 1 and fresh.rejections == {}


def test_a_follower_keeps_the_chain_without_computing_or_voting() -> None:
    """A lightweight node (id 4, an observer, not a member) follows by verified records (and a
    checkpoint when far behind): it ends on the members' model having signed nothing but
    requests; a non-member that is not an observer is refused."""
    from nodekit import config

    kit = Kit(8)
    follower_id = Identity.derive(8, 4)
    kit.keyring[4] = follower_id.public_key  # the opener reads this keyring
    nodes = {i: kit.node(i, 30, observers=(4,), checkpoint_gap=GAP) for i in MEMBERS}
    nodes[4] = Node(config(4, 30, observers=(4,), checkpoint_gap=GAP), follower_id,
                    kit.workload, kit.open)
    pump = Pump(nodes, open=kit.open)
    pump.start()
    pump.run_to_end()
    follower = nodes[4]
    assert follower.finished and follower.model_hash == nodes[0].model_hash
    assert {type(e.message) for e in pump.signed_by(4)} <= {SyncRequest, CheckpointRequest}
    assert all("not_member" not in nodes[i].rejections for i in MEMBERS)
    ref = {c.round: c.model_hash for c in pump.commits(0)}
    assert all(c.model_hash == ref[c.round] for c in pump.commits(4))
    stranger = kit.node(0, 30)  # a member that does not list 4 as an observer
    stranger.handle(Received(kit.forge(4, SyncRequest(0, 0, 1), follower_id)), 0.0)
    assert stranger.rejections == {"not_member": 1}


def test_a_peer_offering_state_after_state_holds_one_offer() -> None:
    """Offers are kept per peer: a liar cycling through endless optimizer states (the only
    part a certificate cannot pin) never holds more than its one latest offer in memory."""
    from phalanx.engine.consensus import CheckpointOffers

    kit = Kit(9)
    _, cp = finished_state(kit)
    cert = check_checkpoint(cp, kit.open, cp.params.shape, cp.velocity.shape)
    assert not isinstance(cert, str)
    offers = CheckpointOffers(2)
    for k in range(50):
        lie = replace(cp, velocity=cp.velocity + k)
        assert offers.add(kit.open(kit.forge(2, lie)), cert) is None
    assert offers.held() == 1
    assert offers.add(kit.open(kit.forge(0, cp)), cert) is None  # the liar's old offers are gone
    agreed = offers.add(kit.open(kit.forge(1, cp)), cert)
    assert agreed is not None and agreed[2] == [0, 1] and offers.held() == 3
