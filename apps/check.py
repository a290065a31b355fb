"""`phalanx check SUITE`: a regression suite of scenarios and matrices, for CI.

A suite is a folder (searched recursively) of YAML files: each is a scenario (run once at its
seed; it passes when every invariant holds and every `expect:` entry is met; a matrix's base
file is not run on its own) or a matrix
(a file with `groups:`; every cell is a case, passing under the same rule, and a cell the
scenario schema refuses up front is reported as skipped with its reason). Cases run in
parallel worker processes. The check writes to its output folder:

- `report.md`: one page: the counts, then each failing case with its first failure and the
  command that replays it;
- `junit.xml`: JUnit XML (one testsuite per file, one testcase per case; `failure` and
  `skipped` elements), which CI systems read;
- `failing/<case>.yaml`: every failing case as a scenario file, so the replay command is a
  plain `phalanx run`.

Exit status: 0 when every case passes, 1 when any fails (the CLI's business).
"""

from __future__ import annotations

import multiprocessing
import os
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from phalanx.scenario.schema import Scenario, ScenarioError, load_scenario, read_yaml

FIRST_LINE = 160  # a failure shown in the report is cut here; junit.xml keeps it whole
REPORT_ROWS = 40  # failing cases listed on the one page


class CheckError(ValueError):
    """A suite that cannot be checked; `str()` is one line."""


@dataclass(frozen=True)
class Case:
    """One thing to run: a scenario file, or one cell of a matrix file."""

    file: Path  # the YAML file it comes from
    id: str  # unique in the suite: the file's path in the suite, plus the cell's id
    scenario: Scenario | None  # None: refused by the schema (see `refused`)
    refused: str = ""


@dataclass
class Outcome:
    case: Case
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def status(self) -> str:
        return "skipped" if self.case.refused else "failed" if self.failures else "passed"


# ---- finding the cases -------------------------------------------------------------------


def is_matrix(data: object) -> bool:
    return isinstance(data, dict) and "groups" in data


