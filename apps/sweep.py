"""`phalanx sweep`: one scenario over many seeds, in parallel, checking the invariants of each run.

Deterministic-simulation testing in the style of FoundationDB and TigerBeetle's VOPR: a run is
a pure function of (scenario, seed), so every violation found here names the seed that replays
it exactly with `phalanx run SCENARIO --seed S`.

Each worker process loads the scenario with its seed, runs the simulation without writing
per-run outputs, checks the invariants (`apps/invariants.py`) and returns a small picklable
`SeedOutcome`; an exception in the run becomes a "crash" violation, and a worker process that
dies outright is retried alone so the seed that killed it is the one reported. The sweep writes
`sweep.parquet` (one row per seed) and `sweep.md` (summary and violation list) to its folder.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import yaml
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from phalanx.apps.invariants import (
    Violation,
    check_run,
    crash_violation,
    down_at_end,
    heights,
)
from phalanx.scenario.schema import Scenario, load_scenario

MAX_SEED = 2**63  # the scenario schema's bound (exclusive)
# Workers are spawned, never forked: polars (and its allocator) run threads from import time
# on, and a child forked while one of them holds a lock deadlocks on its first query.
CONTEXT = multiprocessing.get_context("spawn")
DIED = "the worker process died during the run (killed, out of memory or a segfault)"

SWEEP_SCHEMA = {
    "seed": pl.Int64, "min_rounds_committed": pl.Int64, "max_rounds_committed": pl.Int64,
    "distinct_final_hashes": pl.Int64, "violations": pl.Int64, "invariants": pl.Utf8,
    "expect_failures": pl.Int64, "wall_seconds": pl.Float64,
}


class SweepError(ValueError):
    """Bad sweep arguments; `str()` is one line naming the option and what is allowed."""


@dataclass(frozen=True, slots=True)
class SeedOutcome:
    """What a worker sends back for one seed (small and picklable)."""

    seed: int
    min_rounds_committed: int  # over the running honest nodes (-1: the run crashed)
    max_rounds_committed: int
    distinct_final_hashes: int
    violations: tuple[Violation, ...]
    expect_failures: int
    wall_seconds: float

    @property
    def missed_expectations(self) -> list[int]:
        """Seeds whose run missed its scenario's `expect:` checks (counted or not)."""
        return [o.seed for o in self.outcomes if o.expect_failures]

    @property
    def ok(self) -> bool:
        return not self.violations


