"""`phalanx bench crash`: what one crashed member (within f) costs a cluster, with the failure
detector (engine/node/detector.py) and without it, in simulation and in a real cluster.

Each size n runs the quickstart's mlp on a complete overlay. In simulation: fault-free, a
member that is not the round's leader crashing at the start of round `crash_round`, and the
round's leader crashing before it proposes; each with the detector on and off. For real: a
loopback cluster (`phalanx cluster`), one member killed with SIGKILL once the cluster reached
`crash_round`. A round's latency is the time between its first commit and the previous
round's; "after detection" counts the rounds from two after the crash on (the issue's bound on
detection), against the median of the rounds before it. "Extra seconds" is the time the rounds
from the crash on took beyond that many fault-free rounds: the gather waits and view timeouts
the crash cost in all.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console

from phalanx.apps.bench_report import results_table, save_report, stamp
from phalanx.apps.runner import run_scenario
from phalanx.scenario.schema import Scenario, parse_scenario

STEP_TIME = 0.05
DETECTION_ROUNDS = 2  # the rounds after the crash that may still pay for it


def crash_scenario(n: int, rounds: int, detector: bool, fault: dict[str, Any] | None,
                   real: dict[str, float] | None = None) -> Scenario:
    data: dict[str, Any] = {
        "name": f"crash-n{n}", "seed": 3, "nodes": {"count": n},
        "topology": {"kind": "complete"},
        "links": {"latency": 0.005, "jitter": 0.002, "bandwidth": 100e6},
        "workload": {"kind": "mlp", "features": 16, "classes": 4, "hidden": 32},
        "training": {"rounds": rounds, "lr": 0.1, "momentum": 0.9, "batch": 64,
                     "step_time": STEP_TIME, "failure_detector": detector},
        "faults": [fault] if fault else [], "record": "none"}
    if real:
        data["real"] = real
    return parse_scenario(data, "bench crash")


def latencies(first_commit: dict[int, float]) -> list[float]:
    """Round r's latency (r >= 1): its first commit time minus round r - 1's."""
    rounds = sorted(first_commit)
    return [first_commit[r] - first_commit[r - 1] for r in rounds[1:] if r - 1 in first_commit]


def shape(lat: list[float], crash_round: int) -> dict[str, Any]:
    """Latency before the crash, after detection, and what the crash cost in all."""
    before = statistics.median(lat[: crash_round - 1])  # lat[i] is round i + 1's
    after = lat[crash_round - 1 + DETECTION_ROUNDS:]
    from_crash = lat[crash_round - 1:]
    slow = [crash_round + i for i, x in enumerate(from_crash) if x > 1.5 * before]
    return {"round_seconds_before": before,
            "round_seconds_after_detection": statistics.median(after) if after else None,
            "ratio_after_detection": statistics.median(after) / before if after else None,
            "slowest_round_seconds": max(from_crash) if from_crash else None,
            "rounds_over_1_5x": slow,
            "extra_seconds": sum(from_crash) - before * len(from_crash)}


def sim_case(n: int, rounds: int, crash_round: int, detector: bool, kind: str) -> dict[str, Any]:
    leader_crash_at = crash_round * 0.076 + 0.02  # inside round crash_round's gather
    fault = {"none": None,
             "member": {"kind": "crash", "nodes": [crash_round % n + 1], "at_round": crash_round},
             # view 0's leader of the round (members[round % n]) crashes before proposing
             "leader": {"kind": "crash", "nodes": [crash_round % n], "at": leader_crash_at},
             }[kind]
    result = run_scenario(crash_scenario(n, rounds, detector, fault))
    df = result.rounds.group_by("round").agg(pl.col("time").min().alias("t"))
    first = dict(zip(df["round"].to_list(), df["t"].to_list(), strict=True))
    out = {"world": "sim", "nodes": n, "crash": kind, "detector": detector,
           "rounds_committed": result.summary["min_rounds_committed"],
           "view_changes": result.summary["view_changes"],
           "distinct_final_hashes": result.summary["distinct_final_hashes"]}
    if kind == "none":
        lat = latencies(first)
        return {**out, "round_seconds_median": statistics.median(lat)}
    return {**out, **shape(latencies(first), crash_round)}


def real_case(n: int, rounds: int, crash_round: int) -> dict[str, Any]:
    """A loopback cluster of n nodes; the member after the crash round's leader is killed."""
    from phalanx.apps.cluster import cluster_down, cluster_up

    scenario = crash_scenario(n, rounds, True, None)
    victim = crash_round % n + 1
    with tempfile.TemporaryDirectory(prefix="phalanx-bench-crash-") as tmp:
        folder = Path(tmp)
        nodes = cluster_up(scenario, folder, exit_when_finished=True)
        try:
            _wait_round(folder, crash_round, 300)
            os.kill(nodes[victim].pid, signal.SIGKILL)
            killed = time.time()
            survivors = [node for node in nodes if node.id != victim]
            deadline = time.time() + 600
            while time.time() < deadline and not all(
                    (node.folder / "result.json").exists() for node in survivors):
                time.sleep(0.2)
            results = [json.loads((node.folder / "result.json").read_text())
                       for node in survivors if (node.folder / "result.json").exists()]
        finally:
            cluster_down(folder, grace=5.0)
    if len(results) < len(survivors):
        raise RuntimeError(f"bench crash: {len(survivors) - len(results)} survivors of n = {n} "
                           "did not finish within 600 s")
    first: dict[int, float] = {}
    for result in results:
        for c in result["commits"]:
            first[c["round"]] = min(first.get(c["round"], c["time"]), c["time"])
    killed_round = max((r for r, t in first.items() if t <= killed), default=crash_round)
    hashes = {result["commits"][-1]["model_hash"] for result in results}
    return {"world": "real", "nodes": n, "crash": f"member {victim} (SIGKILL)", "detector": True,
            "killed_after_round": killed_round, "rounds_committed": len(first),
            "distinct_final_hashes": len(hashes), **shape(latencies(first), killed_round + 1)}


