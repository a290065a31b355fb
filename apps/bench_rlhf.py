"""`phalanx bench rlhf`: the RLHF pipeline of scenarios/rlhf.yaml in the simulator, cell by
cell, every cell a variant of the same scenario run for the same seeds:

- reward model only (collect + reward rounds): honest annotators; 20% inverting annotators
  with reputation on; the same with reputation off — its held-out accuracy against the
  hidden preference;
- the full pipeline with PPO, and with DPO on the same preferences: the policy's true score
  (the hidden preference of its completions) at the start and the end, and its KL to the
  reference;
- f = 2 of 7 Byzantine training peers sending ALIE (Baruch et al. 2019) from round 0, against
  the scenario's robust aggregator and against the mean, beside the attack-free runs.

Every figure is the mean over seeds of the worst honest node's final held-out value."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from phalanx.apps.bench_report import results_table, save_report, stamp
from phalanx.apps.runner import run_scenario
from phalanx.scenario.schema import parse_scenario, read_yaml

Edit = Callable[[dict[str, Any]], None]


def _reward_only(data: dict[str, Any]) -> None:
    w = data["workload"]
    w["policy_rounds"] = 0
    data["training"]["rounds"] = w["collect_rounds"] + w["reward_rounds"]
    # the shipped expectations are the full pipeline's: keep only safety
    data["expect"] = {"honest_hashes_equal": True}


def _crowd(adversarial: float, reputation: bool) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        crowd = data["curation"]["crowd"]
        honest = dict(crowd["groups"][0], share=round(1.0 - adversarial, 6))
        crowd["groups"] = [honest] + ([{"kind": "colluder", "share": adversarial,
                                        "seconds": honest.get("seconds", [0.3, 0.8])}]
                                      if adversarial > 0 else [])
        if not reputation:
            data["curation"]["reputation"] = None
    return edit


def _alie(aggregator: str | None, z: float | None = None) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        attack: dict[str, Any] = {"nodes": [5, 6], "behaviour": "alie"}
        if z is not None:
            attack["params"] = {"z": z}
        data["byzantine"] = [attack]
        if aggregator is not None:
            data["training"]["aggregator"] = {"kind": aggregator}
    return edit


def _aggregator(kind: str) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        data["training"]["aggregator"] = {"kind": kind}
    return edit


def _dpo(data: dict[str, Any]) -> None:
    data["workload"]["method"] = "dpo"


@dataclass(frozen=True)
class Cell:
    name: str
    what: str
    edits: tuple[Edit, ...]


CELLS = (
    Cell("reward_honest", "reward model, honest annotators (reputation on)",
         (_reward_only, _crowd(0.0, True))),
    Cell("reward_adversarial", "reward model, 20% inverting annotators, reputation on",
         (_reward_only, _crowd(0.2, True))),
    Cell("reward_adversarial_no_reputation",
         "reward model, 20% inverting annotators, reputation off",
         (_reward_only, _crowd(0.2, False))),
    Cell("ppo", "PPO, the scenario as shipped", ()),
    Cell("dpo", "DPO on the same preferences", (_dpo,)),
    Cell("ppo_alie", "PPO, ALIE from 2 of 7 peers, the scenario's aggregator", (_alie(None),)),
    Cell("ppo_mean", "PPO, no attack, mean", (_aggregator("mean"),)),
    Cell("ppo_mean_alie", "PPO, ALIE from 2 of 7 peers, mean", (_alie("mean"),)),
    # the paper's z at n = 7, f = 2 is 0.57 (Φ⁻¹(5/7)): the colluders' vector sits within the
    # honest spread, so it moves even the mean little; z = 5 shows what the mean lets through
    Cell("ppo_alie_z5", "PPO, ALIE with z = 5, the scenario's aggregator",
         (_alie(None, 5.0),)),
    Cell("ppo_mean_alie_z5", "PPO, ALIE with z = 5, mean", (_alie("mean", 5.0),)),
)


def _final(summary: dict[str, Any], name: str) -> float | None:
    held = summary.get("rlhf", {}).get("held_out", {}).get(name)
    return None if held is None else float(held["last"])


def _first(summary: dict[str, Any], name: str) -> float | None:
    held = summary.get("rlhf", {}).get("held_out", {}).get(name)
    return None if held is None else float(held["first"])


def run_cell(scenario: Path, cell: Cell, seed: int) -> dict[str, Any]:
    data = read_yaml(scenario)
    for edit in cell.edits:
        edit(data)
    start = time.perf_counter()
    result = run_scenario(parse_scenario(data, str(scenario)), seed=seed)
    s = result.summary
    honest_finals = s.get("rlhf", {}).get("final_models", [])
    return {"seed": seed, "wall_seconds": round(time.perf_counter() - start, 2),
            "label_accuracy": s.get("label_accuracy"),
            "reward_accuracy": _final(s, "reward_accuracy"),
            "true_score_first": _first(s, "true_score"),
            "true_score": _final(s, "true_score"), "kl": _final(s, "kl"),
            "distinct_final_hashes": s["distinct_final_hashes"],
            "honest_policy_hashes": len({m["policy_hash"] for m in honest_finals}),
            "failures": result.failures}


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r[key] is not None]
    return statistics.fmean(values) if values else None


def _checks(cells: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets, from the cells that ran."""
    got: dict[str, Any] = {}

    def mean(cell: str, key: str) -> float | None:
        return cells[cell]["mean"].get(key) if cell in cells else None

    for cell in ("reward_honest", "reward_adversarial", "reward_adversarial_no_reputation"):
        got[f"{cell}_accuracy"] = mean(cell, "reward_accuracy")
    first, last = mean("ppo", "true_score_first"), mean("ppo", "true_score")
    if first and last is not None:
        got["ppo_true_score_gain"] = last / first
    if last and mean("dpo", "true_score") is not None:
        got["dpo_over_ppo"] = mean("dpo", "true_score") / last  # type: ignore[operator]
    if last and mean("ppo_alie", "true_score") is not None:
        got["alie_over_clean"] = mean("ppo_alie", "true_score") / last  # type: ignore[operator]
    clean_mean = mean("ppo_mean", "true_score")
    for cell, base in (("ppo_alie_z5", last), ("ppo_mean_alie", clean_mean),
                       ("ppo_mean_alie_z5", clean_mean)):
        if base and mean(cell, "true_score") is not None:
            got[f"{cell}_over_clean"] = mean(cell, "true_score") / base  # type: ignore[operator]
    return got