@dataclass
class SweepReport:
    scenario: Scenario  # as loaded with the first seed
    path: Path
    seeds: range
    workers: int
    outcomes: list[SeedOutcome]  # sorted by seed
    wall_seconds: float
    out: Path | None = None
    saved: list[Path] = field(default_factory=list)  # --save-failures files
    expectations: bool = False  # a seed whose `expect:` checks fail counts as failed

    @property
    def violations(self) -> list[Violation]:
        return [v for o in self.outcomes for v in o.violations]

    @property
    def failed_seeds(self) -> list[int]:
        return [o.seed for o in self.outcomes
                if not o.ok or (self.expectations and o.expect_failures)]

    @property
    def missed_expectations(self) -> list[int]:
        """Seeds whose run missed its scenario's `expect:` checks (counted or not)."""
        return [o.seed for o in self.outcomes if o.expect_failures]

    @property
    def ok(self) -> bool:
        return not self.failed_seeds

    def replay(self, seed: int) -> str:
        return f"phalanx run {self.path} --seed {seed}"

    def table(self) -> pl.DataFrame:
        rows = [{"seed": o.seed, "min_rounds_committed": o.min_rounds_committed,
                 "max_rounds_committed": o.max_rounds_committed,
                 "distinct_final_hashes": o.distinct_final_hashes,
                 "violations": len(o.violations),
                 "invariants": ",".join(sorted({v.invariant for v in o.violations})),
                 "expect_failures": o.expect_failures, "wall_seconds": o.wall_seconds}
                for o in self.outcomes]
        return pl.DataFrame(rows, schema=SWEEP_SCHEMA, orient="row")

    def headline(self) -> str:
        n, v, f = len(self.outcomes), len(self.violations), len(self.failed_seeds)
        e = len(self.missed_expectations)
        # always said: a seed that misses `expect:` is news even when it does not fail the sweep
        missed = f", {e} missing `expect:`" if e else ""
        if e and not self.expectations:
            missed += " (not counted: --expect counts them)"
        return (f"sweep: {n} seed{'s' * (n != 1)}, {v} violation{'s' * (v != 1)}{missed} "
                f"({f} seed{'s' * (f != 1)} failed)")

    def markdown(self) -> str:
        s = self.scenario
        by_kind = Counter(v.invariant for v in self.violations)
        walls = [o.wall_seconds for o in self.outcomes]
        lines = [
            f"# Sweep of `{s.name}`",
            "",
            f"- scenario: `{self.path}`",
            f"- seeds: {self.seeds.start}..{self.seeds.stop - 1} ({len(self.seeds)} seeds), "
            f"{self.workers} worker{'s' * (self.workers != 1)}, "
            f"{self.wall_seconds:.1f} s wall",
            f"- nodes: {s.nodes.count} (f={s.f}), rounds planned: {s.training.rounds}",
            f"- per-seed wall seconds: mean {sum(walls) / max(len(walls), 1):.2f}, "
            f"max {max(walls, default=0.0):.2f}",
            f"- **{self.headline()}**",
        ]
        if by_kind:
            lines.append("- by invariant: " + ", ".join(
                f"{k} {by_kind[k]}" for k in sorted(by_kind)))
        expect = len(self.missed_expectations)
        if expect:
            counted = "counted as failures" if self.expectations else "not counted as violations"
            lines.append(f"- seeds whose `expect:` checks failed ({counted}): {expect}")
        if not self.violations:
            lines += ["", "No invariant was violated."]
        else:
            lines += ["", "## Violations", "",
                      "Replay any of them with the command in its row.", "",
                      "| seed | invariant | detail | replay |", "|---:|---|---|---|"]
            for v in self.violations:
                detail = v.detail.replace("|", "\\|")
                lines.append(f"| {v.seed} | {v.invariant} | {detail} | "
                             f"`{self.replay(v.seed)}` |")
        missed = [o.seed for o in self.outcomes if o.ok and o.expect_failures]
        if missed:
            lines += ["", "## Seeds that missed their `expect:` checks", ""]
            lines += [f"- seed {seed}: `{self.replay(seed)}`" for seed in missed]
        if self.saved:
            lines += ["", "## Saved failing scenarios", ""]
            lines += [f"- `{p}`" for p in self.saved]
        return "\n".join(lines) + "\n"


# ---- one seed, in a worker process ---------------------------------------------------------


def run_seed(path: str, seed: int) -> SeedOutcome:
    """Load the scenario with `seed`, run it without outputs and check every invariant.

    Never raises for a failing run: an exception becomes a "crash" violation."""
    start = time.perf_counter()
    try:
        from phalanx.apps.runner import run_scenario  # torch: only where runs happen

        result = run_scenario(load_scenario(path, seed), progress=False)
        violations = check_run(result, seed)
        byz = result.scenario.byzantine_nodes()
        down = set(result.summary.get("down_at_end") or ()) | down_at_end(result.events)
        have = heights(result.rounds, byz)
        running = [have.get(i, 0) for i in range(result.scenario.nodes.count)
                   if i not in byz and i not in down]
        return SeedOutcome(seed, min(running, default=0), max(running, default=0),
                           int(result.summary.get("distinct_final_hashes", 0)),
                           tuple(violations), len(result.failures),
                           time.perf_counter() - start)
    except Exception as error:  # any failure of the run is a finding, not a traceback
        return crashed(seed, crash_violation(seed, error), time.perf_counter() - start)


def crashed(seed: int, violation: Violation, wall: float) -> SeedOutcome:
    return SeedOutcome(seed, -1, -1, 0, (violation,), 0, wall)


# ---- the sweep -----------------------------------------------------------------------------


def default_out(scenario: Scenario) -> Path:
    return Path("runs") / f"{safe_name(scenario.name)}-sweep"


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "scenario"


