"""Result tables of a run, the `expect:` checks, and the files written to the output folder.

The simulator and the real TCP driver both produce commit rows (one per node and round); this
module turns them into the same `rounds` table, evaluates the held-out metrics once per distinct
model, checks the scenario's expectations and writes Parquet, YAML, JSON and a PNG.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from phalanx.apps.numerics import report as numerics_report
from phalanx.engine.workloads import Workload
from phalanx.scenario.schema import ExpectSpec, Scenario

ROUND_SCHEMA = {
    "round": pl.Int32, "order": pl.Int64, "node": pl.Int32, "time": pl.Float64, "view": pl.Int32,
    "contributors": pl.Int32, "train_loss": pl.Float64, "model_hash": pl.Utf8,
    "via_sync": pl.Boolean, "bytes_sent": pl.Int64, "byzantine": pl.Boolean,
    "ratio": pl.Float64,  # top-k ratio of the node's own gradient when adaptive, else null
}


@dataclass
class RunResult:
    scenario: Scenario
    rounds: pl.DataFrame  # one row per (node, committed round)
    events: pl.DataFrame  # every delivered/dropped message and fault (empty for --real)
    summary: dict[str, Any]
    failures: list[str] = field(default_factory=list)
    out: Path | None = None
    # each node's durable state at the end (what it persisted), written as nodes/<id>.sqlite
    disks: dict[int, dict[str, Any]] = field(default_factory=dict, repr=False)
    # further Parquet outputs by file name (a simulated crowd's labels.parquet, ...)
    tables: dict[str, pl.DataFrame] = field(default_factory=dict, repr=False)
    # further figures by file name, each written by its function (an RLHF run's rlhf.png)
    figures: dict[str, Callable[[Path], None]] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return not self.failures

    def final_hashes(self, honest_only: bool = True) -> dict[int, str]:
        """Each node's model hash after its last committed round."""
        df = standing(self.rounds, honest_only)
        last = df.sort("round", "order").group_by("node", maintain_order=True).last().sort("node")
        return dict(zip(last["node"].to_list(), last["model_hash"].to_list(), strict=True))


def rounds_table(rows: list[dict[str, Any]], workload: Workload, params: dict[str, np.ndarray],
                 eval_every: int, last_round: int) -> pl.DataFrame:
    """Commit rows plus held-out metrics, evaluated once per distinct model hash."""
    # a workload's own figures (GradientResult.metrics) follow the fixed columns, one each
    extra = sorted({k for row in rows for k in row if k.startswith("metric_")})
    schema = {**ROUND_SCHEMA, **dict.fromkeys(extra, pl.Float64)}
    df = pl.DataFrame([{k: row.get(k) for k in schema} for row in rows], schema=schema,
                      orient="row") if rows else pl.DataFrame(schema=ROUND_SCHEMA)
    df = df.sort(["round", "node", "order"])
    cache: dict[str, dict[str, float]] = {}
    evals: list[dict[str, float]] = []
    for rnd, h in zip(df["round"].to_list(), df["model_hash"].to_list(), strict=True):
        if (rnd + 1) % eval_every and rnd != last_round:
            evals.append({})
            continue
        if h not in cache:
            cache[h] = workload.evaluate(params[h])
        evals.append(cache[h])
    keys = sorted({k for e in evals for k in e})
    df = df.with_columns([
        pl.Series(f"eval_{k}", [e.get(k) for e in evals], dtype=pl.Float64) for k in keys])
    # each row's node's training samples per class (a classifier's only; fixed for the run)
    hists = {node: workload.label_histogram(node) for node in df["node"].unique().to_list()}
    if not hists or any(h is None for h in hists.values()):
        return df
    return df.with_columns(pl.Series("label_histogram", [hists[n] for n in df["node"]],
                                     dtype=pl.List(pl.Int64)))


def label_histograms(workload: Workload, nodes: int) -> dict[str, list[int]]:
    """Node id (as a string, a JSON key) -> its training samples per class; empty for a
    workload without class labels."""
    hists = {str(i): workload.label_histogram(i) for i in range(nodes)}
    return {i: h for i, h in hists.items() if h is not None}


def standing(rounds: pl.DataFrame, honest_only: bool = True) -> pl.DataFrame:
    """The commits of honest nodes (of every node with `honest_only=False`). A BFT node never
    undoes a commit, so every commit stands."""
    return rounds.filter(~pl.col("byzantine")) if honest_only else rounds


def round_latencies(rounds: pl.DataFrame) -> pl.DataFrame:
    """Per round: when the first node committed it, and the time since the previous round."""
    first = rounds.group_by("round").agg(pl.col("time").min().alias("first_commit")).sort("round")
    return first.with_columns(
        pl.col("first_commit").diff().fill_null(pl.col("first_commit")).alias("latency"))


def check_expectations(scenario: Scenario, rounds: pl.DataFrame,
                       summary: dict[str, Any]) -> list[str]:
    """The scenario's `expect:` entries this run misses, one line each, in _CHECKS order."""
    exp, honest = scenario.expect, standing(rounds)
    return [failure for check in _CHECKS for failure in check(exp, honest, summary)]


