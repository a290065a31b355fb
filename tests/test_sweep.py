"""`phalanx sweep` and the invariant checks it runs on every seed.

The invariants are tested on hand-built tables with planted violations (fast, exact); the
sweep itself runs tiny linear scenarios over a few seeds with two worker processes.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner, Result

from phalanx.apps.cli import app
from phalanx.apps.invariants import (
    Violation,
    check_agreement,
    check_liveness,
    check_nothing_lost,
    check_run,
    check_safety,
    crash_violation,
    down_at_end,
    liveness_target,
)
from phalanx.apps.results import RunResult
from phalanx.apps.runner import run_scenario
from phalanx.apps.sweep import run_seed, sweep, with_seed_text
from phalanx.scenario.schema import load_scenario, parse_scenario

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

TINY = """\
# a tiny clean scenario: 4 honest nodes, no faults
name: tiny
seed: 3
nodes: {count: 4}
workload: {kind: linear, dim: 4, samples_per_node: 32, eval_samples: 64}
training: {rounds: 3, lr: 0.1, momentum: 0.5, step_time: 0.02, round_timeout: 0.3,
           view_timeout: 1.0}
"""
# the simulated-time cap ends every run before its first commit: a liveness violation
STALLED = TINY.replace("view_timeout: 1.0}", "view_timeout: 1.0, max_time: 0.01}")


def write(tmp_path: Path, text: str, name: str = "scenario.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def invoke(*args: str | Path) -> Result:
    result = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "200"}).invoke(
        app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        repr(result.exception))
    return result


def one_error_line(stderr: str) -> str:
    text = ANSI.sub("", stderr)
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def table(rows: list[tuple[int, int, str]], **extra: list[object]) -> pl.DataFrame:
    """A hand-built rounds table: (round, node, model hash) per commit, in commit order."""
    df = pl.DataFrame(rows, schema={"round": pl.Int32, "node": pl.Int32, "model_hash": pl.Utf8},
                      orient="row")
    return df.with_columns(pl.Series(k, v) for k, v in extra.items())


def agreed(nodes: int, rounds: int) -> list[tuple[int, int, str]]:
    return [(r, n, f"{r:02d}" * 16) for r in range(rounds) for n in range(nodes)]


# ---- planted violations: the checks alone ------------------------------------------------------


def test_safety_reports_the_round_where_honest_hashes_differ() -> None:
    rows = agreed(4, 3)
    rows[4 + 3] = (1, 3, "ff" * 32)  # node 3 committed another model for round 1
    found = check_safety(table(rows), seed=7)
    assert len(found) == 1
    v = found[0]
    assert (v.seed, v.invariant) == (7, "safety")
    assert v.detail.startswith("round 1:") and "2 model hashes" in v.detail, v.detail
    assert "01010101 (nodes 0, 1, 2)" in v.detail and "ffffffff (node 3)" in v.detail
    assert "\n" not in v.detail
    assert check_safety(table(agreed(4, 3)), seed=7) == []


def test_safety_counts_every_honest_commit_and_ignores_byzantine_nodes() -> None:
    rows = [*agreed(4, 2), (1, 2, "ee" * 32)]
    # node 2 also committed round 1 with another model: strict safety reports it
    found = check_safety(table(rows), seed=1)
    assert len(found) == 1 and "eeeeeeee (node 2)" in found[0].detail
    # the same commit by a Byzantine node is no honest commit at all
    assert check_safety(table(rows), seed=1, byzantine={2}) == []
    assert check_safety(table(rows, byzantine=[n == 2 for _, n, _ in rows]), seed=1) == []


def test_agreement_at_the_end() -> None:
    rows = agreed(4, 2)
    rows[-1] = (1, 3, "aa" * 32)
    found = check_agreement(table(rows), seed=3)
    assert [v.invariant for v in found] == ["agreement"]
    assert "ended at round 1" in found[0].detail and "aaaaaaaa (nodes 3)" in found[0].detail
    # a node down at the end is not held to it; lagging nodes are compared with their peers
    assert check_agreement(table(rows), seed=3, down={3}) == []
    assert check_agreement(table(agreed(4, 2)[:6]), seed=3) == []


def test_liveness_names_the_lagging_nodes() -> None:
    rows = [row for row in agreed(4, 5) if not (row[1] == 2 and row[0] >= 1)]
    found = check_liveness(table(rows), seed=9, nodes=4, target=5)
    assert len(found) == 1
    assert found[0].invariant == "liveness"
    assert "1 of 4 running honest nodes" in found[0].detail
    assert "node 2 at 1" in found[0].detail, found[0].detail
    # a node with no commit at all lags too
    found = check_liveness(table(agreed(3, 5)), seed=9, nodes=4, target=5)
    assert "node 3 at 0" in found[0].detail
    # down at the end, Byzantine, or a scenario built to stall: nothing to report
    assert check_liveness(table(rows), seed=9, nodes=4, target=5, down={2}) == []
    assert check_liveness(table(rows), seed=9, nodes=4, target=5, byzantine={2}) == []
    assert check_liveness(table(rows), seed=9, nodes=4, target=None) == []
    assert check_liveness(table(rows), seed=9, nodes=4, target=1) == []


def scenario_with(**extra: object) -> object:
    data = yaml.safe_load(TINY) | extra
    return parse_scenario(data, "test")


def test_liveness_target_follows_the_scenario() -> None:
    assert liveness_target(scenario_with())[0] == 3
    assert liveness_target(scenario_with(expect={"rounds_committed_at_least": 2}))[0] == 2
    forever = scenario_with(faults=[{"kind": "partition", "groups": [[0, 1]], "at": 0.1}])
    target, why = liveness_target(forever)
    assert target is None and "faults.0" in why
    healed = scenario_with(faults=[{"kind": "partition", "groups": [[0, 1]], "at": 0.1,
                                    "duration": 1.0}])
    assert liveness_target(healed)[0] == 3
    too_many = scenario_with(unsafe=True, faults=[{"kind": "crash", "nodes": [0, 1], "at": 0.1}])
    assert liveness_target(too_many)[0] is None


def events_table(rows: list[tuple[float, str, int, str]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"time": pl.Float64, "event": pl.Utf8, "src": pl.Int32,
                                      "detail": pl.Utf8}, orient="row")


def test_nothing_lost_after_a_restart_with_disk() -> None:
    # node 1 commits rounds 0..2, crashes at t=3.5, restarts with its disk at t=5 ...
    rows = [(r, n, f"{r:02d}" * 16) for r in range(6) for n in range(4) if not (
        n == 1 and r == 3)]
    times = [float(r + 1) for r, _, _ in rows]
    # ... and then commits rounds 1..5: it lost rounds 1 and 2 it had on disk
    replay = [(r, 1, f"{r:02d}" * 16) for r in (1, 2, 3, 4, 5)]
    rows += replay
    times += [5.5 + 0.1 * i for i in range(len(replay))]
    crash = [(3.5, "crash", 1, ""), (5.0, "restart", 1, "keep_disk=True")]
    found = check_nothing_lost(table(rows, time=times), events_table(crash), seed=4)
    assert [v.invariant for v in found] == ["nothing_lost"]
    assert "node 1" in found[0].detail and "[1..2]" in found[0].detail, found[0].detail
    # without its disk, replaying is how a node comes back: not a violation
    wiped = [(3.5, "crash", 1, ""), (5.0, "restart", 1, "keep_disk=False")]
    assert check_nothing_lost(table(rows, time=times), events_table(wiped), seed=4) == []
    # a clean resume from round 3 on is fine too
    clean = rows[:-5] + replay[2:]
    assert check_nothing_lost(table(clean, time=times[:-5] + times[-3:]),
                              events_table(crash), seed=4) == []
    assert down_at_end(events_table(crash[:1])) == {1}
    assert down_at_end(events_table(crash)) == set()


def test_check_run_over_a_run_result() -> None:
    scenario = scenario_with(byzantine=[{"nodes": [3], "behaviour": "silent"}])
    rows = [row for row in agreed(4, 3) if row[1] != 3]
    rows[3] = (1, 0, "bb" * 32)  # node 0 forks at round 1
    rows = [row for row in rows if not (row[1] == 2 and row[0] == 2)]  # node 2 lags
    result = RunResult(scenario, table(rows, byzantine=[False] * len(rows)),
                       events_table([]), {"down_at_end": []})
    found = check_run(result)
    kinds = sorted(v.invariant for v in found)
    assert kinds == ["liveness", "safety"], found
    assert {v.seed for v in found} == {3}
    assert check_run(result, seed=11)[0].seed == 11


def test_crash_violation_is_one_line() -> None:
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError as e:
        v = crash_violation(5, e)
    assert v.invariant == "crash" and v.seed == 5
    assert "RuntimeError: boom" in v.detail and "\n" not in v.detail
    assert "test_sweep.py" in v.detail


# ---- the worker and the sweep ------------------------------------------------------------------


def test_run_seed_turns_an_exception_into_a_violation(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, TINY)

    def explode(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr("phalanx.apps.runner.run_scenario", explode)
    outcome = run_seed(str(path), 4)
    assert outcome.seed == 4 and not outcome.ok
    (v,) = outcome.violations
    assert v.invariant == "crash" and "ZeroDivisionError: division by zero" in v.detail


# stands in for run_seed in the pool (workers are spawned: it must be importable by name)
FAKE_WORKER = """\
import os