def sweep(scenario_path: str | Path, seeds: range, workers: int | None = None,
          out_dir: str | Path | None = None, *, save_failures: str | Path | None = None,
          expectations: bool = False, shrink_runs: int = 120, progress: bool = False,
          console: Console | None = None,
          worker: Callable[[str, int], SeedOutcome] = run_seed) -> SweepReport:
    """Run `scenario_path` once per seed in `seeds` over `workers` spawned processes (default:
    one per CPU, never more than seeds) and check every invariant; `worker` (default
    `run_seed`) must be importable by name in a fresh interpreter. Writes `sweep.parquet` and `sweep.md` to `out_dir`
    (default `runs/<scenario name>-sweep/`) and, with `save_failures`, one regression file per
    failing seed, shrunk (apps/shrink.py) within `shrink_runs` runs (0: the scenario as it is).
    `expectations`: a seed that misses its `expect:` checks fails too. Raises `SweepError`, `ScenarioError` or `TopologyError` for bad
    arguments and `OSError` when the folders cannot be made, all before any seed runs."""
    path = Path(scenario_path)
    if len(seeds) < 1 or seeds.step != 1:
        raise SweepError(f"--seeds: need at least one seed (got {len(seeds)})")
    if seeds.start < 0 or seeds.stop > MAX_SEED:
        raise SweepError(f"--start/--seeds: seeds must lie in 0..{MAX_SEED - 1} "
                         f"(got {seeds.start}..{seeds.stop - 1})")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise SweepError(f"--workers: must be at least 1 (got {workers})")
    workers = min(workers, len(seeds))
    scenario = load_scenario(path, seeds.start)  # a bad file fails here, before any worker
    from phalanx.engine.rng import RngStreams
    from phalanx.sim.world import build_graph_routes

    build_graph_routes(scenario, RngStreams(scenario.seed))  # and so does a bad topology
    out = Path(out_dir) if out_dir is not None else default_out(scenario)
    out.mkdir(parents=True, exist_ok=True)  # fail now, not after a long sweep
    saves = Path(save_failures) if save_failures is not None else None
    if saves is not None:
        saves.mkdir(parents=True, exist_ok=True)
    console = console or Console(stderr=True, emoji=False)

    start = time.perf_counter()
    outcomes = _run_all(str(path), seeds, workers, worker, progress, console)
    report = SweepReport(scenario, path, seeds, workers, sorted(outcomes, key=lambda o: o.seed),
                         time.perf_counter() - start, out, expectations=expectations)
    report.table().write_parquet(out / "sweep.parquet")
    if saves is not None:
        say = (lambda line: console.print(line, highlight=False, soft_wrap=True)) if progress \
            else None
        report.saved = [save_failure(path, seed, saves, report, shrink_runs, say)
                        for seed in report.failed_seeds]
    (out / "sweep.md").write_text(report.markdown())
    return report


def _run_all(path: str, seeds: range, workers: int, worker: Callable[[str, int], SeedOutcome],
             progress: bool, console: Console) -> list[SeedOutcome]:
    outcomes: list[SeedOutcome] = []
    broken: list[int] = []  # seeds whose worker process died: retried one at a time
    bar = Progress(TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("seeds  {task.fields[bad]} failed"), TimeElapsedColumn(),
                   TimeRemainingColumn(), console=console, disable=not progress)
    task = bar.add_task("seeds", total=len(seeds), bad=0)

    def done(outcome: SeedOutcome) -> None:
        outcomes.append(outcome)
        failed[0] += not outcome.ok
        bar.update(task, advance=1, bad=failed[0])

    failed = [0]
    with bar:
        with ProcessPoolExecutor(max_workers=workers, mp_context=CONTEXT) as pool:
            futures: dict[Future[SeedOutcome], int] = {pool.submit(worker, path, s): s
                                                       for s in seeds}
            try:
                for future in as_completed(futures):
                    seed = futures[future]
                    try:
                        done(future.result())
                    except BrokenProcessPool:
                        broken.append(seed)
                    except Exception as error:  # the worker itself failed (e.g. to pickle)
                        done(crashed(seed, crash_violation(seed, error, where=False), 0.0))
            except BaseException:  # Ctrl-C: drop the seeds not started yet
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        if broken:
            _one_by_one(worker, path, sorted(broken), done)
    return outcomes


def _one_by_one(worker: Callable[[str, int], SeedOutcome], path: str, seeds: list[int],
                done: Callable[[SeedOutcome], None]) -> None:
    """Rerun seeds whose pool broke, one at a time in a process of their own: a seed either
    completes (another seed killed the shared pool) or is the one whose run kills its process."""
    pool: ProcessPoolExecutor | None = None
    try:
        for seed in seeds:
            pool = pool or ProcessPoolExecutor(max_workers=1, mp_context=CONTEXT)
            start = time.perf_counter()
            try:
                done(pool.submit(worker, path, seed).result())
            except BrokenProcessPool:
                pool.shutdown(wait=True)
                pool = None
                done(crashed(seed, Violation(seed, "crash", DIED), time.perf_counter() - start))
            except Exception as error:
                done(crashed(seed, crash_violation(seed, error, where=False),
                             time.perf_counter() - start))
    finally:
        if pool is not None:
            pool.shutdown(wait=True)


# ---- saving failing seeds ------------------------------------------------------------------


