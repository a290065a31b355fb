"""The failure detector (engine/node/detector.py): a crashed member (within f) costs a round
about nothing once it is suspected, its leader turns cost one view timeout in all, and the
suspicion clears when it is heard again. Sans-IO through the pump, then whole runs in the
simulator and one real loopback cluster (apps/bench_crash.py measures the same cases)."""

from __future__ import annotations

import pytest
from nodekit import MEMBERS, Kit, Pump

from phalanx.apps.bench_crash import real_case, sim_case
from phalanx.engine.events import PeerReachability, Suspicion

KIT = Kit(11)


def silent(node: int) -> object:
    return lambda src, dst, kind, rnd: src == node


def suspicions(pump: Pump, node: int) -> list[Suspicion]:
    return [m for m in pump.metrics[node] if isinstance(m, Suspicion)]


def test_a_peer_whose_link_went_down_is_not_waited_for() -> None:
    pump = KIT.cluster(rounds=3, drop=silent(3))
    pump.start()
    pump.run()
    assert all(pump.commits(i) == [] for i in (0, 1, 2))  # the leader waits for node 3
    for i in (0, 1, 2):
        pump.feed(i, PeerReachability(3, False))
    pump.run()  # no timer fired: the leader proposed with the quorum it held
    for i in (0, 1, 2):
        assert [(c.round, c.view, c.contributors) for c in pump.commits(i)] == [
            (0, 0, 3), (1, 0, 3), (2, 0, 3)]
        (s,) = suspicions(pump, i)
        assert (s.peer, s.suspected, s.reason) == (3, True, "link down")


def test_without_the_detector_the_leader_waits_out_its_gather_timer() -> None:
    pump = KIT.cluster(rounds=3, drop=silent(3), detect_failures=False)
    pump.start()
    pump.run()
    for i in (0, 1, 2):
        pump.feed(i, PeerReachability(3, False))
    pump.run()
    assert all(pump.commits(i) == [] for i in (0, 1, 2))
    assert all(suspicions(pump, i) == [] for i in MEMBERS)
    assert "round/gather:0" in pump.timers[0]


def test_a_silent_member_is_suspected_after_one_round_and_cleared_when_heard() -> None:
    pump = KIT.cluster(rounds=6, drop=silent(3))
    pump.start()
    pump.run()
    pump.advance(only=(0,))  # round 0: the leader's gather timer, then a quorum set
    pump.run(until=lambda: all(len(pump.commits(i)) >= 3 for i in (0, 1, 2)))
    for i in (0, 1, 2):
        # from round 1 on nobody waits: no more timers were needed
        assert [c.contributors for c in pump.commits(i)][:3] == [3, 3, 3]
        (s,) = suspicions(pump, i)
        assert (s.peer, s.round, s.suspected, s.reason) == (3, 0, True, "silent")
    pump.drop = lambda src, dst, kind, rnd: False  # node 3 is heard again
    pump.run_to_end()
    for i in (0, 1, 2):
        last = suspicions(pump, i)[-1]
        assert (last.peer, last.suspected) == (3, False)
    assert len({pump.nodes[i].model_hash for i in MEMBERS}) == 1


@pytest.mark.parametrize("n", [5, 10])
@pytest.mark.parametrize("kind", ["member", "leader"])
def test_one_crashed_member_costs_little_in_simulation(n: int, kind: str) -> None:
    fault_free = sim_case(n, 40, 15, True, "none")["round_seconds_median"]
    crashed = sim_case(n, 40, 15, True, kind)
    assert crashed["distinct_final_hashes"] == 1 and crashed["rounds_committed"] == 40
    assert crashed["ratio_after_detection"] <= 1.5
    assert crashed["round_seconds_after_detection"] <= 1.5 * fault_free
    # detection within two rounds: only the crash round and the next may be slow
    assert all(r <= 15 + 2 for r in crashed["rounds_over_1_5x"]), crashed
    # its leader turns cost one view timeout (3 s) in all, not one per turn
    assert crashed["extra_seconds"] <= 3.0 + 1.0, crashed


def test_without_the_detector_every_round_pays_for_the_crash() -> None:
    crashed = sim_case(5, 30, 10, False, "member")
    assert crashed["distinct_final_hashes"] == 1
    assert crashed["ratio_after_detection"] > 10  # the 1 s gather wait in every round


def test_a_real_cluster_keeps_its_pace_after_a_member_is_killed() -> None:
    result = real_case(5, 45, 15)
    assert result["distinct_final_hashes"] == 1
    assert result["ratio_after_detection"] <= 1.5, result


@pytest.mark.parametrize(("floor", "waits"), [(0.0, None), (0.8, 0.8), (9.0, 1.0)])
def test_a_real_node_waits_at_least_its_patience_floor_for_an_unsuspected_member(
        floor: float, waits: float | None) -> None:
    """After fast rounds the learned patience is a few milliseconds; a real node (floor > 0)
    still waits `patience_floor` for a member it does not suspect, capped by round_timeout."""
    pump = KIT.cluster(rounds=4, patience_floor=floor, round_timeout=1.0)
    pump.start()
    pump.run(until=lambda: all(len(pump.commits(i)) >= 3 for i in MEMBERS))
    detector = pump.nodes[0].detector
    wait = detector.wait_until([3]) - detector.round_start
    if waits is None:
        assert wait < 0.5  # what past arrivals taught it
    else:
        assert wait == pytest.approx(waits)
