"""What happened to a run and when, on its round axis: faults (partitions, crashes, slow or
degraded nodes), their heals, membership changes and Byzantine attacks, for run.png.

Faults come from what the run recorded (the `fault`/`heal` rows of events.parquet: timeline
faults and the nemesis's alike, at the simulated time they struck), attacks from the
scenario's `byzantine:` entries (by round). Rounds are indexed by round and faults by time, so
a time is mapped onto the round axis through each round's first commit: round r's bar spans
r - 0.5 .. r + 0.5 and ends when r is first committed.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from phalanx.apps.results import round_latencies
from phalanx.scenario.schema import Scenario

ToRound = Callable[[float], float]  # simulated seconds -> position on the round axis


@dataclass(frozen=True)
class Span:
    """One fault or attack on the round axis; `end` None marks a moment (a join, a leave)."""

    kind: str  # the fault's kind (partition, crash, ...), or "byzantine"
    label: str  # what and who, e.g. "partition 0-6 | 7-9"
    start: float  # in rounds (fractional: a time between two commits)
    end: float | None
    healed: bool  # False: still in force when the run ended (drawn to the axis' end)
    note: str = ""  # for the legend: "not healed", a heal after the last round


def fault_spans(scenario: Scenario, rounds: pl.DataFrame, events: pl.DataFrame) -> list[Span]:
    """Every recorded fault with its heal, then every Byzantine attack, in start order."""
    first = round_latencies(rounds)
    to_round = _time_to_round(first)
    last = to_round(float("inf"))
    # the round axis ends at the last round's first commit
    last_commit = float(first["first_commit"].max()) if len(first) else 0.0  # type: ignore[arg-type]
    spans = [*_recorded(events, to_round, last, last_commit), *_attacks(scenario, last)]
    return sorted(spans, key=lambda s: (s.start, s.kind, s.label))


def commit_knots(first: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Matching times and round-axis positions, from round_latencies' table `first`: the run
    starts at 0 s before round 0's bar (-0.5), and round r's bar ends (r + 0.5) when r is
    first committed."""
    return (np.concatenate([[0.0], first["first_commit"].to_numpy()]),
            np.concatenate([[-0.5], first["round"].to_numpy() + 0.5]))


def _time_to_round(first: pl.DataFrame) -> ToRound:
    knots_t, knots_x = commit_knots(first)

    def to_round(t: float) -> float:
        return float(np.interp(t, knots_t, knots_x))
    return to_round


def _recorded(events: pl.DataFrame, to_round: ToRound, last: float,
              last_commit: float) -> list[Span]:
    if "event" not in events.columns:  # a real run records no events
        return []
    marks = events.filter(pl.col("event").is_in(["fault", "heal"])).sort("time",
                                                                         maintain_order=True)
    open_: dict[str, deque[float]] = {}  # a fault's label -> start times not yet healed
    spans: list[Span] = []
    for time, event, detail in marks.select("time", "event", "detail").iter_rows():
        fault = json.loads(detail)
        if event == "fault" and fault["kind"] in ("join", "leave"):
            spans.append(Span(fault["kind"], describe(fault), to_round(time), None, True))
        elif event == "fault":
            open_.setdefault(detail, deque()).append(time)
        elif open_.get(detail):  # a heal closes the oldest open fault with its label
            start = open_[detail].popleft()
            note = (f"{_healed(fault)} at {time:.2f} s, after the last round"
                    if time > last_commit else "")
            spans.append(Span(fault["kind"], describe(fault), to_round(start), to_round(time),
                              True, note))
    for detail, starts in open_.items():
        fault = json.loads(detail)
        spans += [Span(fault["kind"], describe(fault), to_round(t), last, False,
                       f"not {_healed(fault)}") for t in starts]
    return spans


def _healed(fault: dict[str, Any]) -> str:
    return "restarted" if fault["kind"] == "crash" else "healed"


def _attacks(scenario: Scenario, last: float) -> list[Span]:
    return [Span("byzantine", f"{b.behaviour} by {_who(b.nodes)} from round {b.from_round}",
                 b.from_round - 0.5, last, False)
            for b in scenario.byzantine if b.from_round - 0.5 < last]


def describe(fault: dict[str, Any]) -> str:
    """A fault's record (events.parquet's `detail`) in a few words: kind and nodes."""
    kind = fault["kind"]
    match kind:
        case "partition" | "bridge":
            groups = fault.get("groups") or fault.get("sides")
            return f"{kind} " + " | ".join(_nodes(g) for g in groups)
        case "one_way":
            return f"one-way {_nodes(fault['source'])} → {_nodes(fault['target'])}"
        case "degrade":
            nodes = fault.get("nodes")
            return f"degrade {'all links' if nodes is None else 'links of ' + _who(nodes)}"
        case "slow":
            return f"slow {_who(fault['nodes'])} ×{fault['factor']:g}"
        case "join" | "leave":  # the request; the change itself follows a committed round
            return f"{_who(fault['nodes'])} asks to {kind}"
        case _:  # crash, isolate
            return f"{kind} {_who(fault['nodes'])}"


def _who(ids: list[int]) -> str:
    return ("node " if len(ids) == 1 else "nodes ") + _nodes(ids)


def _nodes(ids: list[int]) -> str:
    """Node ids as runs: [0, 1, 2, 5] -> "0-2,5"."""
    runs: list[list[int]] = []
    for i in sorted(ids):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
