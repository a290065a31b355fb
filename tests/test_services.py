"""The service interface carries a protocol the shipped node does not have: a service defined
here owns a message kind, a namespaced timer and a digest in every round's proposal, and both
worlds (the simulator and real nodes over TCP) commit that digest in every round's certificate
and end on the same hashes. A node without the service refuses the kind and counts it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import msgpack
import pytest
from nodekit import MEMBERS, Kit, Pump, rejections_of
from realkit import real_nodes

from phalanx.apps.node import RealNode
from phalanx.apps.node_log import NodeLog
from phalanx.engine.events import Received, Started
from phalanx.engine.node import Node, Route, Service, message_set, set_digest
from phalanx.engine.node.service import Disk
from phalanx.net.codec import CORE, MessageSet, decode_payload
from phalanx.net.crypto import sha256
from phalanx.net.envelope import Envelope, FrameOpener, open_frame
from phalanx.net.messages import Contribution, Proposal, RoundRecord, Vote
from phalanx.scenario.schema import Scenario, load_scenario
from phalanx.sim.world import SimWorld

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
ROUNDS = 8


@dataclass(frozen=True, slots=True)
class Beacon:
    """The service's own message: a member's announcement of the chain head it holds."""

    KIND: ClassVar[int] = 200
    round: int
    head: bytes


class BeaconChain(Service):
    """A hash chain the rounds agree on: round r commits sha256(head || r), where head is the
    digest committed in round r - 1. Members broadcast their head every tick."""

    name = "beacon"
    messages = (Beacon,)

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        self.head = bytes(32)
        self.committed: list[tuple[int, bytes]] = []
        self.heard = 0
        self.ticks = 0

    def routes(self) -> list[Route]:
        return [Route(Beacon, self.on_beacon)]

    def on_beacon(self, env: Envelope) -> None:
        self.heard += 1

    def restore(self, disk: Disk) -> None:
        self.head = self.stored(disk, "head") or self.head

    def start(self) -> None:
        self.node.set_timer(self, "tick", 0.1)

    def on_timer(self, name: str) -> None:
        assert name == "tick"
        self.ticks += 1
        if not self.node.finished:
            self.node.broadcast(Beacon(self.node.round, self.head))
            self.node.set_timer(self, "tick", 0.1)

    def next_digest(self) -> bytes:
        return sha256(self.head + self.node.round.to_bytes(8, "big"))

    def contribution(self) -> bytes:
        return self.next_digest()

    def contribution_problem(self, data: bytes) -> str | None:
        return None if data == self.next_digest() else "beacon_wrong_digest"

    def on_commit(self, data: bytes) -> None:
        self.head = data
        self.committed.append((self.node.round - 1, data))
        self.persist("head", data)


def expected_chain(rounds: int) -> list[tuple[int, bytes]]:
    head, chain = bytes(32), []
    for r in range(rounds):
        head = sha256(head + r.to_bytes(8, "big"))
        chain.append((r, head))
    return chain


def scenario() -> Scenario:
    """The quickstart, shorter, with real timeouts fit for four nodes in one process."""
    s = load_scenario(SCENARIOS / "quickstart.yaml")
    return s.model_copy(update={
        "training": s.training.model_copy(update={"rounds": ROUNDS}),
        "real": s.real.model_copy(update={"round_timeout": 1.0, "view_timeout": 3.0,
                                          "start_wait": 20.0})})


def check_certified(records: list[RoundRecord], opener: object) -> None:
    """Every round's proposal carries the chain digest, and its commit certificate votes for
    the set digest that covers it."""
    chain = dict(expected_chain(ROUNDS))
    assert [r.round for r in records] == list(range(ROUNDS))
    for record in records:
        proposal: Proposal = opener(record.proposal).message  # type: ignore[operator]
        assert proposal.contributions == (Contribution("beacon", chain[record.round]),)
        for frame in record.certificate:
            vote: Vote = opener(frame).message  # type: ignore[operator]
            assert vote.set_digest == set_digest(proposal)


def test_a_simulated_run_commits_the_service_digest_in_every_certificate() -> None:
    world = SimWorld(scenario(), services=[BeaconChain])
    world.run()
    heads = set()
    for host in world.hosts:
        node = host.node
        assert node is not None and node.finished
        beacon = node.extra_services[0]
        assert isinstance(beacon, BeaconChain)
        assert beacon.committed == expected_chain(ROUNDS)
        assert beacon.ticks > 0 and beacon.heard > 0  # its own kind and timer ran
        check_certified([host.disk[f"log/{r}"] for r in range(ROUNDS)], world.opener)
        heads.add((node.model_hash, beacon.head))
    assert len(heads) == 1


async def _real_cluster(folder: Path) -> list[RealNode]:
    nodes = real_nodes(folder, scenario(), services=[BeaconChain])
    async with asyncio.timeout(120):
        await asyncio.gather(*(node.run() for node in nodes))
    return nodes


def test_real_tcp_nodes_commit_the_same_digests_and_end_on_the_simulated_hashes(
        tmp_path: Path) -> None:
    world = SimWorld(scenario(), services=[BeaconChain])
    world.run()
    simulated = {h.id: (h.node.model_hash, h.node.extra_services[0].head)  # type: ignore[union-attr]
                 for h in world.hosts}
    nodes = asyncio.run(_real_cluster(tmp_path))
    messages = message_set([BeaconChain])
    for real in nodes:
        beacon = real.node.extra_services[0]
        assert isinstance(beacon, BeaconChain)
        assert beacon.committed == expected_chain(ROUNDS)
        assert (real.node.model_hash, beacon.head) == simulated[real.node.id]
        keyring = real.plan.keyring
        log = NodeLog(real.plan.data_dir / "node.sqlite")  # what it wrote, read back
        try:
            check_certified(log.records(),
                            lambda f, k=keyring: open_frame(f, k, messages=messages))
        finally:
            log.close()


def test_a_node_without_the_service_refuses_its_kind_and_counts_it() -> None:
    kit = Kit(3)
    messages = message_set([BeaconChain])
    beacon = kit.forge(1, Beacon(0, bytes(32)))
    # a node that decodes the kind (its process knows the class) but runs no such service
    plain = Node(kit.node(0).config, kit.ids[0], kit.workload,
                 FrameOpener(kit.keyring, messages=messages))
    actions = plain.handle(Received(beacon), 0.0)
    assert [r.reason for r in rejections_of(actions)] == ["unknown_kind"]
    assert plain.rejections["unknown_kind"] == 1
    # a node whose codec does not even know the kind: refused while decoding, counted alike
    core = kit.node(0)
    assert [r.reason for r in rejections_of(core.handle(Received(beacon), 0.0))] == [
        "unknown_kind"]
    assert core.rejections["unknown_kind"] == 1
    # and the node with the service takes it
    served = Node(kit.node(0).config, kit.ids[0], kit.workload,
                  FrameOpener(kit.keyring, messages=messages), services=[BeaconChain])
    assert rejections_of(served.handle(Received(beacon), 0.0)) == []
    assert served.extra_services[0].heard == 1  # type: ignore[attr-defined]


def _served_cluster(kit: Kit) -> Pump:
    opener = FrameOpener(kit.keyring, messages=message_set([BeaconChain]))
    nodes = {i: Node(kit.node(i).config, kit.ids[i], kit.workload, opener,
                     services=[BeaconChain]) for i in MEMBERS}
    return Pump(nodes, open=opener)


def test_the_chain_survives_a_restart_from_the_services_part_of_the_store() -> None:
    """Timers are namespaced, the head is kept under "beacon/head", and a member restarted
    with its disk in the middle of the run goes on with the chain where it stood."""
    kit = Kit(4)
    pump = _served_cluster(kit)
    pump.start()
    assert all("beacon/tick" in pump.timers[i] for i in MEMBERS)
    pump.run(until=lambda: pump.nodes[3].round >= 2)
    assert pump.disks[3]["beacon/head"] == dict(expected_chain(5))[pump.nodes[3].round - 1]
    opener = pump.nodes[3].open
    reborn = Node(kit.node(3).config, kit.ids[3], kit.workload, opener, services=[BeaconChain])
    pump.restart(3, reborn)
    assert reborn.extra_services[0].head == pump.disks[3]["beacon/head"]  # type: ignore[attr-defined]
    pump.run_to_end()
    for i in MEMBERS:
        assert pump.nodes[i].extra_services[0].head == expected_chain(5)[-1][1]  # type: ignore[attr-defined]
    assert pump.nodes[0].extra_services[0].committed == expected_chain(5)  # type: ignore[attr-defined]


def test_a_proposal_with_a_wrong_or_unknown_contribution_is_refused() -> None:
    kit = Kit(5)
    node = _served_cluster(kit).nodes[1]
    node.handle(Started({}), 0.0)
    leader = node.leader(0, 0)
    senders, digests = MEMBERS, tuple(sha256(bytes([s])) for s in MEMBERS)
    right = sha256(bytes(32) + bytes(8))  # round 0's link of the chain
    for contribs, reason in (
            ((Contribution("beacon", b"x" * 32),), "proposal_beacon_wrong_digest"),
            ((), "proposal_beacon_wrong_digest"),  # the service needs its digest
            ((Contribution("beacon", right), Contribution("zeta", b"1")),
             "proposal_unknown_service"),
            ((Contribution("zeta", b"1"), Contribution("beacon", right)),
             "proposal_bad_contributions")):  # not sorted by service name
        frame = kit.forge(leader, Proposal(0, 0, senders, digests, contributions=contribs))
        assert [r.reason for r in rejections_of(node.handle(Received(frame), 0.0))] == [reason]
    frame = kit.forge(leader, Proposal(0, 0, senders, digests,
                                       contributions=(Contribution("beacon", right),)))
    assert rejections_of(node.handle(Received(frame), 0.0)) == []


def test_an_empty_contributions_field_on_the_wire_is_not_canonical() -> None:
    """Left out while empty: a payload that carries it empty is refused, so one proposal has
    one encoding (frames name envelopes, digests sign payloads)."""
    fields = [0, 0, [1], [b"d" * 32], [], b""]
    assert decode_payload(Proposal.KIND, msgpack.packb(fields)).contributions == ()
    with pytest.raises(Exception, match="present but empty"):
        decode_payload(Proposal.KIND, msgpack.packb([*fields, []]))


def test_message_sets_refuse_clashing_kinds() -> None:
    @dataclass(frozen=True, slots=True)
    class Clash:
        KIND: ClassVar[int] = 2  # Proposal's
        round: int

    with pytest.raises(TypeError, match="taken by Proposal"):
        CORE.extended([Clash])
    assert 200 in message_set([BeaconChain]) and 200 not in CORE
    assert isinstance(CORE.extended([Beacon]), MessageSet)