def _wait_round(folder: Path, target: int, timeout: float) -> None:
    from phalanx.apps.cluster import cluster_status

    deadline = time.time() + timeout
    while time.time() < deadline:
        rounds = [r["status"]["round"] for r in cluster_status(folder) if r["status"]]
        if rounds and min(rounds) >= target:
            return
        time.sleep(0.05)
    raise RuntimeError(f"bench crash: the cluster did not reach round {target} in {timeout} s")


def run_bench(sizes: list[int], rounds: int, crash_round: int, real: bool, out_file: Path,
              console: Console) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    for n in sizes:
        for kind in ("none", "member", "leader"):
            for detector in (True, False):
                if kind == "none" and not detector:
                    continue  # nothing to detect: the same run
                console.print(f"bench crash: sim, n = {n}, crash: {kind}, detector {detector}")
                results.append(sim_case(n, rounds, crash_round, detector, kind))
        if real:
            console.print(f"bench crash: real cluster, n = {n}, one member killed")
            results.append(real_case(n, rounds, crash_round))
    report = {"benchmark": "crash", **stamp(), "rounds": rounds, "crash_round": crash_round,
              "step_time_s": STEP_TIME, "results": results}
    save_report(report, out_file)
    console.print(results_table(
        "one crashed member: round latency before the crash and after detection",
        ("world", "n", "crash", "detector", "before s", "after s", "after/before",
         "extra s in all", "view changes", "hashes"),
        [(r["world"], str(r["nodes"]), r["crash"], "on" if r["detector"] else "off",
          _s(r.get("round_seconds_before", r.get("round_seconds_median"))),
          _s(r.get("round_seconds_after_detection")), _s(r.get("ratio_after_detection"), 2),
          _s(r.get("extra_seconds"), 2), str(r.get("view_changes", "-")),
          str(r["distinct_final_hashes"])) for r in results]))
    console.print(f"written to {out_file}")
    return report


def _s(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