# One per `expect:` entry (or pair of entries): (expectations, honest commits, summary) ->
# the failure lines; an entry left unset yields nothing.
_Check = Callable[[ExpectSpec, pl.DataFrame, dict[str, Any]], Iterator[str]]


def _honest_hashes_equal(exp: ExpectSpec, honest: pl.DataFrame,
                         summary: dict[str, Any]) -> Iterator[str]:
    if not exp.honest_hashes_equal:
        return
    per_round = honest.group_by("round").agg(pl.col("model_hash").n_unique().alias("k"))
    split = per_round.filter(pl.col("k") > 1)["round"].sort().to_list()
    if split:
        yield (f"honest_hashes_equal: honest nodes hold different models after "
               f"rounds {split[:10]}")
    if summary["distinct_final_hashes"] > 1:
        yield (f"honest_hashes_equal: {summary['distinct_final_hashes']} distinct "
               f"model hashes among the honest nodes at the last round")


def _rounds_committed_at_least(exp: ExpectSpec, honest: pl.DataFrame,
                               summary: dict[str, Any]) -> Iterator[str]:
    if exp.rounds_committed_at_least is None:
        return
    got = summary["min_rounds_committed"]
    if got < exp.rounds_committed_at_least:
        yield (f"rounds_committed_at_least: a running honest node committed only "
               f"{got} rounds (< {exp.rounds_committed_at_least})")


def _final_eval(exp: ExpectSpec, honest: pl.DataFrame,
                summary: dict[str, Any]) -> Iterator[str]:
    for key, limit, worse in (("final_loss_below", exp.final_loss_below, "loss"),
                              ("final_accuracy_above", exp.final_accuracy_above, "accuracy")):
        if limit is None:
            continue
        value = summary.get(f"final_eval_{worse}")
        bad = value is None or (value >= limit if worse == "loss" else value <= limit)
        if bad:
            yield (f"{key}: final eval {worse} {value} (wanted "
                   f"{'<' if worse == 'loss' else '>'} {limit})")


def _final_eval_bounds(exp: ExpectSpec, honest: pl.DataFrame,
                       summary: dict[str, Any]) -> Iterator[str]:
    for key, bounds, above in (("final_eval_above", exp.final_eval_above, True),
                               ("final_eval_below", exp.final_eval_below, False)):
        for name, limit in sorted((bounds or {}).items()):
            col = f"eval_{name}"
            if col not in honest.columns:
                yield f"{key}: the run reports no held-out {name[:40]!r}"
                continue
            last = honest.filter(pl.col(col).is_not_null()).sort("round", "order").group_by(
                "node", maintain_order=True).last()
            values = last[col].to_list()
            worst = (min(values) if above else max(values)) if values else None
            if worst is None or (worst <= limit if above else worst >= limit):
                yield (f"{key}: final held-out {name} {worst} at the worst honest node "
                       f"(wanted {'>' if above else '<'} {limit})")


def _excluded(exp: ExpectSpec, honest: pl.DataFrame, summary: dict[str, Any]) -> Iterator[str]:
    if exp.excluded is None:
        return
    got = sorted(int(k) for k, v in summary.get("exclusions", {}).items()
                 if v["by_all_honest"])
    if got != sorted(exp.excluded):
        yield (f"excluded: nodes {got} are excluded by every honest node "
               f"(wanted {sorted(exp.excluded)})")


def _excluded_within_rounds(exp: ExpectSpec, honest: pl.DataFrame,
                            summary: dict[str, Any]) -> Iterator[str]:
    if exp.excluded_within_rounds is None:
        return
    for offender, v in summary.get("exclusions", {}).items():
        if v["rounds_to_exclude"] > exp.excluded_within_rounds:
            yield (f"excluded_within_rounds: node {offender} was excluded "
                   f"{v['rounds_to_exclude']} rounds after the first exclusion "
                   f"(> {exp.excluded_within_rounds})")


def _members_at_end(exp: ExpectSpec, honest: pl.DataFrame,
                    summary: dict[str, Any]) -> Iterator[str]:
    if exp.members_at_end is None:
        return
    want, got = sorted(exp.members_at_end), summary.get("members_at_end")
    if got != [want]:
        yield (f"members_at_end: the running honest nodes end with members "
               f"{got} (wanted {want})")


def _dropped_messages_at_least(exp: ExpectSpec, honest: pl.DataFrame,
                               summary: dict[str, Any]) -> Iterator[str]:
    if exp.dropped_messages_at_least is None:
        return
    dropped = summary.get("messages_dropped", 0)
    if dropped < exp.dropped_messages_at_least:
        yield (f"dropped_messages_at_least: {dropped} dropped "
               f"(< {exp.dropped_messages_at_least})")


