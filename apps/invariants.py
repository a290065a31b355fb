"""Invariant checks over a run's result tables: what must hold for every seed of a scenario.

Pure functions over the `rounds` table (one row per node and committed round) and the `events`
table (crashes and restarts are always recorded), each
returning a list of `Violation`s with a one-line human detail:

- **safety** (strict): for every round, every commit any honest node ever made carries one
  model hash;
- **agreement**: the honest running nodes that ended at the same round hold one final hash;
- **liveness**: unless the scenario is built to stall, every running honest node committed
  every planned round (or the `expect: rounds_committed_at_least` the scenario asks for);
- **nothing_lost**: a node that restarted with its disk does not commit again a round it held
  before the crash (its state was lost);
- **curation**: in a scenario with `curation:`, honest nodes that committed a round hold one
  curation snapshot root after it (read from the summary the runner writes);
- **crash**: the run itself raised (see `crash_violation`).

Honest means not listed under the scenario's `byzantine:` section. The tables may come from a
real `RunResult` or be built by hand (tests): only `round`, `node` and `model_hash` are needed;
`order`, `time` and `byzantine` take neutral defaults when missing.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from phalanx.scenario.schema import (
    BridgeFault,
    CrashFault,
    IsolateFault,
    OneWayFault,
    PartitionFault,
    Scenario,
)

if TYPE_CHECKING:
    from phalanx.apps.results import RunResult

INVARIANTS = ("safety", "agreement", "liveness", "nothing_lost", "curation", "crash")
SHOWN_NODES = 8  # node lists in a detail line are cut after this many
SHOWN_ROUNDS = 10


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken invariant of one seed; `detail` is one line a human can act on."""

    seed: int
    invariant: str
    detail: str


# ---- helpers ---------------------------------------------------------------------------------


def _ids(nodes: Iterable[int], limit: int = SHOWN_NODES) -> str:
    ids = sorted(nodes)
    shown = ", ".join(str(i) for i in ids[:limit])
    return shown + (f", +{len(ids) - limit} more" if len(ids) > limit else "")


def _rounds_text(rounds: list[int]) -> str:
    """`[3..7]` for a run of consecutive rounds, else a (cut) list."""
    if len(rounds) > 1 and rounds[-1] - rounds[0] == len(rounds) - 1:
        return f"[{rounds[0]}..{rounds[-1]}]"
    shown = ", ".join(str(r) for r in rounds[:SHOWN_ROUNDS])
    return f"[{shown}{', ...' if len(rounds) > SHOWN_ROUNDS else ''}]"


def normalize(rounds: pl.DataFrame) -> pl.DataFrame:
    """The columns the checks use, with neutral defaults for those a hand-built table lacks."""
    missing = {"round", "node", "model_hash"} - set(rounds.columns)
    if missing:
        raise ValueError(f"rounds table lacks columns {sorted(missing)}")
    defaults = {
        "order": pl.int_range(pl.len(), dtype=pl.Int64),
        "time": pl.lit(0.0, dtype=pl.Float64),
        "byzantine": pl.lit(False),
    }
    add = [expr.alias(name) for name, expr in defaults.items() if name not in rounds.columns]
    df = rounds.with_columns(add) if add else rounds
    return df.with_columns(pl.col("round").cast(pl.Int64), pl.col("node").cast(pl.Int64))


def honest_rows(rounds: pl.DataFrame, byzantine: Iterable[int] = ()) -> pl.DataFrame:
    """Every commit of an honest node."""
    df = normalize(rounds)
    return df.filter(~pl.col("byzantine") & ~pl.col("node").is_in(sorted(set(byzantine))))


def heights(rounds: pl.DataFrame, byzantine: Iterable[int] = ()) -> dict[int, int]:
    """Distinct rounds each honest node committed and still stands by (nodes with none absent)."""
    df = honest_rows(rounds, byzantine)
    per = df.group_by("node").agg(pl.col("round").n_unique().alias("n"))
    return dict(zip(per["node"].to_list(), per["n"].to_list(), strict=True))


def down_at_end(events: pl.DataFrame | None) -> set[int]:
    """Nodes whose last crash/restart event in the log is a crash."""
    if events is None or not len(events) or "event" not in events.columns:
        return set()
    last: dict[int, str] = {}
    life = events.filter(pl.col("event").is_in(["crash", "restart"])).sort("time",
                                                                           maintain_order=True)
    for node, event in zip(life["src"].to_list(), life["event"].to_list(), strict=True):
        last[node] = event
    return {node for node, event in last.items() if event == "crash"}


