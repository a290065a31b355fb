"""The PNG of a run: loss (training and held-out), held-out accuracy when the workload has
one, and round latency against the round, with the run's faults, heals and attacks shaded."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: runs write files, never open windows

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from phalanx.apps.fault_spans import Span, commit_knots, fault_spans
from phalanx.apps.results import RunResult, round_latencies, standing

WIDTH, PANEL_HEIGHT, DPI = 9.0, 2.3, 100  # inches: about 900 px wide, fits a README
BAR_ROUNDS = 150  # up to this many rounds, one latency bar per round; beyond, a line
MEDIAN_BINS = 60  # beyond BAR_ROUNDS the latency's running median is taken over this many bins
LOG_SPREAD = 20.0  # a panel goes to a log scale when its values span more than this ratio
LEGEND_ENTRIES = 6  # more spans than this are listed per kind, with a count
COLOURS = {"partition": "tab:red", "isolate": "tab:red", "one_way": "tab:pink",
           "bridge": "tab:pink", "crash": "tab:purple", "slow": "tab:brown",
           "degrade": "tab:olive", "byzantine": "tab:orange", "join": "tab:green",
           "leave": "tab:gray"}
# tick labels as plain numbers ("2.5", "0.01"), never "2.5×10⁰"
PLAIN = FuncFormatter(lambda v, _: f"{v:g}")


def plot_run(result: RunResult, path: Path) -> list[Span]:
    """Write run.png to `path`; return the fault and attack spans it shaded."""
    fig, spans = run_figure(result)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return spans


def run_figure(result: RunResult) -> tuple[Figure, list[Span]]:
    """The figure of a run (its panels share the round axis) and the spans shaded on it."""
    rounds, scenario = result.rounds, result.scenario
    honest = standing(rounds)
    has_accuracy = ("eval_accuracy" in rounds.columns
                    and rounds["eval_accuracy"].drop_nulls().len() > 0)
    panels = 3 if has_accuracy else 2
    fig, axes = plt.subplots(panels, 1, sharex=True, figsize=(WIDTH, PANEL_HEIGHT * panels + 1.0))
    ax_loss, ax_lat = axes[0], axes[-1]
    _loss(ax_loss, honest)
    if has_accuracy:
        _per_round(axes[1], honest, "eval_accuracy", "held-out accuracy", marker="o")
        axes[1].set(ylabel="accuracy", ylim=(0, 1.02))
    _latency(ax_lat, rounds)
    ax_lat.set_xlabel("round")
    ax_lat.xaxis.set_major_locator(MaxNLocator(integer=True))
    spans = fault_spans(scenario, rounds, result.events)
    marks = _shade(axes, spans)
    _time_axis(ax_loss, rounds, "simulated seconds" if result.summary.get("mode") == "sim"
               else "seconds")
    ax_loss.set_title(f"{scenario.name}: {scenario.nodes.count} nodes, seed {scenario.seed}",
                      loc="left")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    if marks:
        handles, labels = zip(*marks, strict=True)
        fig.legend(handles, labels, loc="lower center", ncols=min(3, len(marks)),
                   fontsize="small", frameon=False)
    fig.tight_layout(rect=(0, 0.06 if marks else 0, 1, 1))
    return fig, spans


def _per_round(ax: Axes, rows: pl.DataFrame, col: str, label: str, **style: object) -> None:
    """The mean over the nodes of `col` at each round that has it."""
    per = (rows.filter(pl.col(col).is_not_null()).group_by("round").agg(pl.col(col).mean())
           .sort("round"))
    if len(per):
        ax.plot(per["round"], per[col], label=label, markersize=3, **style)


def _loss(ax: Axes, honest: pl.DataFrame) -> None:
    _per_round(ax, honest, "train_loss", "training loss (honest mean)", alpha=0.7)
    if "eval_loss" in honest.columns:
        _per_round(ax, honest, "eval_loss", "held-out loss", marker="o")
    ax.set_ylabel("loss")
    losses = honest.select("train_loss", *(["eval_loss"] if "eval_loss" in honest.columns
                                           else [])).to_numpy().ravel()
    _scale(ax, losses)


def _latency(ax: Axes, rounds: pl.DataFrame) -> None:
    lat = round_latencies(rounds)
    x, y = lat["round"].to_numpy(), lat["latency"].to_numpy()
    if len(x) <= BAR_ROUNDS:
        ax.bar(x, y, width=0.8, color="tab:blue", alpha=0.6, label="round latency")
    else:
        ax.plot(x, y, color="tab:blue", alpha=0.35, linewidth=0.6, label="round latency")
        edges = np.linspace(x.min(), x.max() + 1, MEDIAN_BINS + 1)
        idx = np.digitize(x, edges) - 1
        centres = [(edges[i] + edges[i + 1]) / 2 for i in range(MEDIAN_BINS) if (idx == i).any()]
        medians = [np.median(y[idx == i]) for i in range(MEDIAN_BINS) if (idx == i).any()]
        ax.plot(centres, medians, color="tab:blue", linewidth=1.8,
                label=f"median of every {len(x) / MEDIAN_BINS:.0f} rounds")
    if len(y):
        ax.axhline(float(np.median(y)), color="black", linestyle=":", linewidth=1,
                   label=f"median {np.median(y):.3g} s")
    ax.set_ylabel("seconds per round")
    _scale(ax, y)
    if ax.get_yscale() == "linear":
        # from zero: zoomed in, a millisecond's jitter would look like a trend
        ax.set_ylim(0, 1.15 * float(y.max()) if len(y) else None)


def _scale(ax: Axes, values: np.ndarray) -> None:
    """Log scale for values over orders of magnitude (a loss that falls, a stalled round
    beside quick ones); plain tick labels either way."""
    v = values[np.isfinite(values) & (values > 0)] if len(values) else values
    if len(v) and v.max() / v.min() > LOG_SPREAD:
        ax.set_yscale("log")
    ax.yaxis.set_major_formatter(PLAIN)
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def _shade(axes: Sequence[Axes], spans: list[Span]) -> list[tuple[Artist, str]]:
    """Each span on every panel; the legend's (handle, text) pairs, one per span or, when
    there are many, one per kind."""
    per_kind: dict[str, list[Span]] = {}
    for span in spans:
        per_kind.setdefault(span.kind, []).append(span)
        colour = COLOURS.get(span.kind, "tab:gray")
        for ax in axes:
            if span.end is None:
                ax.axvline(span.start, color=colour, linewidth=1.5)
            elif span.kind == "byzantine":
                ax.axvspan(span.start, span.end, facecolor="none", edgecolor=colour,
                           hatch="//", alpha=0.25, linewidth=0)
            else:
                ax.axvspan(span.start, span.end, color=colour, alpha=0.15, linewidth=0)
            if _heal_shown(span):
                ax.axvline(span.end, color=colour, linestyle="--", linewidth=1)
    if len(spans) <= LEGEND_ENTRIES:
        marks = [(_handle(s.kind, s.end is None), _legend_text(s)) for s in spans]
    else:
        marks = [(_handle(kind, group[0].end is None), f"{kind} ×{len(group)}")
                 for kind, group in per_kind.items()]
    healed = {s.kind for s in spans if _heal_shown(s)}
    if healed:
        marks.append((Line2D([], [], color="black", linestyle="--", linewidth=1),
                      "heal" + (" / restart" if "crash" in healed else "")))
    return marks


def _heal_shown(span: Span) -> bool:
    """A heal within the rounds is drawn as a dashed line; one after them only in the legend."""
    return span.healed and span.end is not None and not span.note


def _handle(kind: str, moment: bool) -> Artist:
    colour = COLOURS.get(kind, "tab:gray")
    if moment:
        return Line2D([], [], color=colour, linewidth=1.5)
    if kind == "byzantine":
        return Patch(facecolor="none", edgecolor=colour, hatch="//")
    return Patch(color=colour, alpha=0.3)


def _legend_text(span: Span) -> str:
    text = f"Byzantine: {span.label}" if span.kind == "byzantine" else span.label
    return f"{text} ({span.note})" if span.note else text


def _time_axis(ax: Axes, rounds: pl.DataFrame, label: str) -> None:
    """Seconds on the top edge: round r ends at its first commit."""
    first = round_latencies(rounds)
    if len(first) < 2:
        return
    t, x = commit_knots(first)
    # beyond the last round at the median pace, so ticks past the end fall off the axis
    pace = float(np.median(np.diff(t)))
    t, x = np.append(t, t[-1] + 1e6 * pace), np.append(x, x[-1] + 1e6)
    top = ax.secondary_xaxis("top", functions=(lambda r: np.interp(r, x, t),
                                               lambda s: np.interp(s, t, x)))
    # time runs unevenly along the rounds (a stalled round takes seconds): keep the ticks
    # that land apart on the round axis
    ticks, gap, kept = MaxNLocator(8).tick_values(0.0, float(t[-2])), (x[-2] - x[0]) / 12, []
    for tick in ticks[(ticks >= 0) & (ticks <= t[-2])]:
        if not kept or np.interp(tick, t, x) - np.interp(kept[-1], t, x) >= gap:
            kept.append(tick)
    top.set_xticks(kept)
    top.set_xlabel(label)
    top.xaxis.set_major_formatter(PLAIN)
