"""`phalanx bench sim`: simulator throughput against a bare-SimPy run of the same traffic.

Both sides simulate the same rounds on the same topology: every node computes for `step_time`,
broadcasts one frame down its shortest-path tree (one event per tree edge), the round's leader
broadcasts a proposal once it holds every gradient, a node broadcasts a prepare vote once it
holds the proposal and every gradient, a commit vote on a quorum of prepares, and starts the
next round on a quorum of commits. The bare side
does nothing else (no link model, no signatures, no decoding, no node logic); phalanx does all
of it for real. Events are counted the same way on both sides (one per scheduled callback), so
the ratio of events per wall second is the share of raw SimPy speed that phalanx keeps.
"""

from __future__ import annotations

import contextlib
import gc
import time
from pathlib import Path
from typing import Any

import simpy
from rich.console import Console

from phalanx.apps.bench_report import results_table, save_report, stamp
from phalanx.apps.runner import peak_memory_mb
from phalanx.engine.rng import RngStreams
from phalanx.scenario.schema import Scenario, parse_scenario
from phalanx.sim.world import SimWorld, build_graph_routes, gc_paused


def bench_scenario(nodes: int, rounds: int) -> Scenario:
    topology: dict[str, Any] = ({"kind": "random_regular", "degree": 8} if nodes > 16
                                else {"kind": "complete"})
    return parse_scenario({
        "name": f"bench-{nodes}", "seed": 1, "nodes": {"count": nodes}, "topology": topology,
        "links": {"latency": 0.01, "jitter": 0.002, "bandwidth": 1e9},
        "workload": {"kind": "linear", "dim": 8, "samples_per_node": 64},
        "training": {"rounds": rounds, "step_time": 0.02, "round_timeout": 2.0,
                     "view_timeout": 6.0},
        "record": "drops",
    }, "bench")


class BareSim:
    """The same message pattern in plain SimPy: timeouts with callbacks, nothing else."""

    def __init__(self, scenario: Scenario) -> None:
        routes = build_graph_routes(scenario, RngStreams(scenario.seed))
        self.n = scenario.nodes.count
        self.rounds = scenario.training.rounds
        self.step = scenario.training.step_time
        table = routes.next_hop_table
        self.children: list[list[list[int]]] = []
        for root in range(self.n):
            kids: list[list[int]] = [[] for _ in range(self.n)]
            for v in range(self.n):
                if v != root:
                    kids[int(table[v, root])].append(v)
            self.children.append(kids)
        self.latency = {(u, v): routes.edge_latency(u, v) for u, v in routes.edges()}
        self.env = simpy.Environment()
        self.events = 0
        self.quorum = 2 * self.n // 3 + 1
        self.got = [[0] * self.n for _ in range(self.rounds)]
        self.proposal = [[False] * self.n for _ in range(self.rounds)]
        self.votes = {phase: [[0] * self.n for _ in range(self.rounds)]
                      for phase in ("prepare", "commit")}
        self.voted = {phase: [[False] * self.n for _ in range(self.rounds)]
                      for phase in ("prepare", "commit")}
        self.round = [0] * self.n

    def later(self, delay: float, fn: Any, *args: Any) -> None:
        self.events += 1
        self.env.timeout(delay).callbacks.append(lambda _: fn(*args))

    def start_round(self, node: int) -> None:
        if self.round[node] < self.rounds:
            self.later(self.step, self.computed, node, self.round[node])

    def computed(self, node: int, rnd: int) -> None:
        self.got[rnd][node] += 1
        self.relay(node, node, rnd, "gradient")
        self.check(node, rnd)

    def relay(self, at: int, src: int, rnd: int, kind: str) -> None:
        for child in self.children[src][at]:
            self.later(self.latency[(at, child)], self.arrive, child, src, rnd, kind)

    def arrive(self, at: int, src: int, rnd: int, kind: str) -> None:
        self.relay(at, src, rnd, kind)
        if kind == "proposal":
            self.proposal[rnd][at] = True
        elif kind in self.votes:
            self.votes[kind][rnd][at] += 1
        else:
            self.got[rnd][at] += 1
        self.check(at, rnd)

    def vote(self, node: int, rnd: int, phase: str) -> None:
        self.voted[phase][rnd][node] = True
        self.votes[phase][rnd][node] += 1
        self.relay(node, node, rnd, phase)

    def check(self, node: int, rnd: int) -> None:
        if rnd != self.round[node] or self.got[rnd][node] < self.n:
            return
        leader = rnd % self.n
        if node == leader and not self.proposal[rnd][node]:
            self.proposal[rnd][node] = True
            self.relay(node, node, rnd, "proposal")
        if not self.proposal[rnd][node]:
            return
        if not self.voted["prepare"][rnd][node]:
            self.vote(node, rnd, "prepare")
        if self.votes["prepare"][rnd][node] >= self.quorum and not self.voted["commit"][rnd][node]:
            self.vote(node, rnd, "commit")
        if self.votes["commit"][rnd][node] >= self.quorum:
            self.round[node] += 1
            self.start_round(node)

    def run(self, pause_gc: bool = True) -> dict[str, float]:
        for node in range(self.n):
            self.start_round(node)
        wall = time.perf_counter()
        with gc_paused() if pause_gc else contextlib.nullcontext():
            self.env.run()
        wall = time.perf_counter() - wall
        assert all(r == self.rounds for r in self.round), "bare baseline did not finish"
        return {"events": self.events, "wall_seconds": wall,
                "events_per_second": self.events / wall, "sim_seconds": float(self.env.now)}


