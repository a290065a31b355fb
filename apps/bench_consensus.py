"""`phalanx bench consensus`: simulated commit latency and traffic per round as n grows.

Each size runs the same scenario: a complete overlay with 50 ms links (2 ms jitter, 1 Gbit/s),
the linear workload with 256 parameters (1 KiB gradients), no faults. A round's latency is the
simulated time between a node's consecutive commits (averaged over nodes and rounds after the
first); the consensus part is that minus the modelled compute time (`step_time`). Each size
runs twice: votes broadcast to everyone (O(n^2) messages per phase) and votes to the view's
leader, which broadcasts each quorum (O(n), one more message delay per phase). The original
system claimed "sub-second consensus": the target is under one simulated second at n = 100.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console

from phalanx.apps.bench_report import results_table, save_report, stamp
from phalanx.apps.runner import run_scenario
from phalanx.scenario.schema import Scenario, parse_scenario

STEP_TIME = 0.01
LINK_LATENCY = 0.05


def consensus_scenario(n: int, rounds: int, silent: int | None = None,
                       votes: str = "broadcast", detector: bool = True) -> Scenario:
    byzantine = [{"nodes": [silent], "behaviour": "silent"}] if silent is not None else []
    return parse_scenario({
        "name": f"consensus-{n}", "seed": 1, "nodes": {"count": n},
        "topology": {"kind": "complete"},
        "links": {"latency": LINK_LATENCY, "jitter": 0.002, "bandwidth": 1e9},
        "workload": {"kind": "linear", "dim": 256, "samples_per_node": 64},
        "training": {"rounds": rounds, "step_time": STEP_TIME, "round_timeout": 1.0,
                     "view_timeout": 3.0, "votes": votes, "failure_detector": detector},
        "record": "none", "byzantine": byzantine,
    }, "bench consensus")


def round_periods(result: Any) -> pl.DataFrame:
    """Per honest node and round after the first: the simulated time since its last commit,
    with the view the round committed in."""
    df = result.rounds.filter(~pl.col("byzantine")).sort("node", "round")
    return (df.with_columns((pl.col("time") - pl.col("time").shift(1).over("node")).alias("gap"))
            .filter(pl.col("round") > 0))


def silent_leader(n: int, rounds: int) -> dict[str, Any]:
    """Node 1 is silent from the start. Without the failure detector the rounds whose first
    leader it is commit only after a view change (their latency against the other rounds is
    what a silent leader costs) and every round waits out the gather timeout; with it, round
    0's set lacks node 1, which then leads no round and is not waited for."""
    out: dict[str, Any] = {"nodes": n, "rounds": rounds, "view_timeout": 3.0}
    for detector in (False, True):
        result = run_scenario(consensus_scenario(n, rounds, silent=1, detector=detector))
        gaps = round_periods(result)
        changed = gaps.filter(pl.col("view") > pl.col("view").shift(1).over("node"))
        normal = gaps.filter(pl.col("view") == pl.col("view").shift(1).over("node"))
        slow = changed["gap"].mean() if changed.height else None
        fast = float(normal["gap"].mean())  # type: ignore[arg-type]
        out["with_detector" if detector else "without_detector"] = {
            "rounds_committed": result.summary["min_rounds_committed"],
            "view_change_rounds": changed["round"].n_unique(),
            "round_seconds_view_change": slow, "round_seconds_normal": fast,
            "added_seconds": None if slow is None else slow - fast}  # type: ignore[operator]
    return out


def bench_one(n: int, rounds: int, votes: str) -> dict[str, Any]:
    result = run_scenario(consensus_scenario(n, rounds, votes=votes))
    df = result.rounds.filter(~pl.col("byzantine")).sort("node", "round")
    gaps = (df.with_columns((pl.col("time") - pl.col("time").shift(1).over("node")).alias("gap"))
            .filter(pl.col("round") > 0)["gap"])
    s = result.summary
    bytes_per_round = float(df.group_by("round").agg(pl.col("bytes_sent").sum())[
        "bytes_sent"].mean())  # type: ignore[arg-type]
    period = float(gaps.mean())  # type: ignore[arg-type]
    return {"nodes": n, "votes": votes, "rounds": rounds, "round_seconds": period,
            "consensus_seconds": period - STEP_TIME,
            "round_seconds_max": float(gaps.max()),  # type: ignore[arg-type]
            "messages_per_round": s["messages_per_round"],
            "bytes_per_round": bytes_per_round, "wall_seconds": s["wall_seconds"],
            "rounds_committed": s["min_rounds_committed"]}


def run_bench(sizes: list[int], rounds: int, out_file: Path, console: Console) -> dict[str, Any]:
    results = []
    for n in sizes:
        for votes in ("broadcast", "leader"):
            console.print(f"bench consensus: {n} nodes, votes: {votes}, {rounds} rounds ...")
            results.append(bench_one(n, rounds, votes))
    silent = silent_leader(16, 2 * 16)
    report = {"benchmark": "consensus", **stamp(), "silent_leader": silent,
              "links": {"latency_s": LINK_LATENCY, "jitter_s": 0.002, "bandwidth_bps": 1e9},
              "step_time_s": STEP_TIME, "results": results}
    save_report(report, out_file)
    table = results_table(
        f"simulated round latency, complete overlay, {LINK_LATENCY * 1000:.0f} ms links "
        "(gradient, proposal, prepare and commit votes)",
        ("nodes", "votes", "round s", "consensus s (minus compute)", "slowest round s",
         "messages/round", "MB/round", "wall s"),
        [(str(r["nodes"]), r["votes"], f"{r['round_seconds']:.3f}",
          f"{r['consensus_seconds']:.3f}", f"{r['round_seconds_max']:.3f}",
          f"{r['messages_per_round']:,.0f}", f"{r['bytes_per_round'] / 1e6:.2f}",
          f"{r['wall_seconds']:.1f}") for r in results])
    console.print(table)
    for label, key in (("without", "without_detector"), ("with", "with_detector")):
        case = silent[key]
        cost = (f"{case['view_change_rounds']} rounds needed a view change and took "
                f"{case['round_seconds_view_change']:.3f} s against "
                f"{case['round_seconds_normal']:.3f} s (+{case['added_seconds']:.3f} s)"
                if case["view_change_rounds"] else
                f"no round needed a view change; rounds took {case['round_seconds_normal']:.3f} s")
        console.print(f"silent leader (n={silent['nodes']}, node 1 silent, {silent['rounds']} "
                      f"rounds, {label} the failure detector): {cost}; "
                      f"{case['rounds_committed']} of {silent['rounds']} rounds committed")
    console.print(f"written to {out_file}")
    return report
