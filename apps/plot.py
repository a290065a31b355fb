"""The PNG of a run: held-out (or training) loss and round latency against the round."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: runs write files, never open windows

import matplotlib.pyplot as plt
import polars as pl


def plot_run(rounds: pl.DataFrame, path: Path, title: str) -> None:
    from phalanx.apps.results import round_latencies

    fig, (ax_loss, ax_lat) = plt.subplots(1, 2, figsize=(10, 3.8))
    loss_col = "eval_loss" if "eval_loss" in rounds.columns else "train_loss"
    if len(rounds):
        per_round = (rounds.filter(pl.col(loss_col).is_not_null())
                     .group_by("round").agg(pl.col(loss_col).mean(), pl.col("train_loss").mean())
                     .sort("round"))
        ax_loss.plot(per_round["round"], per_round[loss_col], marker=".", label=loss_col)
        if loss_col != "train_loss":
            ax_loss.plot(per_round["round"], per_round["train_loss"], alpha=0.6,
                         label="train_loss")
        lat = round_latencies(rounds)
        ax_lat.bar(lat["round"], lat["latency"], color="tab:orange")
    ax_loss.set(xlabel="round", ylabel="loss", title=f"{title}: loss")
    ax_loss.set_yscale("log")
    ax_loss.legend()
    ax_lat.set(xlabel="round", ylabel="seconds", title="round latency (first commit)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