def bench_one(nodes: int, rounds: int) -> dict[str, Any]:
    scenario = bench_scenario(nodes, rounds)
    gc.collect()
    bare = BareSim(scenario).run()  # the collector paused, as phalanx runs: the fair baseline
    gc.collect()
    bare_default_gc = BareSim(scenario).run(pause_gc=False)  # SimPy as most scripts run it
    gc.collect()
    world = SimWorld(scenario)
    stats = world.run()
    committed = min(sum(1 for m, *_ in world.metrics.commits if m.node == i) for i in range(nodes))
    phalanx = {"events": stats.events, "wall_seconds": stats.wall_seconds,
               "events_per_second": stats.events / stats.wall_seconds,
               "sim_seconds": stats.sim_seconds, "rounds_committed": committed,
               "messages_delivered": world.log.delivered,
               "messages_per_round": world.log.delivered / max(committed, 1)}
    return {"nodes": nodes, "rounds": rounds, "topology": scenario.topology.kind,
            "phalanx": phalanx, "bare_simpy": bare, "bare_simpy_default_gc": bare_default_gc,
            "ratio": phalanx["events_per_second"] / bare["events_per_second"],
            "ratio_vs_default_gc": (phalanx["events_per_second"]
                                    / bare_default_gc["events_per_second"])}


def run_bench(counts: list[int], rounds: int, out_file: Path, console: Console) -> dict[str, Any]:
    results = []
    for n in counts:
        console.print(f"bench sim: {n} nodes, {rounds} rounds ...")
        results.append(bench_one(n, rounds))
    report = {"benchmark": "sim", **stamp(), "simpy": simpy.__version__,
              "peak_memory_mb": peak_memory_mb(), "results": results}
    save_report(report, out_file)
    table = results_table(
        f"simulated events per wall second, {rounds} rounds (same traffic, same run; bare = "
        "plain SimPy with the collector paused like phalanx)",
        ("nodes", "phalanx ev/s", "bare ev/s", "phalanx/bare", "bare ev/s (gc on)",
         "phalanx/bare (gc on)", "phalanx wall s", "msgs/round"),
        [(str(r["nodes"]), f"{r['phalanx']['events_per_second']:,.0f}",
          f"{r['bare_simpy']['events_per_second']:,.0f}", f"{r['ratio']:.2f}",
          f"{r['bare_simpy_default_gc']['events_per_second']:,.0f}",
          f"{r['ratio_vs_default_gc']:.2f}", f"{r['phalanx']['wall_seconds']:.1f}",
          f"{r['phalanx']['messages_per_round']:,.0f}") for r in results])
    console.print(table)
    console.print(f"written to {out_file}")
    return report
