"""`phalanx bench memory`: a real node's resident memory over a long run, and its restart time.

A real loopback cluster (apps/cluster.py: one process per node, TCP, SQLite logs) runs the
`bench_real` mlp (676 parameters) for `--rounds` rounds with short timeouts. Node 0's resident
set (VmRSS in /proc/<pid>/status: psutil is not needed) and its round (its /status endpoint)
are sampled every `--every` seconds. Memory is flat when the RSS at the end is within
`TARGET` of the RSS once warmed up (the first sample at or past `--warmup` rounds); the slope
after warm-up (MB per 1000 rounds, a least-squares line) says how it would go on.

Then the whole cluster is started again on its disks (every node importing on the shared
cores), and once it is up, node 0 is stopped and started again alone among its running peers,
as an operator restarts one node: each restart time is from node 0's process spawn until its
/status reports the last round, i.e. its disk was read back (the checkpoint and the window of
newest rounds, not the whole log) and it finished again. The interpreter's start
and imports are part of it, as an operator sees it (on a loaded machine they are most of it), so
the node's own part is timed too, in this process on node 0's disk: a fresh Node handed
`Started(log.view())` (what a restart does now) and `Started(log.read_all())` (what it did).

`--nodes-pythonpath DIR` runs the nodes from another checkout (e.g. the code before bounded
memory, for a baseline) while this module drives them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from phalanx.apps.bench_report import results_table, save_report, stamp
from phalanx.apps.cluster import (
    NodeProc,
    alive,
    cluster_down,
    cluster_up,
    node_status,
    serve_on,
)
from phalanx.apps.node_log import NodeLog
from phalanx.apps.node_settings import load_members
from phalanx.engine.events import Started
from phalanx.engine.node import Node
from phalanx.engine.rng import RngStreams
from phalanx.net.crypto import Identity
from phalanx.net.envelope import open_frame
from phalanx.scenario.build import node_config, workload_for
from phalanx.scenario.schema import Scenario, load_scenario, parse_scenario

TARGET = 0.10  # RSS at the end within 10% of the RSS after warm-up
SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "bench_real.yaml"


class BenchMemoryError(RuntimeError):
    """The benchmark could not run to its end; the message is one line."""


def rss_mb(pid: int) -> float | None:
    """The resident set of process `pid` in MB, None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def bench_scenario(rounds: int, nodes: int, base: Path = SCENARIO) -> Scenario:
    """The mlp of `bench_real` for `rounds` rounds on `nodes` nodes, with timeouts a loopback
    round never reaches and a deadline long enough for the run."""
    data = load_scenario(base).model_dump(mode="json")
    data["name"] = "bench-memory"
    data["nodes"]["count"] = nodes
    data["training"]["rounds"] = rounds
    data["training"]["eval_every"] = rounds  # one model kept for evaluation, not one per 50
    data["real"] = {**data.get("real", {}), "round_timeout": 1.0, "view_timeout": 3.0,
                    "start_wait": 30.0, "deadline": max(300.0, rounds * 0.5)}
    return parse_scenario(data, "bench-memory")


def _sample(node: NodeProc) -> dict[str, Any] | None:
    rss = rss_mb(node.pid)
    if rss is None:
        return None
    status = node_status(node, timeout=2.0)
    return {"t": time.time(), "round": status["round"] if status else None, "rss_mb": rss}


def _watch(node: NodeProc, rounds: int, every: float, deadline: float,
           console: Console) -> list[dict[str, Any]]:
    """Node 0's samples until it has committed `rounds` rounds (or exited)."""
    series: list[dict[str, Any]] = []
    last_print = 0.0
    while time.time() < deadline:
        sample = _sample(node)
        if sample is None:
            break  # exited (finished, then lingered out)
        series.append(sample)
        if sample["round"] is not None and sample["round"] >= rounds:
            break
        if time.time() - last_print > 30:
            last_print = time.time()
            console.print(f"round {sample['round']}: {sample['rss_mb']:.1f} MB", highlight=False)
        time.sleep(every)
    else:
        raise BenchMemoryError(f"node 0 did not reach round {rounds} within the deadline")
    return series


def flatness(series: list[dict[str, Any]], warmup: int) -> dict[str, Any]:
    """RSS after warm-up against the end: the ratio and the slope (MB per 1000 rounds)."""
    after = [s for s in series if s["round"] is not None and s["round"] >= warmup]
    if len(after) < 2:
        raise BenchMemoryError(f"fewer than 2 samples after the warm-up of {warmup} rounds: "
                               f"run more rounds or sample more often (--every)")
    first, end = after[0], after[-1]
    rounds = np.array([s["round"] for s in after], dtype=float)
    rss = np.array([s["rss_mb"] for s in after])
    slope = float(np.polyfit(rounds, rss, 1)[0] * 1000) if np.ptp(rounds) > 0 else 0.0
    ratio = end["rss_mb"] / first["rss_mb"]
    return {"warmup_round": first["round"], "rss_after_warmup_mb": first["rss_mb"],
            "end_round": end["round"], "rss_end_mb": end["rss_mb"],
            "rss_max_after_warmup_mb": float(rss.max()), "end_over_warmup": ratio,
            "slope_mb_per_1000_rounds": slope, "flat": abs(ratio - 1) <= TARGET}