SEED_LINE = re.compile(r"^seed[ \t]*:.*$", re.MULTILINE)


def with_seed_text(text: str, seed: int) -> str:
    """The scenario file's text with its top-level `seed:` set (comments kept); a file this
    cannot edit in place (a flow-style mapping) is written back as plain YAML."""
    data = yaml.safe_load(text)
    if SEED_LINE.search(text):
        edited = SEED_LINE.sub(f"seed: {seed}", text, count=1)
    else:
        edited, n = re.subn(r"^(name[ \t]*:.*)$", rf"\1\nseed: {seed}", text, count=1,
                            flags=re.MULTILINE)
        if not n:
            edited = f"seed: {seed}\n{text}"
    try:
        again = yaml.safe_load(edited)
    except yaml.YAMLError:
        again = None
    if again != {**data, "seed": seed}:
        edited = yaml.safe_dump({**data, "seed": seed}, sort_keys=False)
    return edited


def save_failure(path: Path, seed: int, folder: Path, report: SweepReport,
                 shrink_runs: int = 0, say: Callable[[str], None] | None = None) -> Path:
    """Write the failing seed's scenario to `folder` as a regression file: shrunk to the
    smallest variant that fails the same way (within `shrink_runs` runs), or as written."""
    from phalanx.apps.shrink import failure_of, shrink, size

    target = folder / f"{safe_name(report.scenario.name)}-seed{seed}.yaml"
    found = f"`phalanx sweep {path}` (seed {seed}"
    data = yaml.safe_load(path.read_text())
    failure = failure_of(data, seed) if shrink_runs > 0 else None
    if failure is None:  # not asked to shrink, or the failure needs what the sweep ran apart
        kinds = sorted({v.invariant for v in report.violations if v.seed == seed}
                       or {"expect"})
        header = (f"# Regression found by {found}: {', '.join(kinds)}).\n"
                  f"# Replay: phalanx run <this file>\n")
        target.write_text(header + with_seed_text(path.read_text(), seed))
        return target
    if say:
        say(f"shrinking seed {seed} ({failure}) ...")
    small = shrink(data, seed, failure, max_runs=shrink_runs, say=say)
    steps = "".join(f"#   - {step}\n" for step in small.steps) or "#   (none failed)\n"
    header = (f"# Regression found by {found}), shrunk: it still fails with {failure}.\n"
              f"# Rounds × nodes {size(data)} → {small.size_after} ({small.factor:.1f}× "
              f"smaller) after {small.runs} runs; the edits kept:\n{steps}"
              f"# Replay: phalanx run <this file>\n")
    body = yaml.safe_dump({**small.data, "seed": seed}, sort_keys=False, allow_unicode=True)
    target.write_text(header + _opening_comment(path.read_text()) + body)
    return target


def _opening_comment(text: str) -> str:
    """The scenario file's first comment lines, kept above a shrunk copy (which is rewritten
    as plain YAML and loses the rest)."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return "# The original file began:\n" + "\n".join(lines) + "\n" if lines else ""


# ---- presenting ------------------------------------------------------------------------------


def print_report(report: SweepReport, console: Console, limit: int = 50) -> None:
    """The violations (up to `limit` rows) and the final headline."""
    from rich.table import Table

    if report.violations:
        table = Table(title=f"violations ({report.scenario.name})")
        table.add_column("seed", justify="right")
        table.add_column("invariant")
        table.add_column("detail", overflow="fold")
        for v in report.violations[:limit]:
            table.add_row(str(v.seed), v.invariant, v.detail)
        console.print(table)
        if len(report.violations) > limit:
            console.print(f"... and {len(report.violations) - limit} more (see "
                          f"{report.out}/sweep.md)", highlight=False, soft_wrap=True)
    if report.failed_seeds or report.missed_expectations:
        first = (report.failed_seeds or report.missed_expectations)[0]
        console.print(f"replay a failing seed: {report.replay(first)}", highlight=False,
                      soft_wrap=True)
    if report.saved:
        console.print(f"failing scenarios saved: {len(report.saved)} file(s) in "
                      f"{report.saved[0].parent}/", highlight=False, soft_wrap=True)
    if report.out:
        console.print(f"outputs in {report.out}/ (sweep.parquet, sweep.md)", highlight=False,
                      soft_wrap=True)
    console.print(report.headline(), highlight=False, soft_wrap=True)


__all__ = ["SeedOutcome", "SweepError", "SweepReport", "print_report", "run_seed", "sweep",
           "with_seed_text"]
