"""`phalanx bench crowd`: label aggregation on a simulated crowd against its hidden truth.

For each seed, one crowd (200 tasks, 3 classes, 15 annotators: 8 honest of accuracy
0.6–0.9, 2 random clickers, 1 constant answerer, 2 permuting adversaries, 2 colluders) is
labelled at 3, 5 and 15 labels per task. Reported per level, as the mean over seeds: each
method's accuracy, single annotators' error (mean over all annotators, and the median honest
one), Krippendorff's alpha (nominal) over all annotators, over the honest ones and on the
tasks the high-quality rule marks. With ``--crowdkit-python`` the same labels go, as JSON, to
crowd-kit's aggregators in that interpreter (a scratch venv: crowd-kit is not a dependency).
"""

from __future__ import annotations

import json
import statistics
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from phalanx.apps.bench_report import results_table, save_report, stamp
from phalanx.engine.curation.agreement import AgreementError, krippendorff_alpha
from phalanx.engine.curation.crowd import CrowdSpec, SimulatedCrowd
from phalanx.engine.curation.labels import (
    GLAD,
    Aggregator,
    Annotations,
    DawidSkene,
    MajorityVote,
    OneCoinDawidSkene,
)

LEVELS = (3, 5, 15)
METHODS: dict[str, type[Aggregator]] = {
    "majority_vote": MajorityVote, "dawid_skene": DawidSkene,
    "one_coin_dawid_skene": OneCoinDawidSkene, "glad": GLAD}
HQ_POSTERIOR = 0.95
HQ_MIN_LABELS = 3
TRUSTED_SKILL = 0.7
HQ_RULE = (f"a task is high-quality when its Dawid-Skene posterior for the chosen label is "
           f">= {HQ_POSTERIOR} and it has >= {HQ_MIN_LABELS} labels; trusted annotators are those "
           f"whose Dawid-Skene expected accuracy is >= {TRUSTED_SKILL}")
MUST_REDUCE = 0.4
SHORT = {"majority_vote": "MV", "dawid_skene": "DS", "one_coin_dawid_skene": "1-coin",
         "glad": "GLAD"}

CROWDKIT_SCRIPT = """
import json, sys
import pandas as pd
from crowdkit.aggregation import GLAD, DawidSkene, MajorityVote, OneCoinDawidSkene
from crowdkit.metrics.data import alpha_krippendorff
out = {}
for run in json.load(sys.stdin):
    df = pd.DataFrame(run["records"], columns=["task", "worker", "label"])
    methods = {"majority_vote": MajorityVote(), "dawid_skene": DawidSkene(n_iter=100, tol=1e-5),
               "one_coin_dawid_skene": OneCoinDawidSkene(n_iter=100, tol=1e-5),
               "glad": GLAD(n_iter=100, tol=1e-5)}
    res = {name: {str(t): int(l) for t, l in m.fit_predict(df).items()}
           for name, m in methods.items()}
    res["alpha_all"] = float(alpha_krippendorff(df))
    out[run["key"]] = res
json.dump(out, sys.stdout)
"""


class BenchError(RuntimeError):
    """The comparison with crowd-kit could not run; one line saying why."""


def accuracy(labels: dict[Any, Any], truth: dict[str, int]) -> float:
    return float(np.mean([labels[t] == truth[t] for t in truth]))


def annotator_errors(data: Annotations, truth: dict[str, int]) -> dict[str, float]:
    """Each annotator's share of wrong labels in this run."""
    true = np.array([truth[str(t)] for t in data.tasks])[data.task]
    wrong = np.bincount(data.worker, weights=(data.label != true).astype(float),
                        minlength=len(data.workers))
    return dict(zip(map(str, data.workers), (wrong / np.bincount(data.worker)).tolist(),
                    strict=True))


def alpha_or_none(data: Annotations) -> float | None:
    try:
        return krippendorff_alpha(data)
    except AgreementError:
        return None


