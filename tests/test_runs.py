"""End-to-end runs of the shipped scenarios: determinism, transport-agnosticism, visible faults."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import yaml

import phalanx
from phalanx.apps.results import RunResult
from phalanx.scenario.schema import load_scenario, parse_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


def scenario_dict(name: str) -> dict:
    return yaml.safe_load((SCENARIOS / f"{name}.yaml").read_text())


def test_same_seed_gives_byte_identical_events_and_hashes(tmp_path: Path) -> None:
    path = SCENARIOS / "partition.yaml"  # jitter, a partition, view changes and sync: lots of rng
    a = phalanx.run(path, out=tmp_path / "a")
    b = phalanx.run(path, out=tmp_path / "b")
    c = phalanx.run(path, seed=12, out=tmp_path / "c")
    events_a = (tmp_path / "a" / "events.parquet").read_bytes()
    assert events_a == (tmp_path / "b" / "events.parquet").read_bytes()
    assert a.final_hashes() == b.final_hashes()
    assert a.rounds.equals(b.rounds)
    assert events_a != (tmp_path / "c" / "events.parquet").read_bytes()
    assert set(a.final_hashes().values()).isdisjoint(c.final_hashes().values())


def test_real_tcp_processes_end_on_the_simulated_model() -> None:
    sim = phalanx.run(SCENARIOS / "quickstart.yaml")
    real = phalanx.run(SCENARIOS / "quickstart.yaml", real=True)
    assert real.summary["mode"] == "real-tcp"
    sim_hashes, real_hashes = sim.final_hashes(), real.final_hashes()
    assert sorted(real_hashes) == [0, 1, 2, 3]
    assert len(set(sim_hashes.values())) == 1
    assert real_hashes == sim_hashes
    # not only the end: every round's model agrees between the two worlds
    key = ["round", "node", "model_hash"]
    assert real.rounds.select(key).sort(key[:2]).equals(sim.rounds.select(key).sort(key[:2]))


def test_late_joiner_starts_from_a_checkpoint_in_simulation(tmp_path: Path) -> None:
    from phalanx.apps.audit import audit_run

    result = phalanx.run(SCENARIOS / "late_join.yaml", out=tmp_path)
    assert result.ok, result.failures
    late = result.rounds.filter(pl.col("node") == 3).sort("round")
    first = int(late["round"][0])
    assert first > 32 and late["via_sync"][0]  # state from peers, not every round replayed
    assert late["round"].to_list() == list(range(first, 100))  # and every round after it
    others = result.rounds.filter(pl.col("node") == 0).select("round", "model_hash")
    joined = late.select("round", "model_hash").join(others, on="round", suffix="_0")
    assert (joined["model_hash"] == joined["model_hash_0"]).all()
    # the audit re-verifies node 3's log from the checkpoint it adopted (kept in the log)
    audits, split = audit_run(tmp_path)
    assert split == [] and all(a.problem is None for a in audits), audits
    assert {a.node: (a.since, a.rounds) for a in audits}[3] == (first, 100 - first)


def test_members_join_and_leave_through_committed_rounds(tmp_path: Path) -> None:
    """scenarios/membership.yaml: two observers join, a member leaves, with a Byzantine member
    and a crash of a joiner; the run is a pure function of its seed like any other."""
    from phalanx.apps.audit import audit_run

    a = phalanx.run(SCENARIOS / "membership.yaml", out=tmp_path / "a")
    assert a.ok, a.failures
    steps = [(c["op"], c["node"], c["members"]) for c in a.summary["membership_changes"]]
    assert steps == [("join", 5, [0, 1, 2, 3, 4, 5]), ("join", 6, [0, 1, 2, 3, 4, 5, 6]),
                     ("leave", 1, [0, 2, 3, 4, 5, 6])]
    logged = a.events.filter(pl.col("event") == "membership")["detail"].to_list()
    assert [d.split(" from")[0] for d in logged] == ["join", "join", "leave"]
    # each round's set was drawn from its members: at most n of them contributed
    sizes = dict(zip(*a.rounds.group_by("round").agg(pl.col("contributors").max()).sort(
        "round").to_dict(as_series=False).values(), strict=True))
    starts = [c["from_round"] for c in a.summary["membership_changes"]]
    n_at = {r: 5 + sum(1 for s in starts[:2] if r >= s) - (r >= starts[2]) for r in sizes}
    assert all(sizes[r] <= n_at[r] for r in sizes)
    assert sizes[starts[1]] == 7 or sizes[starts[1] + 1] == 7  # the newcomer computes at once
    audits, split = audit_run(tmp_path / "a")
    assert split == [] and all(x.problem is None for x in audits), audits
    phalanx.run(SCENARIOS / "membership.yaml", out=tmp_path / "b")
    assert (tmp_path / "a" / "events.parquet").read_bytes() == (
        tmp_path / "b" / "events.parquet").read_bytes()


def test_membership_changes_under_a_nemesis_stay_safe_and_live(tmp_path: Path) -> None:
    """Joins and a leave while a member equivocates and the nemesis strikes: every seed keeps
    one model per round, commits every round and loses nothing (1000 seeds in RESULTS.md)."""
    from phalanx.apps.sweep import sweep

    report = sweep(SCENARIOS / "sweeps" / "nemesis-membership.yaml", range(40), workers=2,
                   out_dir=tmp_path)
    assert [o.violations for o in report.outcomes if o.violations] == []
    assert len(report.outcomes) == 40


def test_a_censoring_leader_delays_a_change_by_one_round_and_a_bogus_one_gets_no_vote() -> None:
    """The membership cells of the Byzantine matrix: each request lands in a round a Byzantine
    member leads. Censored, it goes into the next round, an honest leader's; a bogus change
    (a member asking to join) is refused by every honest voter."""
    from phalanx.apps.matrix import load_matrix

    _, cells = load_matrix(SCENARIOS / "byzantine" / "matrix.yaml")
    runs = {c.attack: phalanx.run(c.scenario) for c in cells if c.group == "membership-n10"
            and c.attack in ("none", "censor_changes", "bogus_change")}
    starts = {a: [c["from_round"] for c in r.summary["membership_changes"]]
              for a, r in runs.items()}
    assert starts["censor_changes"] == [r + 1 for r in starts["none"]]
    assert starts["bogus_change"] == starts["none"]
    refused = runs["bogus_change"].summary["rejected_by_reason"]
    assert refused["proposal_change_already_member"] + refused["proposal_change_stale_epoch"] > 0
    assert all(r.ok for r in runs.values())


def fault_window(result: RunResult, kind: str) -> tuple[float, float]:
    events = result.events
    start = events.filter((pl.col("event") == "fault") & pl.col("detail").str.contains(kind))
    end = events.filter((pl.col("event") == "heal") & pl.col("detail").str.contains(kind))
    return float(start["time"][0]), float(end["time"][0])


def test_partition_majority_commits_minority_stalls_then_catches_up() -> None:
    result = phalanx.run(SCENARIOS / "partition.yaml")
    assert result.ok, result.failures
    t0, t1 = fault_window(result, "partition")
    minority, majority = {7, 8, 9}, set(range(7))
    drops = result.events.filter(pl.col("detail") == "partition")
    assert len(drops) > 0
    # every drop crosses the cut, and happens while the cut is in place
    for src, dst in drops.select("src", "dst").iter_rows():
        assert (src in minority) != (dst in minority)
    assert drops["time"].min() >= t0 and drops["time"].max() <= t1
    during = result.rounds.filter(pl.col("time").is_between(t0 + 0.1, t1))
    majority_rounds = during.filter(pl.col("node").is_in(list(majority)))
    assert majority_rounds["round"].n_unique() >= 3, "the majority side must keep committing"
    assert (majority_rounds["contributors"] == 7).all()
    assert during.filter(pl.col("node").is_in(list(minority))).is_empty(), "minority stalls"
    after = result.rounds.filter(pl.col("node").is_in(list(minority)) & pl.col("via_sync"))
    assert set(after["node"].to_list()) == minority, "each minority node replays what it missed"
    assert after["time"].min() >= t1
    assert len(set(result.final_hashes().values())) == 1


def test_crash_restart_absence_and_return_are_visible() -> None:
    result = phalanx.run(SCENARIOS / "crash_restart.yaml")
    assert result.ok, result.failures
    events, rounds = result.events, result.rounds
    crashes = events.filter(pl.col("event") == "crash").sort("time")
    restarts = events.filter(pl.col("event") == "restart").sort("time")
    assert sorted(crashes["src"].to_list()) == sorted(restarts["src"].to_list()) == [2, 5]
    for node, keep_disk in ((2, True), (5, False)):
        down = float(crashes.filter(pl.col("src") == node)["time"][0])
        up = restarts.filter(pl.col("src") == node)
        assert up["detail"][0] == f"keep_disk={keep_disk}"
        back = float(up["time"][0])
        mine = rounds.filter(pl.col("node") == node)
        assert mine.filter(pl.col("time").is_between(down, back, closed="none")).is_empty()
        delivered = events.filter((pl.col("event") == "deliver") & (pl.col("dst") == node))
        assert delivered.filter(pl.col("time").is_between(down, back, closed="none")).is_empty()
        assert not events.filter((pl.col("detail") == "node_down") & (pl.col("dst") == node)
                                 ).is_empty()
        replayed = mine.filter(pl.col("via_sync") & (pl.col("time") >= back))
        if keep_disk:  # resumed from its checkpoint: never re-commits a round it had
            assert mine["round"].n_unique() == len(mine)
        else:  # empty disk: replays from round 0 through verified records
            assert 0 in replayed["round"].to_list() and len(mine) > mine["round"].n_unique()
    assert len(set(result.final_hashes().values())) == 1


def test_nemesis_never_exceeds_f_and_stays_safe() -> None:
    data = scenario_dict("crash_restart")
    data.update(name="nemesis", faults=[], nemesis={
        "kinds": ["crash", "isolate", "partition", "slow"], "interval": 0.7, "duration": 0.6,
        "start": 0.2, "stop": 4.0})
    result = phalanx.run(parse_scenario(data))
    faults = result.events.filter(pl.col("event").is_in(["fault", "heal"])).sort("time")
    assert faults.filter(pl.col("event") == "fault").height >= 3
    active: dict[str, set[int]] = {}
    for event, detail in faults.select("event", "detail").iter_rows():
        spec = yaml.safe_load(detail)
        nodes = set(spec.get("nodes") or [n for g in spec.get("groups", []) for n in g])
        if event == "fault":
            active[detail] = nodes
        else:
            active.pop(detail, None)
        assert len(set().union(*active.values())) <= 2  # f = 2 for n = 7
    assert result.summary["distinct_final_hashes"] == 1


@pytest.mark.parametrize("topology", [
    {"kind": "complete"}, {"kind": "ring"}, {"kind": "random_regular", "degree": 3},
    {"kind": "watts_strogatz", "k": 4, "p": 0.3}, {"kind": "barabasi_albert", "m": 2},
    {"kind": "geo_clusters", "clusters": 3, "intra_latency": 0.002, "inter_latency": 0.04},
])
def test_every_topology_trains_to_one_model(topology: dict) -> None:
    data = scenario_dict("crash_restart")
    data.update(name="topo", faults=[], topology=topology, nodes={"count": 10})
    data["training"]["rounds"] = 8
    data["expect"] = {"honest_hashes_equal": True, "rounds_committed_at_least": 8}
    result = phalanx.run(parse_scenario(data))
    assert result.ok, result.failures
    # a broadcast reaches every peer exactly once, relayed along the sender's tree
    assert result.summary["messages_dropped"] == 0
    assert result.rounds["bytes_sent"].min() > 0


def test_run_writes_all_outputs(tmp_path: Path) -> None:
    result = phalanx.run(SCENARIOS / "quickstart.yaml", out=tmp_path)
    for name in ("scenario.resolved.yaml", "events.parquet", "rounds.parquet", "summary.json",
                 "run.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    resolved = load_scenario(tmp_path / "scenario.resolved.yaml")
    assert resolved == load_scenario(SCENARIOS / "quickstart.yaml")
    rounds = pl.read_parquet(tmp_path / "rounds.parquet")
    assert rounds.height == 4 * 60
    assert {"eval_loss", "eval_accuracy", "model_hash", "bytes_sent"} <= set(rounds.columns)
    assert result.summary["final_eval_accuracy"] > 0.8
    losses = rounds.group_by("round").agg(pl.col("eval_loss").first()).sort("round")["eval_loss"]
    assert losses[-1] < 0.6 * losses[0], "training must reduce the held-out loss"


def test_silent_byzantine_node_is_tolerated() -> None:
    data = scenario_dict("crash_restart")
    data.update(name="silent", faults=[], byzantine=[{"nodes": [3], "behaviour": "silent"}])
    data["expect"] = {"honest_hashes_equal": True, "rounds_committed_at_least": 40,
                      "final_loss_below": 0.02}
    result = phalanx.run(parse_scenario(data))
    assert result.ok, result.failures
    honest = result.rounds.filter(~pl.col("byzantine"))
    assert (honest["contributors"] == 6).all()  # node 3's gradient never arrives


def test_runs_do_not_depend_on_the_process_hash_salt(tmp_path: Path) -> None:
    """Two processes with different str/bytes hash salts write byte-identical event logs."""
    import os
    import subprocess
    import sys

    digests = set()
    for salt in ("0", "12345"):
        out = tmp_path / salt
        env = {**os.environ, "PYTHONHASHSEED": salt}
        subprocess.run([sys.executable, "-m", "phalanx.apps.cli", "run",
                        str(SCENARIOS / "crash_restart.yaml"), "--out", str(out), "-q"],
                       env=env, check=True, capture_output=True)
        digests.add((out / "events.parquet").read_bytes())
        digests.add((out / "rounds.parquet").read_bytes())
    assert len(digests) == 2  # one events file, one rounds file, each identical across salts
