"""Colluders and a Byzantine annotation node, over seeds (issue 19, must-show 5): for each
seed, scenarios/curation.yaml as shipped (12 honest annotators, 3 colluders, an annotation
node that drops every record) and the same run without the adversaries
(tests/test_curation_crowd.py's `without_adversaries`), both in this process. Prints one line
per seed: label accuracy with and without them, the difference in points, and the answers
per colluder by which their mean weight stays below the honest median. Not a test.

    python benchmarks/curation_seeds.py [SEEDS]      # default 10: seeds 0..9, ~20 s a seed
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

from phalanx.apps.runner import run_scenario
from phalanx.scenario.schema import parse_scenario

ROOT = Path(__file__).resolve().parent.parent


def without_adversaries(data: dict[str, Any]) -> dict[str, Any]:
    crowd = data["curation"]["crowd"]
    honest = [g for g in crowd["groups"] if g["kind"] == "honest"]
    share = sum(g["share"] for g in honest)
    crowd["annotators"] = round(crowd["annotators"] * share)
    crowd["groups"] = [{**g, "share": g["share"] / share} for g in honest]
    data["curation"]["byzantine"] = []
    return data


def labels(data: dict[str, Any]) -> dict[str, Any]:
    data.pop("expect", None)
    return run_scenario(parse_scenario(data)).summary["labels"]


def main(seeds: int) -> None:
    shipped = yaml.safe_load((ROOT / "scenarios" / "curation.yaml").read_text())
    print("seed  with  without  points  colluders_below_honest_median_after_answers")
    for seed in range(seeds):
        data = {**copy.deepcopy(shipped), "seed": seed}
        attacked = labels(copy.deepcopy(data))
        clean = labels(without_adversaries(data))
        gap = 100 * (attacked["label_accuracy"] - clean["label_accuracy"])
        print(f"{seed:4d}  {attacked['label_accuracy']:.4f}  {clean['label_accuracy']:.4f}  "
              f"{gap:+6.2f}  {attacked['colluders_below_honest_median_after_answers']}",
              flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