def run_level(crowd: SimulatedCrowd, data: Annotations) -> dict[str, Any]:
    fitted = {name: cls().fit(data) for name, cls in METHODS.items()}
    errors = annotator_errors(data, crowd.truth)
    honest_ids = {a.id for a in crowd.annotators if a.honest}
    ds = fitted["dawid_skene"]
    confident = ds.probas_.matrix.max(axis=1) >= HQ_POSTERIOR
    hq_tasks = confident & (data.labels_per_task() >= HQ_MIN_LABELS)
    trusted = np.array([ds.skills_[w] >= TRUSTED_SKILL for w in data.workers])
    honest = np.array([w in honest_ids for w in data.workers])
    hq_rows = hq_tasks[data.task]
    hq_labels = {t: ds.labels_[t] for t, keep in zip(data.tasks, hq_tasks, strict=True) if keep}
    return {
        "labels_per_task": int(data.labels_per_task().max()), "annotations": len(data),
        "accuracy": {name: accuracy(m.labels_, crowd.truth) for name, m in fitted.items()},
        "single_annotator_error": {
            "mean": statistics.fmean(errors.values()),
            "median_honest": statistics.median(e for w, e in errors.items() if w in honest_ids),
            "by_annotator": errors},
        "alpha": {"all": alpha_or_none(data), "honest": alpha_or_none(data.subset(honest[data.worker])),
                  "high_quality_all": alpha_or_none(data.subset(hq_rows)),
                  "high_quality_trusted": alpha_or_none(data.subset(hq_rows & trusted[data.worker]))},
        "high_quality": {"tasks": int(hq_tasks.sum()),
                         "accuracy": accuracy(hq_labels, {t: crowd.truth[t] for t in hq_labels})
                         if hq_labels else None},
    }


def run_crowdkit(python: Path, records: dict[str, list[Any]]) -> dict[str, dict[str, Any]]:
    """crowd-kit's labels and alpha for each run's records, computed in the interpreter
    ``python``."""
    payload = json.dumps([{"key": key, "records": rows} for key, rows in records.items()])
    try:
        done = subprocess.run([str(python), "-c", CROWDKIT_SCRIPT], input=payload,
                              capture_output=True, text=True, timeout=1800, check=False)
    except OSError as e:
        raise BenchError(f"--crowdkit-python {python}: cannot run it ({e.strerror or e})") from None
    except subprocess.TimeoutExpired:
        raise BenchError(f"--crowdkit-python {python}: crowd-kit took over 30 minutes") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no error output"])[-1]
        raise BenchError(f"--crowdkit-python {python}: crowd-kit failed: {last}")
    return json.loads(done.stdout)


def mean_over(runs: list[dict[str, Any]], *path: str) -> float | None:
    values = []
    for run in runs:
        value: Any = run
        for key in path:
            value = value[key]
        if value is not None:
            values.append(value)
    return statistics.fmean(values) if values else None


def summarize(runs: list[dict[str, Any]], compared: bool) -> list[dict[str, Any]]:
    """Means over seeds per level, with the must-show checks."""
    levels = []
    for level in LEVELS:
        at = [r for r in runs if r["labels_per_task"] == level]
        row: dict[str, Any] = {"labels_per_task": level, "seeds": len(at)}
        row["accuracy"] = {m: mean_over(at, "accuracy", m) for m in METHODS}
        if compared:
            row["crowdkit_accuracy"] = {m: mean_over(at, "crowdkit", "accuracy", m)
                                        for m in METHODS}
            row["crowdkit_alpha_all"] = mean_over(at, "crowdkit", "alpha_all")
        row["single_annotator_error"] = {k: mean_over(at, "single_annotator_error", k)
                                         for k in ("mean", "median_honest")}
        row["alpha"] = {k: mean_over(at, "alpha", k) for k in at[0]["alpha"]}
        row["high_quality_tasks"] = mean_over(at, "high_quality", "tasks")
        row["high_quality_accuracy"] = mean_over(at, "high_quality", "accuracy")
        row["dawid_skene_beats_majority_vote_in_seeds"] = sum(
            r["accuracy"]["dawid_skene"] > r["accuracy"]["majority_vote"] for r in at)
        ds_error = 1.0 - row["accuracy"]["dawid_skene"]
        row["dawid_skene_error_reduction"] = {
            f"vs_{k}": 1.0 - ds_error / v for k, v in row["single_annotator_error"].items()}
        levels.append(row)
    return levels


