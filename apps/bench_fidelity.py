"""`phalanx bench fidelity`: does the simulator predict a real run from measured components?

For each scenario (a 4-node mlp on a complete graph, a 10-node ring of 20 ms links, the
7-node transformer with two Byzantine members), shortened to `rounds`:

1. components, each timed alone on this machine (`apps/calibrate.measure_components`) just
   before the scenario's real runs (the machine's speed and load drift over minutes), each
   averaged over at least a second (`calibrate.WINDOW`): the gradient of the workload and
   the node core's CPU per event kind (its nodes in one process, no network), the
   transport's CPU per frame and its own hop (a ping-pong between two processes, through the
   link emulation), SQLite transactions (wall and CPU seconds, flush included) as functions
   of size, the cores, the disk and the other tenants' load (a CPU probe's share of a core).
   They are written to a costs file per scenario; none is fitted from a real run of a
   scenario being predicted.
2. predicted: the simulator with that costs file (`phalanx run --costs`) and the real nodes'
   timeouts; also the simulator as the scenario gives it (step_time, no CPU costs);
3. measured: `real_runs` real runs (`phalanx run --real`, the scenario's topology and links
   emulated in the transport, apps/emulate.py);
4. the old fitted calibration beside it: step_time = gradient + whatever the simulator leaves
   unexplained of the (first) real run, which matches that run by construction.

The figure compared is the median time between a node's consecutive commits (honest nodes,
rounds after the first). Real timings on a shared machine are noisy: the load average around
each real run and the spread over runs are recorded.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

from rich.console import Console

from phalanx.apps.bench_report import results_table, save_report, stamp
from phalanx.apps.calibrate import (
    measure_components,
    measure_real_run,
    real_timeouts,
    round_seconds,
    with_rounds,
)
from phalanx.apps.runner import run_scenario
from phalanx.scenario.schema import Scenario, load_scenario, parse_scenario
from phalanx.sim.costs import parse_costs, workload_key

TARGET = 0.20  # predicted median round latency within 20% of the real one
SCENARIOS = (("scenarios/bench_real.yaml", 100), ("scenarios/ring_10.yaml", 40),
             ("scenarios/transformer_byzantine.yaml", 30))


def _with_step_time(scenario: Scenario, step_time: float) -> Scenario:
    data = scenario.model_dump(mode="json")
    data["training"]["step_time"] = step_time
    return parse_scenario(data, scenario.name)


def fitted(scenario: Scenario, gradient: float, real_median: float) -> dict[str, Any]:
    """The old calibration's way: what the simulator with the gradient alone leaves
    unexplained of the real run becomes part of step_time (the sim is linear in it)."""
    bare = round_seconds(run_scenario(_with_step_time(scenario, gradient)))["median"]
    residual = real_median - bare
    step = max(0.0, gradient + residual)
    predicted = round_seconds(run_scenario(_with_step_time(scenario, step)))["median"]
    return {"step_time": step, "residual_seconds": residual, "sim_gradient_only": bare,
            "predicted_median": predicted, "ratio": predicted / real_median}


def one_scenario(scenario: Scenario, repeats: int, real_runs: int, costs_file: Path,
                 console: Console) -> dict[str, Any]:
    s = real_timeouts(scenario)
    key = workload_key(s)
    # the components just before this scenario's real runs: a shared machine's speed and
    # load drift over minutes, and each component is averaged over seconds (calibrate.WINDOW)
    costs = measure_components([scenario], repeats, console.print)
    save_report(costs, costs_file)
    reals = []
    for i in range(real_runs):
        console.print(f"bench fidelity: {s.name}: real run {i + 1} of {real_runs} ...")
        reals.append(measure_real_run(scenario, network="emulate"))
    model = parse_costs(costs, str(costs_file))
    console.print(f"bench fidelity: {s.name}: simulating ...")
    predicted = round_seconds(run_scenario(s, costs=model))["median"]
    as_given = round_seconds(run_scenario(s))["median"]
    medians = [r["round_seconds_median"] for r in reals]
    measured = statistics.median(medians)
    return {"scenario": s.name, "nodes": s.nodes.count, "rounds": s.training.rounds,
            "topology": s.topology.kind, "link_latency": s.links.latency,
            "workload": s.workload.kind, "costs_file": str(costs_file),
            "gradient_seconds": costs["gradient_seconds"][key],
            "handle_seconds": costs["handle_seconds"][key],
            "background_load": costs["background_load"], "cost_model_speed": model.speed,
            "predicted_median": predicted, "measured_median": measured,
            "measured_medians": medians, "measured_spread": [min(medians), max(medians)],
            "ratio": predicted / measured, "within_target": abs(predicted / measured - 1)
            <= TARGET, "sim_as_given_median": as_given, "ratio_as_given": as_given / measured,
            "fitted_calibration": fitted(s, costs["gradient_seconds"][key], medians[0]),
            "real_runs": reals}


def run_bench(out_file: Path, console: Console, real_runs: int = 1, repeats: int = 30,
              scenarios: tuple[tuple[str, int], ...] = SCENARIOS) -> dict[str, Any]:
    loaded = [with_rounds(load_scenario(path), rounds) for path, rounds in scenarios]
    report: dict[str, Any] = {
        "benchmark": "fidelity", **stamp(), "cpus": len(os.sched_getaffinity(0)),
        "target_within": TARGET, "real_runs_each": real_runs,
        "rows": [one_scenario(s, repeats, real_runs,
                              out_file.with_name(f"{out_file.stem}.{s.name}.costs.json"),
                              console) for s in loaded]}
    report["target_holds"] = all(r["within_target"] for r in report["rows"])
    save_report(report, out_file)
    print_report(report, console)
    console.print(f"written to {out_file} (component costs: beside it, one file per scenario)")
    return report


def print_report(report: dict[str, Any], console: Console) -> None:
    ms = 1e3
    rows = [(r["scenario"], f"{r['predicted_median'] * ms:.1f}",
             f"{r['measured_median'] * ms:.1f} ({r['measured_spread'][0] * ms:.1f}–"
             f"{r['measured_spread'][1] * ms:.1f})", f"{r['ratio']:.3f}",
             "yes" if r["within_target"] else "no", f"{r['ratio_as_given']:.3f}",
             f"{r['fitted_calibration']['ratio']:.3f}") for r in report["rows"]]
    console.print(results_table(
        "median round latency: simulator with measured components vs real (emulated links)",
        ("scenario", "predicted ms", "real ms (spread)", "pred/real", "within 20%",
         "as given/real", "fitted/real"), rows))
