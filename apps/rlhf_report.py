"""What an RLHF run reports beside the usual outputs: the stages, the lineage of the final
models, the reward model's and the policy's figures (summary.json's `rlhf`), and rlhf.png,
the curves of reward, KL and true score per round with the stages marked.

Both read only the rounds table, the committed models it names and the preference sets the
honest nodes took (from their RLHF service, or a real node's result.json), so a simulated run
and a `--real` run report alike."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from phalanx.apps.results import standing
from phalanx.engine.workloads import Workload
from phalanx.net.crypto import sha256

# (column, label) per panel: what the reward model and the policy reached, held out
PANELS = (
    (("eval_reward_accuracy", "reward model: held-out accuracy"),),
    (("eval_true_score", "true score (hidden preference)"),
     ("eval_reward", "reward-model score")),
    (("eval_kl", "KL to the reference (per sequence)"),),
)


def is_staged(workload: Workload) -> bool:
    return bool(workload.parameter_groups())


def stage_spans(workload: Workload, rounds: int) -> list[tuple[str, int, int]]:
    """(stage, first round, last round) in order."""
    spans: list[tuple[str, int, int]] = []
    for r in range(rounds):
        name = workload.stage(r)
        if spans and spans[-1][0] == name:
            spans[-1] = (name, spans[-1][1], r)
        else:
            spans.append((name, r, r))
    return spans


def group_hashes(workload: Workload, params: np.ndarray) -> dict[str, str]:
    """SHA-256 of each parameter group's slice (the reward model's, the policy's)."""
    return {f"{g.name}_hash": sha256(params[g.start:g.stop].tobytes()).hex()
            for g in workload.parameter_groups()}


def rlhf_summary(workload: Workload, rounds: pl.DataFrame, params: dict[str, np.ndarray],
                 total_rounds: int, preferences: Iterable[Mapping[str, Any]] = ()
                 ) -> dict[str, Any]:
    """summary.json's `rlhf`: stages, each evaluated figure at its first and last evaluation,
    the preference sets the honest nodes trained on (`PreferenceSet.identity()`, one when
    they agree) and the hashes of their final models (one of each when they agree)."""
    honest = standing(rounds).sort("round", "order")
    report: dict[str, Any] = {"stages": [{"stage": s, "first_round": a, "last_round": b}
                                         for s, a, b in stage_spans(workload, total_rounds)]}
    for col in sorted(c for c in honest.columns if c.startswith(("eval_", "metric_"))):
        values = honest.filter(pl.col(col).is_not_null()).group_by(
            "round", maintain_order=True).agg(pl.col(col).mean())
        if len(values):
            name = col.removeprefix("eval_").removeprefix("metric_")
            kind = "held_out" if col.startswith("eval_") else "train"
            report.setdefault(kind, {})[name] = {
                "first": values[col][0], "last": values[col][-1],
                "first_round": values["round"][0], "last_round": values["round"][-1]}
    distinct = {json.dumps(dict(p), sort_keys=True) for p in preferences}
    report["preferences"] = [json.loads(p) for p in sorted(distinct)]
    last = honest.group_by("node", maintain_order=True).last()
    finals = {h for h in last["model_hash"].to_list() if h in params}
    report["final_models"] = [group_hashes(workload, params[h]) for h in sorted(finals)]
    return report


def plot_rlhf(workload: Workload, rounds: pl.DataFrame, total_rounds: int, title: str,
              path: Path) -> None:
    """rlhf.png: the held-out curves per round, each stage shaded and named."""
    import matplotlib

    matplotlib.use("Agg")  # headless: runs write files, never open windows
    import matplotlib.pyplot as plt

    honest = standing(rounds)
    fig, axes = plt.subplots(len(PANELS), 1, sharex=True, figsize=(9.0, 2.3 * len(PANELS) + 1))
    for ax, panel in zip(axes, PANELS, strict=True):
        for col, label in panel:
            if col not in honest.columns:
                continue
            per = honest.filter(pl.col(col).is_not_null()).group_by("round").agg(
                pl.col(col).mean()).sort("round")
            if len(per):
                ax.plot(per["round"].to_numpy(), per[col].to_numpy(), marker=".", label=label)
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(loc="best", fontsize="small")
    shades = ("#f0f0f0", "#e3eefa", "#fcefe3", "#e8f5e9")
    for i, (stage, first, last) in enumerate(stage_spans(workload, total_rounds)):
        for ax in axes:
            ax.axvspan(first - 0.5, last + 0.5, color=shades[i % len(shades)], zorder=0)
        axes[0].text((first + last) / 2, 1.01, stage, transform=axes[0].get_xaxis_transform(),
                     ha="center", va="bottom", fontsize="small")
    axes[-1].set_xlabel("round")
    axes[0].set_title(title, loc="left", pad=16)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def staged_outputs(workload: Workload, rounds: pl.DataFrame, params: dict[str, np.ndarray],
                   total_rounds: int, title: str,
                   preferences: Iterable[Mapping[str, Any]] = ()
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """For a staged workload (an RLHF run): summary entries ({"rlhf": ...}) and the extra
    figures ({"rlhf.png": writer}); both empty for any other workload. `preferences`: the
    honest nodes' preference sets, as `PreferenceSet.identity()` gives them."""
    if not is_staged(workload):
        return {}, {}
    summary = {"rlhf": rlhf_summary(workload, rounds, params, total_rounds, preferences)}
    return summary, {"rlhf.png": lambda path: plot_rlhf(workload, rounds, total_rounds,
                                                        title, path)}
