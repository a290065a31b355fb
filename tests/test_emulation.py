"""The scenario's network emulated in the real transport (net/emulation.py, apps/emulate.py):
the link model's draws, and four TcpTransports on 127.0.0.1 wired as a ring of emulated 30 ms
links: each holds connections to its two neighbours only, frames to the far node are relayed,
broadcasts go down the simulator's trees, and the emulated latency shows in measured times.

Lower bounds are the emulation's own (a frame cannot arrive before its emulated delay has
passed, whatever the machine's load); upper bounds are generous, for a loaded machine."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest
from tcpkit import FAST, HOST, IDS, KEYRING, eventually, run

from phalanx.apps.emulate import describe, for_run, node_network, write_networks
from phalanx.apps.node_network import FILE, read_network
from phalanx.net.emulation import EmulatedLink, EmulatedNetwork, LinkSpec
from phalanx.net.tcp import TcpTransport
from phalanx.scenario.schema import ScenarioError, parse_scenario

LATENCY = 0.03

RING = parse_scenario({
    "name": "ring-4", "seed": 3, "nodes": {"count": 4}, "topology": {"kind": "ring"},
    "links": {"latency": LATENCY, "jitter": 0.0, "bandwidth": None},
    "workload": {"kind": "linear", "dim": 4}, "training": {"rounds": 2}})


def test_link_draws_are_seeded_and_follow_the_simulators_link_model() -> None:
    spec = LinkSpec(latency=0.01, jitter=0.004, bandwidth=8e6, loss=0.25, duplicate=0.1)
    a, b = (EmulatedLink.seeded(0, 1, spec, seed=5) for _ in range(2))
    sends = [(0.001 * i, 1000) for i in range(400)]
    out_a = [a.transmit(t, size) for t, size in sends]
    assert out_a == [b.transmit(t, size) for t, size in sends]  # same seed, same fates
    other = EmulatedLink.seeded(1, 0, spec, seed=5)  # the other direction draws apart
    assert [other.transmit(t, size) for t, size in sends] != out_a
    assert 60 <= a.lost <= 140 and a.lost == sum(1 for x in out_a if not x)
    assert a.duplicated == sum(1 for x in out_a if len(x) == 2) > 0
    # 1000 bytes at 8 Mbit/s: 1 ms on the wire, so frames sent every 1 ms never queue and
    # each arrives after its serialization, latency and at most the jitter
    for (t, _), arrivals in zip(sends, out_a, strict=True):
        for at in arrivals:
            assert t + 0.001 + 0.01 - 1e-12 <= at <= t + 0.001 + 0.01 + 0.004 + 1e-12
    burst = EmulatedLink.seeded(0, 1, LinkSpec(latency=0.0, bandwidth=8e6), seed=1)
    assert [burst.transmit(0.0, 1000)[0] for _ in range(3)] == pytest.approx([0.001, 0.002,
                                                                              0.003])


def test_bad_link_parameters_are_refused() -> None:
    for bad in ({"latency": -1.0}, {"latency": 0.0, "loss": 1.5},
                {"latency": 0.0, "bandwidth": 0.0}, {"latency": 0.0, "jitter_dist": "pareto"}):
        with pytest.raises(ValueError, match="link"):
            LinkSpec(**bad)  # type: ignore[arg-type]


def test_the_ring_plan_mirrors_the_simulators_routes_and_trees(tmp_path: Path) -> None:
    plans = {i: node_network(RING, i) for i in range(4)}
    assert sorted(plans[0].links) == [1, 3] and plans[0].links[1].latency == LATENCY
    assert plans[0].next_hop[2] in (1, 3) and plans[0].next_hop[1] == 1
    # every node but the root is in exactly one neighbour's children list of the root's tree
    for root in range(4):
        kids = [k for i in range(4) for k in plans[i].children[root]]
        assert sorted(kids) == sorted(set(range(4)) - {root})
    write_networks(RING, {0: tmp_path / "node-0"})  # what the launcher hands a node process
    assert read_network(tmp_path / "node-0" / FILE) == plans[0]
    (tmp_path / "bad.json").write_text('{"links": 3}')
    for path in (tmp_path / "bad.json", tmp_path / "missing.json"):
        with pytest.raises(ScenarioError, match="network") as err:
            read_network(path)
        assert "\n" not in str(err.value)
    summary = describe(RING)
    assert [tuple(x[:2]) for x in summary["links"]] == [(0, 1), (0, 3), (1, 2), (2, 3)]
    assert for_run(RING).real.network == "emulate" and RING.real.network == "auto"


class _Member:
    def __init__(self, node_id: int, bootstrap: dict[int, tuple[str, int]]) -> None:
        plan = node_network(RING, node_id)
        near = {*plan.links, node_id}
        self.inbox: list[tuple[float, bytes]] = []
        options: dict[str, Any] = {**FAST, "measure_interval": 0.1, "suspect_after": 2.0}

        def transport(on_frame: Any) -> TcpTransport:
            return TcpTransport(node_id, {**bootstrap, node_id: (HOST, 0)}, on_frame,
                                identity=IDS[node_id],
                                keyring={i: k for i, k in KEYRING.items() if i in near},
                                rng=random.Random(node_id), **options)

        self.net = EmulatedNetwork(node_id, plan.next_hop, plan.children, plan.links, 3,
                                   lambda f: self.inbox.append((time.monotonic(), f)),
                                   transport)


def test_a_node_talks_only_to_its_neighbours_and_emulated_latency_shows() -> None:
    async def scenario() -> None:
        members: dict[int, _Member] = {}
        try:
            for i, boot in ((0, []), (1, [0]), (2, [1]), (3, [2, 0])):
                m = members[i] = _Member(i, {j: members[j].net.address for j in boot})
                await m.net.start()
            for i in range(4):
                await members[i].net.wait_for_peers(5.0)
            nets = {i: m.net for i, m in members.items()}
            for i, net in nets.items():  # links to the two ring neighbours, and no others
                assert net.inner.connected_peers() == {(i + 1) % 4, (i - 1) % 4}
                assert (i + 2) % 4 not in net.inner.peer_states()
                assert set(net.peer_states()) == set(range(4)) - {i}

            start = time.monotonic()
            nets[0].send(2, b"to the far side")  # two hops, relayed by 1 or 3
            await eventually(lambda: members[2].inbox, 5.0)
            arrived, frame = members[2].inbox.pop()
            assert frame == b"to the far side" and arrived - start >= 2 * LATENCY
            assert nets[1].counts.relayed + nets[3].counts.relayed == 1

            start = time.monotonic()
            nets[1].broadcast(b"everyone")
            await eventually(lambda: all(members[i].inbox for i in (0, 2, 3)), 5.0)
            times = {i: members[i].inbox[0][0] - start for i in (0, 2, 3)}
            assert all(members[i].inbox == [(members[i].inbox[0][0], b"everyone")]
                       for i in (0, 2, 3))  # exactly one copy each
            assert min(times.values()) >= LATENCY and times[3] >= 2 * LATENCY
            assert not members[1].inbox

            # the round trip each node measures over its emulated links
            await eventually(lambda: all(n.link_conditions() is not None
                                         for n in nets.values()), 5.0)
            for net in nets.values():
                _, one_way = net.link_conditions()
                assert LATENCY <= one_way < LATENCY + 0.5
                inner = net.inner.link_conditions()  # loopback's own, far below
                assert inner is None or inner[1] < one_way
        finally:
            for m in members.values():
                await m.net.close()

    run(scenario, limit=30.0)


def test_a_frame_to_an_unknown_node_is_refused_and_odd_records_are_counted() -> None:
    async def scenario() -> None:
        m = _Member(0, {})
        await m.net.start()
        try:
            with pytest.raises(KeyError):
                m.net.send(7, b"x")
            m.net._arrived(b"\x00")  # shorter than a destination
            m.net._arrived(b"\x00\x00\x00\x09frame")  # a destination we have no route to
            m.net._arrived(b"\xff\xff\xff\xff\x00\x00\x00\x00x")  # a broadcast "from us"
            assert m.net.counts.unroutable == 2 and m.net.counts.refused == 1
            assert not m.inbox
        finally:
            await m.net.close()

    run(scenario)

