"""Each fault kind and link impairment leaves its own visible trace, and forged frames in the
simulated world are rejected by the same checks real nodes run."""

from __future__ import annotations

from typing import Any

import polars as pl

from phalanx.apps.results import RunResult
from phalanx.apps.runner import run_sim
from phalanx.engine.events import Broadcast
from phalanx.net.envelope import seal
from phalanx.net.messages import Gradient
from phalanx.scenario.schema import parse_scenario
from phalanx.sim.world import SimWorld


def scenario(faults: list[dict[str, Any]] | None = None, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "faults", "seed": 3, "nodes": {"count": 7},
        "links": {"latency": 0.005, "jitter": 0.001},
        "workload": {"kind": "linear", "dim": 4},
        "training": {"rounds": 20, "lr": 0.1, "momentum": 0.5, "step_time": 0.02,
                     "round_timeout": 0.3, "view_timeout": 1.0},
        "faults": faults or [],
    }
    data.update(changes)
    return data


def run(data: dict[str, Any]) -> RunResult:
    from rich.console import Console

    from phalanx.apps.runner import RoundPrinter

    s = parse_scenario(data)
    return run_sim(s, RoundPrinter(s, Console(quiet=True), enabled=False))


def drops(result: RunResult, reason: str) -> pl.DataFrame:
    return result.events.filter((pl.col("event") == "drop") & (pl.col("detail") == reason))


def test_one_way_cut_drops_one_direction_only() -> None:
    result = run(scenario([{"kind": "one_way", "at": 0.1, "duration": 2.0, "source": [0, 1],
                            "target": [5, 6]}]))
    cut = drops(result, "partition")
    assert cut.height > 0
    assert set(cut["src"].to_list()) <= {0, 1} and set(cut["dst"].to_list()) <= {5, 6}
    back = result.events.filter((pl.col("event") == "deliver") & pl.col("src").is_in([5, 6])
                                & pl.col("dst").is_in([0, 1]) & pl.col("time").is_between(0.2, 2))
    assert back.height > 0, "the other direction keeps flowing"


def test_bridge_nodes_reach_both_sides() -> None:
    result = run(scenario([{"kind": "bridge", "at": 0.1, "duration": 2.0,
                            "sides": [[0, 1, 2], [4, 5, 6]]}]))
    cut = drops(result, "partition")
    assert cut.height > 0
    for src, dst in cut.select("src", "dst").iter_rows():
        assert {src, dst} & {0, 1, 2} and {src, dst} & {4, 5, 6}
    bridged = result.events.filter((pl.col("event") == "deliver") & (pl.col("src") == 3)
                                   & pl.col("time").is_between(0.2, 2))
    assert {0, 6} <= set(bridged["dst"].to_list())


def test_isolated_node_hears_nothing_then_catches_up() -> None:
    result = run(scenario([{"kind": "isolate", "at": 0.2, "duration": 1.5, "nodes": [4]}]))
    cut = drops(result, "partition")
    assert cut.height > 0 and all(4 in pair for pair in cut.select("src", "dst").iter_rows())
    mine = result.rounds.filter(pl.col("node") == 4)
    assert mine.filter(pl.col("time").is_between(0.3, 1.7)).is_empty()
    assert mine["via_sync"].any()
    assert len(set(result.final_hashes().values())) == 1


def test_degrade_adds_latency_and_loss_then_heals() -> None:
    base = run(scenario())
    slow = run(scenario([{"kind": "degrade", "at": 0.0, "duration": 100.0,
                          "extra_latency": 0.05, "loss": 0.1}]))
    assert drops(slow, "loss").height > 0
    latency = lambda r: r.events.filter(pl.col("event") == "deliver")["latency"].median()  # noqa: E731
    assert latency(slow) > latency(base) + 0.04
    assert slow.summary["sim_seconds"] > base.summary["sim_seconds"]


def test_slow_node_stretches_rounds() -> None:
    base = run(scenario())
    slow = run(scenario([{"kind": "slow", "at": 0.0, "duration": 100.0, "nodes": [0, 1, 2],
                          "factor": 10}]))
    # three slow nodes leave 4 fast ones, short of a quorum (5 of 7): rounds wait for them
    last_commit = lambda r: r.rounds["time"].max()  # noqa: E731
    assert last_commit(slow) > 5 * last_commit(base)
    assert len(set(slow.final_hashes().values())) == 1


def test_link_loss_duplication_and_reordering_are_survived() -> None:
    result = run(scenario(links={"latency": 0.005, "jitter": 0.004, "jitter_dist": "exponential",
                                 "loss": 0.05, "duplicate": 0.1, "reorder": 0.1,
                                 "reorder_delay": 0.02}))
    assert drops(result, "loss").height > 0
    assert result.summary["rejected_by_reason"].get("replay", 0) > 0, "duplicates are refused"
    assert result.summary["min_rounds_committed"] == 20
    assert result.summary["distinct_final_hashes"] == 1


def test_forged_frames_in_the_simulation_are_rejected() -> None:
    world = SimWorld(parse_scenario(scenario()))
    impostor = world.identities[6]  # signs as node 6 while claiming to be node 0
    values = world.workload.init_params()
    forged = seal(impostor, 0, 10**12, Gradient(0, b"\0" * 32, 0.0, 1, values))
    tampered = bytearray(seal(world.identities[0], 0, 10**12 + 1,
                              Gradient(0, b"\0" * 32, 0.0, 1, values)))
    tampered[-1] ^= 1  # flip a payload bit: digest no longer matches
    for frame in (forged, bytes(tampered)):
        world.call_at(0.001, world.hosts[0].execute, [Broadcast(frame, Gradient.KIND, 0)])
    world.run()
    assert world.metrics.rejections["bad_signature"] == 6
    assert world.metrics.rejections["bad_digest"] == 6
    hashes = {h.node.model_hash for h in world.hosts if h.node}
    assert len(hashes) == 1


def test_run_waits_for_a_cut_to_heal_and_finished_nodes_then_compare_heads() -> None:
    """Everyone finishes while a cut is in force: the run goes on until it heals, and the
    finished nodes' head audits (SyncRequests) cross the former cut afterwards."""
    result = run(scenario([{"kind": "partition", "at_round": 19, "duration": 5.0,
                            "groups": [[0, 1, 2], [3, 4, 5, 6]]}]))
    ev = result.events
    (heal_at,) = ev.filter(pl.col("event") == "heal")["time"].to_list()
    assert result.rounds["time"].max() < heal_at  # everyone finished before the heal
    audits = ev.filter((pl.col("event") == "deliver") & (pl.col("kind") == "SyncRequest")
                       & (pl.col("time") > heal_at))
    across = [(s, d) for s, d in audits.select("src", "dst").iter_rows() if (s < 3) != (d < 3)]
    assert across, "no head was compared across the healed cut"
    assert len(set(result.final_hashes().values())) == 1