from phalanx.apps.sweep import SeedOutcome


def fake_worker(path: str, seed: int) -> SeedOutcome:
    if seed == 2:
        os._exit(3)  # the process dies: no exception, no result
    if seed == 3:
        raise ValueError("the worker itself failed")
    return SeedOutcome(seed, 3, 3, 1, (), 0, 0.0)
"""


def test_a_dying_worker_is_a_violation_of_its_own_seed(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, FAKE_WORKER, "sweep_fake_worker.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    fake = importlib.import_module("sweep_fake_worker")
    path = write(tmp_path, TINY)
    report = sweep(path, range(6), 2, tmp_path / "out", worker=fake.fake_worker)
    assert report.failed_seeds == [2, 3]
    by_seed = {v.seed: v for v in report.violations}
    assert by_seed[2].invariant == "crash" and "worker process died" in by_seed[2].detail
    assert by_seed[3].invariant == "crash" and "ValueError" in by_seed[3].detail
    assert [o.seed for o in report.outcomes] == list(range(6))


def test_clean_sweep_exits_0(tmp_path: Path) -> None:
    path = write(tmp_path, TINY)
    out = tmp_path / "out"
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "TERM": "dumb"}
    proc = subprocess.run([sys.executable, "-m", "phalanx.apps.cli", "sweep", str(path),
                           "--seeds", "4", "--start", "10", "--workers", "2", "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "sweep: 4 seeds, 0 violations (0 seeds failed)"
    df = pl.read_parquet(out / "sweep.parquet")
    assert df["seed"].to_list() == [10, 11, 12, 13]
    assert df["violations"].sum() == 0
    assert df["min_rounds_committed"].to_list() == [3] * 4
    assert df["distinct_final_hashes"].to_list() == [1] * 4
    assert "No invariant was violated" in (out / "sweep.md").read_text()


def test_violations_exit_1_and_save_replayable_failures(tmp_path: Path) -> None:
    path = write(tmp_path, STALLED)
    saved = tmp_path / "regressions"
    result = invoke("sweep", path, "--seeds", "2", "--start", "5", "--workers", "2",
                    "--out", tmp_path / "out", "--save-failures", saved, "--shrink-runs", "0",
                    "-q")  # saved as written (tests/test_shrink.py has the shrunk ones)
    assert result.exit_code == 1, result.output
    text = ANSI.sub("", result.stdout)
    assert text.strip().splitlines()[-1] == "sweep: 2 seeds, 2 violations (2 seeds failed)"
    assert "liveness" in text and f"phalanx run {path} --seed 5" in text
    md = (tmp_path / "out" / "sweep.md").read_text()
    assert "| 5 | liveness |" in md and "| 6 | liveness |" in md
    files = sorted(p.name for p in saved.iterdir())
    assert files == ["tiny-seed5.yaml", "tiny-seed6.yaml"]
    replay = saved / "tiny-seed6.yaml"
    assert "a tiny clean scenario" in replay.read_text()  # the file's comments are kept
    scenario = load_scenario(replay)
    assert scenario.seed == 6 and scenario.model_dump(exclude={"seed"}) == load_scenario(
        path).model_dump(exclude={"seed"})
    # the saved file replays the violation the sweep found, exactly
    found = check_run(run_scenario(replay))
    assert found == [v for v in sweep(path, range(6, 7), 1, tmp_path / "again").violations]
    assert found and found[0].invariant == "liveness"


def test_with_seed_text_edits_or_rewrites() -> None:
    assert "seed: 42\n" in with_seed_text(TINY, 42) and "seed: 3" not in with_seed_text(TINY, 42)
    no_seed = "name: x  # keep me\nnodes: {count: 4}\n"
    edited = with_seed_text(no_seed, 7)
    assert edited.startswith("name: x  # keep me\nseed: 7\n")
    flow = "{name: x, nodes: {count: 4}}\n"
    assert yaml.safe_load(with_seed_text(flow, 9)) == {"name": "x", "nodes": {"count": 4},
                                                      "seed": 9}
    nested = "name: x\nextra:\n  seed: 1\nseed: 2\n"
    assert yaml.safe_load(with_seed_text(nested, 8)) == {"name": "x", "extra": {"seed": 1},
                                                        "seed": 8}


@pytest.mark.parametrize("case", ["missing", "bad_field", "topology", "seeds", "workers",
                                  "start", "out_is_file"])
def test_user_errors_exit_2_with_one_line(tmp_path: Path, case: str) -> None:
    path = write(tmp_path, TINY)
    args: list[str | Path] = ["sweep", path, "--seeds", "2", "--workers", "1", "--out",
                              tmp_path / "out", "-q"]
    expect = {"missing": r"nope\.yaml.*cannot read", "bad_field": r"links\.latency\b.*-0\.5",
              "topology": r"topology.*random_regular", "seeds": r"--seeds\b.*\b0\b",
              "workers": r"--workers\b.*\b0\b", "start": r"--start\b", "out_is_file":
              r"--out .*out: is a file, not a folder"}[case]
    match case:
        case "missing":
            args[1] = tmp_path / "nope.yaml"
        case "bad_field":
            write(tmp_path, TINY + "links: {latency: -0.5}\n")
        case "topology":
            write(tmp_path, TINY.replace("count: 4", "count: 5")
                  + "topology: {kind: random_regular, degree: 3}\n")
        case "seeds":
            args[3] = "0"
        case "workers":
            args[5] = "0"
        case "start":
            args += ["--start", str(2**63 - 1)]
        case "out_is_file":
            (tmp_path / "out").write_text("a file")
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    line = one_error_line(result.stderr)
    assert re.search(expect, line), line
    assert result.stdout == ""


def test_violation_is_picklable_and_hashable() -> None:
    import pickle

    v = Violation(1, "safety", "round 0: ...")
    assert pickle.loads(pickle.dumps(v)) == v and len({v, v}) == 1