def _label_accuracy_above(exp: ExpectSpec, honest: pl.DataFrame,
                          summary: dict[str, Any]) -> Iterator[str]:
    if exp.label_accuracy_above is None:
        return
    got = summary.get("label_accuracy")
    if got is None:
        yield ("label_accuracy_above: no label to score (the scenario needs curation.crowd, "
               "and a committed answer)")
    elif not got > exp.label_accuracy_above:
        yield (f"label_accuracy_above: {got:.4f} of the labelled tasks match their hidden "
               f"truth (not above {exp.label_accuracy_above})")


_CHECKS: tuple[_Check, ...] = (_honest_hashes_equal, _rounds_committed_at_least, _final_eval,
                               _final_eval_bounds,
                               _excluded, _excluded_within_rounds, _members_at_end,
                               _dropped_messages_at_least, _label_accuracy_above)


def summarize(scenario: Scenario, rounds: pl.DataFrame, extra: dict[str, Any],
              down: set[int] | None = None, workload: Workload | None = None) -> dict[str, Any]:
    """Figures of a run. `down` are nodes crashed at the end: they may lag, and
    `min_rounds_committed` looks at the honest nodes still running. With the run's `workload`,
    a classifier's `label_histograms` (each node's training samples per class)."""
    honest = standing(rounds)
    down = down or set()
    honest_ids = sorted(set(range(scenario.nodes.count)) - scenario.byzantine_nodes())
    running = [i for i in honest_ids if i not in down] or honest_ids
    # rounds a node holds the state after: a node that started from a checkpoint committed
    # none of the rounds before it, yet holds their result
    per_node = honest.group_by("node").agg((pl.col("round").max() + 1).alias("committed"))
    committed = dict(zip(per_node["node"].to_list(), per_node["committed"].to_list(),
                         strict=True))
    top = int(honest["round"].max()) if len(honest) else -1  # type: ignore[arg-type]
    final = honest.filter(pl.col("round") == top)
    # a crashed or partitioned node that lags is not a fork: compare the nodes at the top round
    final_hashes = final["model_hash"].unique().sort().to_list()
    summary: dict[str, Any] = {
        "scenario": scenario.name,
        "seed": scenario.seed,
        "nodes": scenario.nodes.count,
        "f": scenario.f,
        "rounds_planned": scenario.training.rounds,
        "min_rounds_committed": min(committed.get(i, 0) for i in running),
        "down_at_end": sorted(down),
        "lagging_nodes": [i for i in honest_ids if committed.get(i, 0) < top + 1],
        "distinct_final_hashes": len(final_hashes),
        "final_model_hash": final_hashes[0] if len(final_hashes) == 1 else None,
        "synced_commits": int(rounds["via_sync"].sum()),
        # when the last honest node committed the last round: the time the progress bar ends
        # on; `sim_seconds` (the simulator's) adds the quiet time the nodes settle before it stops
        "last_commit_seconds": float(final["time"].max()) if len(final)  # type: ignore[arg-type]
        else 0.0,
    }
    if scenario.privacy is not None:  # each node releases at most one gradient per round
        from phalanx.engine.privacy import gaussian_epsilon

        p, releases = scenario.privacy, scenario.training.rounds
        summary["privacy"] = {"epsilon": gaussian_epsilon(p.noise_multiplier, releases,
                                                          p.delta),
                              "delta": p.delta, "clip": p.clip,
                              "noise_multiplier": p.noise_multiplier, "releases": releases}
    for col in ("eval_loss", "eval_accuracy"):
        if col in final.columns and final[col].drop_nulls().len():
            # worst honest node: a divergent minority must not hide behind the majority
            worst = final[col].max() if col == "eval_loss" else final[col].min()
            summary[f"final_{col}"] = float(worst)  # type: ignore[arg-type]
    if workload is not None and (hists := label_histograms(workload, scenario.nodes.count)):
        summary["label_histograms"] = hists
    summary["numerics"] = numerics_report()  # the kernel paths the gradients were computed on
    summary.update(extra)
    return summary


def write_outputs(out: Path, result: RunResult) -> None:
    from phalanx.apps.plot import plot_run

    out.mkdir(parents=True, exist_ok=True)
    (out / "scenario.resolved.yaml").write_text(result.scenario.resolved_yaml())
    result.events.write_parquet(out / "events.parquet")
    result.rounds.write_parquet(out / "rounds.parquet")
    for name, table in result.tables.items():
        table.write_parquet(out / name)
    summary = {**result.summary, "failures": result.failures}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    plot_run(result, out / "run.png")
    for name, write in result.figures.items():
        write(out / name)
    if result.disks:
        from phalanx.apps.node_log import NodeLog

        # every node logs the same gradient frames: the logs share one copy of each
        frames = out / "nodes" / "frames.sqlite"
        for path in (frames, *(out / "nodes" / f"{node}.sqlite" for node in result.disks)):
            for stale in (path, *(path.with_name(path.name + end) for end in ("-wal", "-shm"))):
                stale.unlink(missing_ok=True)
        for node, disk in result.disks.items():
            log = NodeLog(out / "nodes" / f"{node}.sqlite", frames=frames)
            log.write_all(disk)
            log.close()
