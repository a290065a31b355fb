"""Centered-clipping radius study (issue 17): n = 10, f = 3, Byzantine [1, 4, 7], the mlp of
scenarios/byzantine/n10.yaml, every cell run sequentially in this process; one JSON line per
cell appended to OUT (cells already there are skipped, so the study resumes). Not a test.

    python benchmarks/cc_radius_study.py OUT.jsonl RULE,RULE,... [ATTACK,...] [JSON overrides]

e.g. `... out.jsonl mean,cc_auto,cc_tau10` (IID, all attacks, seeds 5-7, ~1.5 s a cell), or
`... skew.jsonl mean,cc_auto none,sign_flip,ipm100 '{"workload": {"skew": 0.5}}'`.
RULES below names the candidates: cc_auto is the default (median radius), cc_med the same
rule registered as a variant, cc_arc / cc_nf / cc_k4 other ranks of the distances."""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from phalanx.apps.runner import run_scenario
from phalanx.engine.aggregate import AGGREGATORS, CenteredClipping
from phalanx.engine.aggregate._numeric import kth_smallest
from phalanx.scenario.schema import parse_scenario

ROOT = Path(__file__).resolve().parent.parent


def variant(name: str, rank: Callable[[int, int], int]) -> None:
    """Register a centered clipping whose adaptive radius is the rank(n, f)-th distance."""
    @dataclass(frozen=True)
    class V(CenteredClipping):
        def radius(self, dists: list[float], f: int) -> float:
            if isinstance(self.tau, str):
                return kth_smallest(dists, rank(len(dists), f))
            return float(self.tau)
    V.name = name  # type: ignore[misc]
    AGGREGATORS[name] = V


variant("cc_med", lambda n, f: (n + 1) // 2)
variant("cc_arc", lambda n, f: n - (2 * f * (n - f)) // n)
variant("cc_nf", lambda n, f: n - f)
variant("cc_k4", lambda n, f: max(f + 1, n - 2 * f))

ATTACKS = {
    "none": None,
    "sign_flip": ("sign_flip", {}),
    "ipm": ("ipm", {}),
    "ipm100": ("ipm", {"epsilon": 100}),
    "alie": ("alie", {}),
    "gaussian": ("gaussian", {}),
    "scaled": ("scaled", {}),
    "mimic": ("mimic", {}),
    "label_flip": ("label_flip", {}),
}
RULES = {
    "mean": "mean",
    "cc_tau10": {"kind": "centered_clipping", "params": {"tau": 10.0}},
    "cc_arc": "cc_arc",
    "cc_auto": "centered_clipping",
    "cc_auto+nnm": {"kind": "centered_clipping", "pre": ["nnm"]},
    "cc_k4+nnm": {"kind": "cc_k4", "pre": ["nnm"]},
    "cc_med": "cc_med",
    "cc_nf": "cc_nf",
    "cc_k4": "cc_k4",
    "median": "median",
    "trimmed_mean": "trimmed_mean",
    "geometric_median": "geometric_median",
    "median+nnm": {"kind": "median", "pre": ["nnm"]},
    "cc_arc+nnm": {"kind": "cc_arc", "pre": ["nnm"]},
    "cc_tau10+nnm": {"kind": "centered_clipping", "pre": ["nnm"], "params": {"tau": 10.0}},
    "krum_f2": {"kind": "krum", "f": 2},
    "multi_krum_f2": {"kind": "multi_krum", "f": 2},
}
SEEDS = [5, 6, 7]


def main() -> None:
    out = Path(sys.argv[1])
    rules = sys.argv[2].split(",")
    attacks = sys.argv[3].split(",") if len(sys.argv) > 3 else list(ATTACKS)
    extra = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done.add((r["rule"], r["attack"], r["seed"]))
    base = yaml.safe_load((ROOT / "scenarios/byzantine/n10.yaml").read_text())
    for k, v in extra.items():
        base[k] = {**base.get(k, {}), **v}
    for rule in rules:
        for attack in attacks:
            for seed in SEEDS:
                if (rule, attack, seed) in done:
                    continue
                data = json.loads(json.dumps(base))
                data["seed"] = seed
                data["name"] = f"cc-{rule}-{attack}-{seed}"
                data["training"]["aggregator"] = RULES[rule]
                if ATTACKS[attack]:
                    b, p = ATTACKS[attack]
                    data["byzantine"] = [{"nodes": [1, 4, 7], "behaviour": b, "params": p}]
                t = time.time()
                row = {"rule": rule, "attack": attack, "seed": seed}
                try:
                    s = run_scenario(parse_scenario(data, data["name"])).summary
                    row.update(acc=s.get("final_eval_accuracy"), loss=s.get("final_eval_loss"),
                               rounds=s["min_rounds_committed"],
                               hashes=s["distinct_final_hashes"])
                except Exception as err:
                    row.update(error=f"{type(err).__name__}: {err}")
                row["secs"] = round(time.time() - t, 2)
                with out.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(row, flush=True)


if __name__ == "__main__":
    main()