# ---- the invariants ----------------------------------------------------------------------------


def check_safety(rounds: pl.DataFrame, *, seed: int,
                 byzantine: Iterable[int] = ()) -> list[Violation]:
    """Strict safety: per round, one model hash over every honest commit ever made."""
    df = honest_rows(rounds, byzantine)
    split = (df.group_by("round").agg(pl.col("model_hash").n_unique().alias("k"))
             .filter(pl.col("k") > 1)["round"].sort().to_list())
    out: list[Violation] = []
    for rnd in split:
        rows = df.filter(pl.col("round") == rnd)
        by_hash = rows.group_by("model_hash").agg(
            pl.col("node").unique().sort().alias("nodes"),
            pl.col("order").min().alias("first"))
        parts = []
        for h, nodes in by_hash.sort("first").select("model_hash", "nodes").iter_rows():
            parts.append(f"{h[:8]} (node{'s' if len(nodes) > 1 else ''} {_ids(nodes)})")
        out.append(Violation(seed, "safety", f"round {rnd}: honest nodes committed "
                                             f"{len(parts)} model hashes: {'; '.join(parts)}"))
    return out


def final_states(rounds: pl.DataFrame, byzantine: Iterable[int] = ()) -> pl.DataFrame:
    """Per honest node: its last round and the model hash it holds after it."""
    df = honest_rows(rounds, byzantine)
    return (df.sort("round", "order").group_by("node", maintain_order=True).last()
            .select("node", "round", "model_hash").sort("node"))


def check_agreement(rounds: pl.DataFrame, *, seed: int, byzantine: Iterable[int] = (),
                    down: Iterable[int] = ()) -> list[Violation]:
    """Running honest nodes that ended at the same round hold one final model hash."""
    final = final_states(rounds, byzantine).filter(~pl.col("node").is_in(sorted(set(down))))
    out: list[Violation] = []
    for (rnd,), group in final.group_by("round", maintain_order=True):
        hashes = group.group_by("model_hash").agg(pl.col("node").sort().alias("nodes"),
                                                  pl.col("node").min().alias("first"))
        if len(hashes) > 1:
            parts = [f"{h[:8]} (nodes {_ids(nodes)})" for h, nodes in
                     hashes.sort("first").select("model_hash", "nodes").iter_rows()]
            out.append(Violation(seed, "agreement", f"nodes that ended at round {rnd} hold "
                                                    f"{len(parts)} models: {'; '.join(parts)}"))
    return sorted(out, key=lambda v: v.detail)


def liveness_target(scenario: Scenario) -> tuple[int | None, str]:
    """Rounds every running honest node must commit, or None with the reason the scenario is
    built to stall: a partition that never heals, or more than f nodes Byzantine or crashed
    for good. `expect: rounds_committed_at_least` below the plan lowers the target."""
    for i, fault in enumerate(scenario.faults):
        cut = (PartitionFault, IsolateFault, OneWayFault, BridgeFault)
        if isinstance(fault, cut) and fault.duration is None:
            return None, f"faults.{i} ({fault.kind}) is still in force at the end"
    gone = scenario.byzantine_nodes() | {
        n for f in scenario.faults if isinstance(f, CrashFault) and f.duration is None
        for n in f.nodes}
    if len(gone) > scenario.f:
        return None, (f"{len(gone)} nodes Byzantine or crashed for good, more than "
                      f"f={scenario.f}")
    planned = scenario.training.rounds
    asked = scenario.expect.rounds_committed_at_least
    if asked is not None and asked < planned:
        return asked, f"expect.rounds_committed_at_least={asked}"
    return planned, f"training.rounds={planned}"


def check_liveness(rounds: pl.DataFrame, *, seed: int, nodes: int, target: int | None,
                   byzantine: Iterable[int] = (), down: Iterable[int] = (),
                   why: str = "") -> list[Violation]:
    """Every running honest node committed at least `target` rounds (None: nothing to check)."""
    if target is None:
        return []
    byz, gone = set(byzantine), set(down)
    running = [i for i in range(nodes) if i not in byz and i not in gone]
    have = heights(rounds, byz)
    lag = {i: have.get(i, 0) for i in running if have.get(i, 0) < target}
    if not lag:
        return []
    worst = sorted(lag, key=lambda i: (lag[i], i))
    shown = ", ".join(f"node {i} at {lag[i]}" for i in worst[:SHOWN_NODES])
    more = f", +{len(lag) - SHOWN_NODES} more" if len(lag) > SHOWN_NODES else ""
    wanted = f" ({why})" if why else ""
    return [Violation(seed, "liveness", f"{len(lag)} of {len(running)} running honest nodes "
                                        f"committed fewer than {target} rounds{wanted}: "
                                        f"{shown}{more}")]


