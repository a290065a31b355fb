"""`phalanx bench real`: the loopback cluster's rounds per second and bytes per round beside
the simulator's prediction for the same scenario, with the scenario as given and calibrated.

One real run of the scenario (its nodes as processes over TCP on its `real.host`) gives the
measured figures: the mean time between a node's consecutive commits (rounds per second is its
inverse; start-up is left out) and the frame bytes the honest nodes sent per round, counted as
the simulator counts them, plus the transport's bytes on the wire (record headers, heartbeats
and handshakes as well). The simulator then runs the same scenario twice: as given, and
calibrated (`apps/calibrate.py`, measured on this machine just before from a separate real run,
so the comparison is out of sample). The target: the calibrated simulator's round latency
within 10% of the real one. Frame bytes differ by design by a few bytes a frame: a real node's
sequence numbers come from the wall clock and encode longer than the simulator's.

The load average is recorded around each real run: on a shared machine another tenant's CPU or
disk load slows the real nodes and not the simulator, and no calibration can follow that.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rich.console import Console

from phalanx.apps.bench_report import results_table, save_report, stamp
from phalanx.apps.calibrate import (
    calibrate,
    frame_bytes_per_round,
    measure_real_run,
    round_seconds,
    with_rounds,
)
from phalanx.apps.runner import run_scenario
from phalanx.scenario.schema import Scenario, load_scenario

TARGET = 0.10  # the calibrated simulator's round latency within 10% of the real one


def sim_figures(scenario: Scenario) -> dict[str, Any]:
    result = run_scenario(scenario)
    period = round_seconds(result)
    return {"round_seconds": period["mean"], "round_seconds_median": period["median"],
            "bytes_per_round": frame_bytes_per_round(result),
            "rounds_committed": result.summary["min_rounds_committed"]}


def compare(sim: dict[str, Any], real: dict[str, Any]) -> dict[str, Any]:
    latency = sim["round_seconds"] / real["round_seconds"]
    return {"round_latency": latency, "bytes_per_round": sim["bytes_per_round"]
            / real["bytes_per_round"], "round_latency_within_target": abs(latency - 1) <= TARGET}


def run_bench(scenario_path: Path | str, rounds: int, out_file: Path, console: Console,
              calibrated: bool = True, calibration_file: Path | None = None) -> dict[str, Any]:
    """Measure the real cluster and the simulator's prediction of it; with `calibrated`, first
    calibrate the scenario on this machine (written to `calibration_file`, by default beside
    `out_file`) and compare its prediction too. Writes the JSON report to `out_file`."""
    scenario = with_rounds(load_scenario(scenario_path), rounds)
    variants: dict[str, Scenario] = {"as given": scenario}
    report: dict[str, Any] = {"benchmark": "real", **stamp(), "scenario": scenario.name,
                              "scenario_file": str(scenario_path), "rounds": rounds,
                              "nodes": scenario.nodes.count, "cpus": len(os.sched_getaffinity(0)),
                              "target_round_latency_within": TARGET}
    if calibrated:
        calibration_file = calibration_file or out_file.with_name(
            f"{scenario.name}.calibrated.yaml")
        report["calibration"] = calibrate(scenario, calibration_file, rounds, console=console)
        report["calibration_file"] = str(calibration_file)
        variants["calibrated"] = load_scenario(calibration_file)  # what the file says
    console.print(f"bench real: {scenario.name}, {scenario.nodes.count} nodes on loopback, "
                  f"{rounds} rounds ...")
    real = report["real"] = measure_real_run(scenario)
    report["sim"] = {label: sim_figures(s) for label, s in variants.items()}
    report["ratios"] = {label: compare(sim, real) for label, sim in report["sim"].items()}
    if calibrated:
        report["target_holds"] = report["ratios"]["calibrated"]["round_latency_within_target"]
    save_report(report, out_file)
    print_report(report, console)
    console.print(f"written to {out_file}")
    return report


def print_report(report: dict[str, Any], console: Console) -> None:
    real = report["real"]
    rows = [(label, f"{sim['round_seconds'] * 1e3:.2f}", f"{real['round_seconds'] * 1e3:.2f}",
             f"{r['round_latency']:.3f}", f"{sim['bytes_per_round']:,.0f}",
             f"{real['bytes_per_round']:,.0f}", f"{r['bytes_per_round']:.3f}",
             "yes" if r["round_latency_within_target"] else "no")
            for (label, sim), r in zip(report["sim"].items(), report["ratios"].values(),
                                       strict=True)]
    console.print(results_table(
        f"{report['scenario']}: simulator vs the real {report['nodes']}-node loopback cluster, "
        f"{report['rounds']} rounds",
        ("sim parameters", "sim ms/round", "real ms/round", "sim/real", "sim B/round",
         "real B/round", "sim/real", f"latency within {TARGET:.0%}"), rows))
    console.print(f"real: {real['rounds_per_second']:.1f} rounds/s, "
                  f"{real['bytes_per_round']:,.0f} frame bytes per round "
                  f"({real['wire_bytes_per_round']:,.0f} on the wire with record headers, "
                  f"heartbeats and handshakes); load average {real['load_average_before']:.2f}"
                  f" before, {real['load_average_after']:.2f} after, on {report['cpus']} cores")
    if "target_holds" in report:
        verdict = "[green]holds[/]" if report["target_holds"] else "[red]does not hold[/]"
        console.print(f"target: calibrated round latency within {TARGET:.0%} of the real one: "
                      f"{verdict} (sim/real {report['ratios']['calibrated']['round_latency']:.3f};"
                      f" calibration in {report['calibration_file']})")