def import_seconds() -> float:
    """How long a fresh interpreter takes to import a node (the floor of any restart here)."""
    start = time.time()
    subprocess.run([sys.executable, "-c", "import phalanx.apps.node"], check=True)
    return time.time() - start


def _restart_seconds(scenario: Scenario, folder: Path, rounds: int, deadline: float,
                     only: int | None = None) -> dict[str, Any]:
    """Start the cluster again on its disks (`only`: that node alone, as an operator restarts
    one); seconds until node 0 reports the last round."""
    start = time.time()
    node = next(n for n in cluster_up(scenario, folder, exit_when_finished=True, only=only)
                if n.id == 0)
    rss_peak = 0.0
    while time.time() < deadline:
        rss_peak = max(rss_peak, rss_mb(node.pid) or 0.0)
        status = node_status(node, timeout=0.5)
        if status is not None and status["round"] >= rounds:
            return {"restart_seconds": time.time() - start, "rss_after_restart_mb": rss_peak,
                    "round_after_restart": status["round"]}
        if not alive(node.pid):
            raise BenchMemoryError("node 0 exited after its restart without reporting its "
                                   "round (see node-0/node.log)")
        time.sleep(0.02)
    raise BenchMemoryError("node 0 did not report its round within the deadline after restart")


def restore_seconds(scenario: Scenario, folder: Path) -> dict[str, Any]:
    """The node's own restart work on node 0's disk, in this process: open the SQLite log and
    hand a fresh node its disk, lazily (now) and read whole (before)."""
    members, observers = load_members(folder / "members.json")
    keyring = {i: key for i, (key, _) in {**members, **observers}.items()}
    workload = workload_for(scenario, RngStreams(scenario.seed))
    timings: dict[str, Any] = {}
    for name, read in (("restore_seconds", NodeLog.view), ("restore_seconds_read_all",
                                                           NodeLog.read_all)):
        node = Node(node_config(scenario, 0, scenario.real.round_timeout,
                                scenario.real.view_timeout), Identity.generate(), workload,
                    lambda frame: open_frame(frame, keyring))
        start = time.perf_counter()
        log = NodeLog(folder / "node-0" / "node.sqlite")
        node.handle(Started(read(log)), 0.0)
        timings[name] = time.perf_counter() - start
        timings[f"{name}_round"] = node.round
        timings[f"{name}_records_in_memory"] = len(node.history)
        log.close()
    return timings


def run_bench(rounds: int, nodes: int, every: float, warmup: int, folder: Path,
              out_file: Path, console: Console,
              nodes_pythonpath: Path | None = None) -> dict[str, Any]:
    if nodes_pythonpath is not None:  # the node processes inherit it (apps/cluster.py)
        os.environ["PYTHONPATH"] = str(nodes_pythonpath)
    scenario = bench_scenario(rounds, nodes)
    if folder.exists() and any(folder.iterdir()):
        raise BenchMemoryError(f"{folder}: not empty (the run needs fresh node disks)")
    start = time.time()
    deadline = start + scenario.real.deadline
    node = next(n for n in cluster_up(scenario, folder, exit_when_finished=True) if n.id == 0)
    try:
        series = _watch(node, rounds, every, deadline, console)
        run_seconds = time.time() - start
    finally:
        cluster_down(folder, grace=10.0)
    flat = flatness(series, min(warmup, rounds // 2))
    restore = restore_seconds(scenario, folder)
    restore["import_seconds"] = import_seconds()
    serve_on(folder)  # restarted nodes stay up: node 0 then restarts among running peers
    try:  # every node at once on the shared cores, then node 0 alone as its peers serve on
        restart = _restart_seconds(scenario, folder, rounds, time.time() + 120)
        cluster_down(folder, grace=10.0, only=0)
        alone = _restart_seconds(scenario, folder, rounds, time.time() + 120, only=0)
    finally:
        cluster_down(folder, grace=10.0)
    restart.update({f"{key}_one_node": value for key, value in alone.items()})
    reached = flat["end_round"]
    report = {**stamp(), "benchmark": "memory", "nodes": nodes, "rounds": rounds,
              "nodes_pythonpath": str(nodes_pythonpath) if nodes_pythonpath else None,
              "run_seconds": run_seconds, "rounds_per_second": reached / run_seconds,
              "load_average": os.getloadavg(), **flat, **restart, **restore,
              "series": [{"round": s["round"], "rss_mb": round(s["rss_mb"], 2),
                          "t": round(s["t"] - start, 2)} for s in series]}
    save_report(report, out_file)
    console.print(results_table(
        f"node 0 over {reached} rounds ({nodes} nodes, {report['rounds_per_second']:.1f} "
        f"rounds/s)", ("warm-up round", "RSS then MB", "RSS end MB", "end / warm-up",
                       "MB per 1000 rounds", "restart s: node 0 / all", "restore s"),
        [(str(flat["warmup_round"]), f"{flat['rss_after_warmup_mb']:.1f}",
          f"{flat['rss_end_mb']:.1f}", f"{flat['end_over_warmup']:.3f}",
          f"{flat['slope_mb_per_1000_rounds']:+.2f}",
          f"{restart['restart_seconds_one_node']:.2f} / {restart['restart_seconds']:.2f}",
          f"{restore['restore_seconds']:.3f}")]))
    console.print(f"written: {out_file}", highlight=False)
    return report