def run_bench(scenario: Path, seeds: int, names: list[str], out_file: Path,
              console: Console) -> dict[str, Any]:
    chosen = [c for c in CELLS if not names or c.name in names]
    cells: dict[str, dict[str, Any]] = {}
    for cell in chosen:
        rows = []
        for seed in range(seeds):
            console.print(f"[dim]{cell.name} seed {seed}...[/]")
            rows.append(run_cell(scenario, cell, seed))
        keys = ("label_accuracy", "reward_accuracy", "true_score_first", "true_score", "kl",
                "wall_seconds")
        cells[cell.name] = {"what": cell.what, "runs": rows,
                            "mean": {k: _mean(rows, k) for k in keys}}
    report = {**stamp(), "scenario": str(scenario), "seeds": list(range(seeds)),
              "cells": cells, "checks": _checks(cells)}
    save_report(report, out_file)

    def fmt(v: float | None, digits: int = 3) -> str:
        return "-" if v is None else f"{v:.{digits}f}"

    table = results_table(
        f"RLHF ({scenario.name}), mean over {seeds} seed(s)",
        ("cell", "label acc", "RM acc", "true score start", "true score end", "KL",
         "honest policy hashes", "wall s"),
        [(name, fmt(c["mean"]["label_accuracy"]), fmt(c["mean"]["reward_accuracy"]),
          fmt(c["mean"]["true_score_first"]), fmt(c["mean"]["true_score"]),
          fmt(c["mean"]["kl"], 2),
          "/".join(str(r["honest_policy_hashes"]) for r in c["runs"]),
          fmt(c["mean"]["wall_seconds"], 1)) for name, c in cells.items()])
    console.print(table)
    console.print({k: (round(v, 3) if isinstance(v, float) else v)
                   for k, v in report["checks"].items()})
    console.print(f"wrote {out_file}")
    return report