def collect(suite: Path) -> list[Case]:
    """Every case of the suite (a folder, or one file), in path order."""
    if not suite.exists():
        raise CheckError(f"{suite}: no such file or folder")
    files = [suite] if suite.is_file() else sorted(
        p for p in suite.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    root = suite.parent if suite.is_file() else suite
    documents = {path: read_yaml(path) for path in files}
    bases = {(path.parent / str(group.get("base", ""))).resolve()
             for path, data in documents.items() if is_matrix(data)
             for group in data.get("groups") or [] if isinstance(group, dict)}
    cases: list[Case] = []
    for path, data in documents.items():
        name = path.relative_to(root).as_posix()
        if is_matrix(data):
            cases += _matrix_cases(path, name)
            continue
        if not (isinstance(data, dict) and "nodes" in data) or path.resolve() in bases:
            continue  # another YAML file, or a matrix's base (its cells are the cases)
        try:
            cases.append(Case(path, name, load_scenario(path)))
        except ScenarioError as err:
            cases.append(Case(path, name, None, "; ".join(err.lines)))  # a report row
    if not cases:
        raise CheckError(f"{suite}: no scenario or matrix files (*.yaml) in it")
    return cases


def _matrix_cases(path: Path, name: str) -> list[Case]:
    from phalanx.apps.matrix import load_matrix

    _, cells = load_matrix(path)  # a malformed matrix file is the suite's error, not a case
    return [Case(path, f"{name}::{cell.id}", cell.scenario, getattr(cell, "refused", "") or "")
            for cell in cells]


# ---- running them ----------------------------------------------------------------------


def run_case(case: Case) -> Outcome:
    """Run one case in this process; never raises (a crash is a failure line)."""
    from phalanx.apps.invariants import check_run
    from phalanx.apps.runner import run_scenario

    if case.scenario is None:
        return Outcome(case)
    start = time.perf_counter()
    try:
        result = run_scenario(case.scenario, progress=False)
    except Exception as err:
        return Outcome(case, [f"the run raised {type(err).__name__}: {err}"],
                       time.perf_counter() - start)
    lines = [f"{v.invariant}: {v.detail}" for v in check_run(result)]
    lines += [f"expect {line}" for line in result.failures]
    return Outcome(case, lines, time.perf_counter() - start)


def run_cases(cases: Iterable[Case], workers: int | None = None,
              done: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    cases = list(cases)
    workers = max(1, min(workers or os.cpu_count() or 1, len(cases)))
    if workers == 1:
        outcomes = []
        for case in cases:
            outcomes.append(run_case(case))
            if done:
                done(outcomes[-1])
        return outcomes
    # spawned, not forked (polars' threads; see apps/sweep.py)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        outcomes = []
        for outcome in pool.map(run_case, cases):
            outcomes.append(outcome)
            if done:
                done(outcome)
        return outcomes


# ---- reporting ---------------------------------------------------------------------------


def safe_file_name(case_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", case_id).strip("._")[:150] or "case"


def write_failing(outcomes: list[Outcome], folder: Path) -> dict[str, Path]:
    """Each failing case's scenario as a file `phalanx run` replays; case id → path."""
    paths = {}
    for o in outcomes:
        if o.status == "failed" and o.case.scenario is not None:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{safe_file_name(o.case.id)}.yaml"
            header = f"# Failing case {o.case.id} of a `phalanx check` suite.\n"
            path.write_text(header + o.case.scenario.resolved_yaml())
            paths[o.case.id] = path
    return paths


def counts(outcomes: list[Outcome]) -> dict[str, int]:
    out = {"passed": 0, "failed": 0, "skipped": 0}
    for o in outcomes:
        out[o.status] += 1
    return out


def headline(outcomes: list[Outcome], seconds: float) -> str:
    c = counts(outcomes)
    return (f"check: {len(outcomes)} cases, {c['passed']} passed, {c['failed']} failed, "
            f"{c['skipped']} refused up front ({seconds:.1f} s)")


def report_markdown(suite: Path, outcomes: list[Outcome], replays: dict[str, Path],
                    seconds: float) -> str:
    lines = [f"# `phalanx check {suite}`", "", f"**{headline(outcomes, seconds)}**", ""]
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        lines += ["| failing case | first failure | replay |", "|---|---|---|"]
        for o in failed[:REPORT_ROWS]:
            first = o.failures[0].replace("|", "\\|")
            first = first if len(first) <= FIRST_LINE else first[:FIRST_LINE - 1] + "…"
            more = f" (+{len(o.failures) - 1} more)" if len(o.failures) > 1 else ""
            lines.append(f"| {o.case.id} | {first}{more} | "
                         f"`phalanx run {replays[o.case.id]}` |")
        if len(failed) > REPORT_ROWS:
            lines.append(f"\n… and {len(failed) - REPORT_ROWS} more failing cases: "
                         f"junit.xml lists every one.")
    else:
        lines.append("Every case passed.")
    skipped = [o for o in outcomes if o.status == "skipped"]
    if skipped:
        lines += ["", f"Refused up front ({len(skipped)}; the scenario schema's reason):", ""]
        lines += [f"- {o.case.id}: {o.case.refused}" for o in skipped[:10]]
        if len(skipped) > 10:
            lines.append(f"- … and {len(skipped) - 10} more (junit.xml)")
    return "\n".join(lines) + "\n"


def junit_xml(suite: Path, outcomes: list[Outcome], replays: dict[str, Path]) -> bytes:
    """JUnit XML: one <testsuite> per YAML file, one <testcase> per case."""
    root = ET.Element("testsuites", name=f"phalanx check {suite}")
    by_file: dict[Path, list[Outcome]] = {}
    for o in outcomes:
        by_file.setdefault(o.case.file, []).append(o)
    totals = counts(outcomes)
    root.set("tests", str(len(outcomes)))
    root.set("failures", str(totals["failed"]))
    root.set("skipped", str(totals["skipped"]))
    root.set("time", f"{sum(o.seconds for o in outcomes):.3f}")
    for file, group in by_file.items():
        c = counts(group)
        ts = ET.SubElement(root, "testsuite", name=file.as_posix(), tests=str(len(group)),
                           failures=str(c["failed"]), errors="0", skipped=str(c["skipped"]),
                           time=f"{sum(o.seconds for o in group):.3f}")
        for o in group:
            tc = ET.SubElement(ts, "testcase", classname=file.as_posix(), name=o.case.id,
                               time=f"{o.seconds:.3f}")
            if o.status == "failed":
                failure = ET.SubElement(tc, "failure", message=o.failures[0][:FIRST_LINE],
                                        type="phalanx")
                failure.text = "\n".join(
                    [*o.failures, f"replay: phalanx run {replays[o.case.id]}"])
            elif o.status == "skipped":
                ET.SubElement(tc, "skipped", message=o.case.refused[:FIRST_LINE])
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


@dataclass
class CheckReport:
    suite: Path
    outcomes: list[Outcome]
    seconds: float
    out: Path
    junit: Path

    @property
    def ok(self) -> bool:
        return all(o.status != "failed" for o in self.outcomes)

    def headline(self) -> str:
        return headline(self.outcomes, self.seconds)


def check(suite: str | Path, out: str | Path | None = None, junit: str | Path | None = None,
          workers: int | None = None, done: Callable[[Outcome], None] | None = None
          ) -> CheckReport:
    """Run every case of `suite`; write report.md, junit.xml and failing/ to `out` (default
    runs/check-<suite name>/). CheckError or ScenarioError (one line) for a suite that cannot
    run, before any case runs."""
    suite = Path(suite)
    cases = collect(suite)
    out = Path(out) if out is not None else Path("runs") / f"check-{safe_file_name(suite.stem)}"
    out.mkdir(parents=True, exist_ok=True)
    junit = Path(junit) if junit is not None else out / "junit.xml"
    start = time.perf_counter()
    outcomes = run_cases(cases, workers, done)
    seconds = time.perf_counter() - start
    replays = write_failing(outcomes, out / "failing")
    (out / "report.md").write_text(report_markdown(suite, outcomes, replays, seconds))
    junit.parent.mkdir(parents=True, exist_ok=True)
    junit.write_bytes(junit_xml(suite, outcomes, replays))
    return CheckReport(suite, outcomes, seconds, out, junit)


def report_line(report: CheckReport) -> str:
    return f"written: {report.out}/report.md, {report.junit}"


__all__ = ["Case", "CheckError", "CheckReport", "Outcome", "check", "collect", "is_matrix",
           "junit_xml", "report_line", "run_case"]