def check_nothing_lost(rounds: pl.DataFrame, events: pl.DataFrame | None, *, seed: int,
                       byzantine: Iterable[int] = ()) -> list[Violation]:
    """A node that restarts with its disk resumes where it crashed: it never commits again a
    round it held at the crash (a commit of its current disk life).

    A node cannot end below what it held unless it re-did those rounds (reported here) or lags
    (reported by liveness). A restart without its disk starts a new disk life: what came before
    is not held."""
    if events is None or not len(events) or "event" not in events.columns:
        return []
    df = honest_rows(rounds, byzantine)
    byz = set(byzantine) | set(df.filter(pl.col("byzantine"))["node"].to_list())
    life = events.filter(pl.col("event").is_in(["crash", "restart"])).sort(
        "time", maintain_order=True)
    out: list[Violation] = []
    disk_since: dict[int, float] = {}  # node -> when its current disk life began
    crashed_at: dict[int, float] = {}
    restarts: list[tuple[int, float, float, float]] = []  # node, life start, crash, restart
    for node, event, t, detail in life.select("src", "event", "time", "detail").iter_rows():
        if event == "crash":
            crashed_at[node] = t
        elif "keep_disk=False" in (detail or ""):
            disk_since[node] = t
            crashed_at.pop(node, None)
        elif node in crashed_at:
            restarts.append((node, disk_since.get(node, float("-inf")), crashed_at.pop(node), t))
    for node, since, crash, restart in restarts:
        if node in byz:
            continue
        mine = df.filter(pl.col("node") == node)
        held = mine.filter(pl.col("time").is_between(since, crash))["round"].unique().sort()
        if not len(held):
            continue
        later = mine.filter(pl.col("time") >= restart)
        nxt = life.filter((pl.col("src") == node) & (pl.col("time") > restart)
                          & (pl.col("event") == "crash"))
        if len(nxt):
            later = later.filter(pl.col("time") < nxt["time"].min())
        again = sorted(set(later["round"].to_list()) & set(held.to_list()))
        if again:
            out.append(Violation(seed, "nothing_lost", (
                f"node {node} restarted with its disk at t={restart:.3f}s but committed again "
                f"rounds {_rounds_text(again)} it held when it crashed at t={crash:.3f}s")))
    return out


def crash_violation(seed: int, error: BaseException, where: bool = True) -> Violation:
    """A run that raised: the exception's type, first line and (with `where`) innermost frame,
    on one line."""
    lines = str(error).strip().splitlines()
    frames = traceback.extract_tb(error.__traceback__) if where else []
    where_text = ""
    if frames:
        last = frames[-1]
        where_text = f" (at {Path(last.filename).name}:{last.lineno} in {last.name})"
    message = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return Violation(seed, "crash", f"the run raised {message}{where_text}")


def check_curation(summary: dict[str, Any], *, seed: int) -> list[Violation]:
    """Honest nodes that committed a round hold one curation root after it."""
    found = summary.get("curation") or {}
    out = []
    for split in found.get("root_splits", []):
        parts = [f"{root[:8]} (nodes {_ids(nodes)})" for root, nodes in split["roots"].items()]
        out.append(Violation(seed, "curation", f"round {split['round']}: honest nodes hold "
                                               f"{len(parts)} curation roots: "
                                               f"{'; '.join(parts)}"))
    more = found.get("rounds_split", 0) - len(out)
    if more > 0:
        out.append(Violation(seed, "curation", f"and {more} more rounds with split roots"))
    return out


# ---- all of them over one run --------------------------------------------------------------


def check_run(result: RunResult, seed: int | None = None) -> list[Violation]:
    """Every invariant over one run's result (the seed defaults to the scenario's)."""
    scenario = result.scenario
    seed = scenario.seed if seed is None else seed
    byz = scenario.byzantine_nodes()
    down = set(result.summary.get("down_at_end") or ()) | down_at_end(result.events)
    target, why = liveness_target(scenario)
    return [
        *check_safety(result.rounds, seed=seed, byzantine=byz),
        *check_agreement(result.rounds, seed=seed, byzantine=byz, down=down),
        *check_liveness(result.rounds, seed=seed, nodes=scenario.nodes.count, target=target,
                        byzantine=byz, down=down, why=why),
        *check_nothing_lost(result.rounds, result.events, seed=seed, byzantine=byz),
        *check_curation(result.summary, seed=seed),
    ]