def verdicts(levels: list[dict[str, Any]]) -> dict[str, Any]:
    five = next(r for r in levels if r["labels_per_task"] == 5)
    hq = [r["alpha"]["high_quality_all"] for r in levels]
    hq_trusted = [r["alpha"]["high_quality_trusted"] for r in levels]
    return {
        "dawid_skene_beats_majority_vote_at_each_level": all(
            r["dawid_skene_beats_majority_vote_in_seeds"] == r["seeds"] for r in levels),
        "error_reduction_at_5_vs_mean_single_annotator_at_least_40pct":
            five["dawid_skene_error_reduction"]["vs_mean"] >= MUST_REDUCE,
        "error_reduction_at_5_vs_median_honest_annotator_at_least_40pct":
            five["dawid_skene_error_reduction"]["vs_median_honest"] >= MUST_REDUCE,
        "alpha_above_0.8_on_high_quality_tasks_all_annotators": all(
            a is not None and a > 0.8 for a in hq),
        "alpha_above_0.8_on_high_quality_tasks_trusted_annotators": all(
            a is not None and a > 0.8 for a in hq_trusted),
    }


def run_bench(seeds: int, out_file: Path, console: Console,
              crowdkit_python: Path | None = None) -> dict[str, Any]:
    if crowdkit_python is not None and not crowdkit_python.is_file():
        raise BenchError(f"--crowdkit-python {crowdkit_python}: no such file")
    runs, records, truths = [], {}, {}
    for seed in range(seeds):
        crowd = SimulatedCrowd(CrowdSpec(seed=seed))
        truths[seed] = crowd.truth
        for level in LEVELS:
            console.print(f"bench crowd: seed {seed}, {level} labels per task ...")
            data = crowd.annotations(level)
            runs.append({"seed": seed, "key": f"{seed}/{level}", **run_level(crowd, data)})
            records[runs[-1]["key"]] = data.records()
    if crowdkit_python is not None:
        console.print(f"bench crowd: crowd-kit in {crowdkit_python} on the same labels ...")
        theirs = run_crowdkit(crowdkit_python, records)
        for run in runs:
            got = theirs[run["key"]]
            run["crowdkit"] = {"accuracy": {m: accuracy(got[m], truths[run["seed"]])
                                            for m in METHODS},
                               "alpha_all": got["alpha_all"]}
    levels = summarize(runs, crowdkit_python is not None)
    report = {"benchmark": "crowd", **stamp(),
              "crowd": {"seeds": list(range(seeds)), **vars(CrowdSpec())} | {"seed": "per run"},
              "high_quality_rule": HQ_RULE,
              "crowdkit": str(crowdkit_python) if crowdkit_python else
              "not compared (no --crowdkit-python given)",
              "levels": levels, "verdicts": verdicts(levels), "runs": runs}
    save_report(report, out_file)
    print_summary(report, console)
    return report


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def print_summary(report: dict[str, Any], console: Console) -> None:
    levels = report["levels"]
    compared = "crowdkit_accuracy" in levels[0]
    columns = ("labels/task", *(f"{SHORT[m]} %" for m in METHODS),
               *(("crowd-kit MV %", "crowd-kit DS %") if compared else ()),
               "1 annotator err %: mean / median honest", "DS err cut % vs each")
    rows = [(str(r["labels_per_task"]), *(_pct(r["accuracy"][m]) for m in METHODS),
             *((_pct(r["crowdkit_accuracy"]["majority_vote"]),
                _pct(r["crowdkit_accuracy"]["dawid_skene"])) if compared else ()),
             f"{_pct(r['single_annotator_error']['mean'])} / "
             f"{_pct(r['single_annotator_error']['median_honest'])}",
             f"{_pct(r['dawid_skene_error_reduction']['vs_mean'])} / "
             f"{_pct(r['dawid_skene_error_reduction']['vs_median_honest'])}") for r in levels]
    console.print(results_table(f"accuracy vs hidden truth, mean of {len(report['crowd']['seeds'])}"
                                " seeds", columns, rows))
    console.print(results_table(
        "Krippendorff's alpha (nominal)",
        ("labels/task", "all", "honest", "HQ tasks, all", "HQ tasks, trusted", "HQ tasks",
         "HQ accuracy %"),
        [(str(r["labels_per_task"]), *(_num(r["alpha"][k]) for k in
                                       ("all", "honest", "high_quality_all", "high_quality_trusted")),
          f"{r['high_quality_tasks']:.1f}", _pct(r["high_quality_accuracy"])) for r in levels]))
    console.print(f"high-quality rule: {report['high_quality_rule']}")
    if not compared:
        console.print("crowd-kit: not compared (pass --crowdkit-python PATH to compare)")
    for name, ok in report["verdicts"].items():
        console.print(f"{name}: {'yes' if ok else 'NO'}")
