"""The `phalanx` CLI: user errors are one `error:` line on stderr with exit code 2, no traceback.

A few tests run the real CLI as a subprocess (each costs an interpreter start and, for `run`, a
torch import); the broader table of bad files runs in-process through typer's CliRunner.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

import phalanx
from phalanx.apps.cli import app
from phalanx.scenario.schema import Scenario

SCENARIOS_DIR = Path(phalanx.__file__).resolve().parent / "scenarios"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

TINY = """\
name: tiny
seed: 3
nodes: {count: 4}
workload: {kind: linear, dim: 4, samples_per_node: 32, eval_samples: 64}
training: {rounds: 3}
"""

# (id, file content, regex the error line must match)
BAD_FILES = {
    "unknown_topology": (TINY + "topology: {kind: star}\n",
                         r"topology\.kind: unknown kind 'star'; one of complete, .*geo_clusters"),
    "negative_latency": (TINY + "links: {latency: -0.5}\n", r"links\.latency\b.*-0\.5"),
    "count_is_a_word": (TINY.replace("count: 4", "count: four"), r"nodes\.count\b.*'four'"),
    "unknown_field": (TINY + "links: {latncy: 0.1}\n", r"links\.latncy\b"),
    "byzantine_above_f": (TINY + "byzantine: [{nodes: [0, 1], behaviour: silent}]\n",
                          r"byzantine\b.*\bf=1\b"),
    "crash_node_99": (TINY + "faults: [{kind: crash, nodes: [99], at: 1.0}]\n",
                      r"faults\.0\b.*99"),
    "yaml_syntax": (TINY + "\tbroken: tab\n", r"line 6: invalid YAML"),
    "top_level_list": ("- name: tiny\n", r"expected a mapping"),
    "key_with_newline": (TINY + '"a\\nb": 1\n', r"a\\nb\b"),
    # n − f = 3 gradients are sure to arrive and Krum needs 2f + 3 = 5
    "aggregator_refused": (TINY.replace("{rounds: 3}", "{rounds: 3, aggregator: krum}"),
                           r"training\.aggregator: krum needs 2f \+ 3 = 5 inputs with f = 1, "
                           r"but only n − f = 3 are sure to arrive.*smallest n that works is 6"),
}


def one_error_line(stderr: str) -> str:
    """The single non-empty `error:` line of stderr (ANSI codes stripped)."""
    text = ANSI.sub("", stderr)
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    assert lines[0].startswith("error: ") and len(lines[0]) > len("error: "), lines[0]
    return lines[0]


def cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "TERM": "dumb"}
    env.pop("FORCE_COLOR", None)
    return subprocess.run([sys.executable, "-m", "phalanx.apps.cli", *map(str, args)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def invoke(*args: str | Path) -> Result:
    result = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "200"}).invoke(app, [str(a) for a in args])
    # anything but a clean exit is an exception that would print a traceback
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        repr(result.exception))
    return result


def write(tmp_path: Path, text: str, name: str = "scenario.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---- subprocess: the real entry point ------------------------------------------------------


def test_validate_quickstart_prints_every_section(tmp_path: Path) -> None:
    proc = cli("validate", SCENARIOS_DIR / "quickstart.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    echoed = yaml.safe_load(ANSI.sub("", proc.stdout))
    assert list(echoed) == list(Scenario.model_fields)
    for section in ("links", "training", "expect", "real"):
        assert isinstance(echoed[section], dict), section
    assert echoed["links"]["jitter_dist"] == "uniform"  # a default the file does not give
    assert echoed["real"]["deadline"] == 300.0
    assert echoed["training"]["rounds"] == 60


# `validate` keeps these cheap (no torch import); `run` is covered by the unbuildable-topology
# subprocess below and by the in-process table
@pytest.mark.parametrize("case", ["unknown_topology", "negative_latency", "yaml_syntax",
                                  "aggregator_refused"])
def test_bad_scenario_subprocess(tmp_path: Path, case: str) -> None:
    text, pattern = BAD_FILES[case]
    path = write(tmp_path, text)
    proc = cli("validate", path, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc.stderr)
    assert re.search(pattern, line), line
    assert str(path) in line
    assert proc.stdout == ""


def test_missing_file_subprocess(tmp_path: Path) -> None:
    proc = cli("validate", tmp_path / "nope.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert "nope.yaml" in line and "cannot read" in line


def test_unbuildable_topology_subprocess(tmp_path: Path) -> None:
    # random_regular with n*degree odd passes the schema but fails when the world is built
    path = write(tmp_path, TINY.replace("count: 4", "count: 5")
                 + "topology: {kind: random_regular, degree: 3}\n")
    proc = cli("run", path, "--out", tmp_path / "out", "-q", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc.stderr)
    assert "random_regular" in line and "degree" in line, line


def test_run_tiny_scenario_writes_outputs(tmp_path: Path) -> None:
    path = write(tmp_path, TINY + "expect: {rounds_committed_at_least: 3}\n")
    out = tmp_path / "out"
    proc = cli("run", path, "--out", out, "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for name in ("scenario.resolved.yaml", "events.parquet", "rounds.parquet", "summary.json",
                 "run.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    resolved = yaml.safe_load((out / "scenario.resolved.yaml").read_text())
    assert resolved["name"] == "tiny" and resolved["training"]["rounds"] == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scenario"] == "tiny"
    assert "expect failed" not in proc.stderr


def test_bench_sim_bad_nodes_subprocess(tmp_path: Path) -> None:
    proc = cli("bench", "sim", "--nodes", "abc", "--out", tmp_path / "b.json", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc.stderr)
    assert "--nodes" in line and "'abc'" in line
    assert not (tmp_path / "b.json").exists()


# ---- in-process: expectations, the table of bad files, both commands -------------


def test_run_impossible_expectation_exits_1(tmp_path: Path) -> None:
    path = write(tmp_path, TINY + "expect: {final_loss_below: 0.0, rounds_committed_at_least: 3}\n")
    result = invoke("run", path, "--out", tmp_path / "out", "-q")
    assert result.exit_code == 1, result.output
    text = ANSI.sub("", result.stderr)
    assert "Traceback" not in text
    failed = [line for line in text.splitlines() if "expect failed" in line]
    assert len(failed) == 1 and "final_loss_below" in failed[0], text
    assert "rounds_committed_at_least" not in text  # the expectation that holds is not listed
    assert (tmp_path / "out" / "summary.json").is_file()  # outputs are written all the same


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_scenario_in_process(tmp_path: Path, command: str, case: str) -> None:
    text, pattern = BAD_FILES[case]
    path = write(tmp_path, text)
    args = [command, path] + (["--out", tmp_path / "out", "-q"] if command == "run" else [])
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    line = one_error_line(result.stderr)
    assert re.search(pattern, line), line
    assert result.stdout == ""
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["validate", "run"])
def test_unreadable_files_in_process(tmp_path: Path, command: str) -> None:
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfename: tiny\n")
    for path in (tmp_path / "missing.yaml", tmp_path, binary):
        result = invoke(command, path)
        assert result.exit_code == 2, (path, result.output)
        assert "cannot read" in one_error_line(result.stderr)


def test_bench_sim_rejects_small_counts_in_process() -> None:
    result = invoke("bench", "sim", "--nodes", "2,100")
    assert result.exit_code == 2
    assert "at least 4" in one_error_line(result.stderr)


def test_validate_rejects_unbuildable_topology(tmp_path: Path) -> None:
    path = write(tmp_path, TINY.replace("count: 4", "count: 5")
                 + "topology: {kind: random_regular, degree: 3}\n")
    result = invoke("validate", path)
    assert result.exit_code == 2
    assert "degree" in one_error_line(result.stderr)


def test_run_errors_outside_the_schema_are_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, TINY)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cases = [(("run", path, "--out", blocker, "-q"), "is a file, not a folder"),
             (("run", path, "--seed", "-1", "-q"), "seed"),
             (("run", write(tmp_path, TINY + "real: {deadline: 0.2}\n", "r.yaml"), "--real",
               "-q", "--out", tmp_path / "o"), "real.deadline")]
    for args, words in cases:
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert words in one_error_line(result.stderr)


def test_summary_shows_a_long_reputation_list_by_its_lowest_scores() -> None:
    from phalanx.apps.cli import _summary_text

    scores = {str(p): 1.0 for p in range(1000)} | {"7": 0.0, "12": 0.5}
    text = _summary_text("reputation", scores)
    assert text.startswith("1000 peers; lowest: 7: 0.0, 12: 0.5, 0: 1.0") and "\n" not in text
    assert _summary_text("reputation", {"0": 1.0}) == "{'0': 1.0}"  # short lists in full
    assert _summary_text("wall_seconds", 1.23456) == "1.235"


# ---- --out, checked before any work; --version; help text ---------------------------------


@pytest.mark.parametrize("args", [
    ("run", "{quickstart}", "--out", "{out}"),
    ("sweep", "{quickstart}", "--seeds", "2", "--out", "{out}"),
    ("sweep", "{quickstart}", "--seeds", "2", "--save-failures", "{out}"),
    ("check", "{quickstart}", "--out", "{out}"),
    ("matrix", "{matrix}", "--out", "{out}"),
    ("matrix", "{matrix}", "--write", "{out}"),
    ("train", "{train}", "--out", "{out}"),
    ("bench", "sim", "--out", "{out}/sim.json"),
    ("bench", "consensus", "--out", "{out}/consensus.json"),
    ("calibrate", "{quickstart}", "--out", "{out}/c.yaml"),
], ids=lambda args: " ".join(a for a in args if not a.startswith(("{", "-"))))
@pytest.mark.parametrize("where", ["proc", "a_file"])
def test_unusable_out_fails_at_once_in_one_line(tmp_path: Path, args: tuple[str, ...],
                                                where: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = "/proc/phalanx-test" if where == "proc" else str(blocker)
    filled = [a.format(quickstart=SCENARIOS_DIR / "quickstart.yaml", out=out,
                       matrix=SCENARIOS_DIR / "byzantine" / "matrix.yaml",
                       train=SCENARIOS_DIR.parent / "configs" / "synthetic.yaml") for a in args]
    result = invoke(*filled)
    assert result.exit_code == 2, result.output
    line = one_error_line(result.stderr)
    option = next(a for a in args if a.startswith("--") and "{out}" in args[args.index(a) + 1])
    assert line.startswith(f"error: {option} {out}"), line
    assert ("cannot write" if where == "proc" else "is a file, not a folder") in line, line


def test_out_naming_a_folder_where_a_file_is_expected(tmp_path: Path) -> None:
    result = invoke("bench", "sim", "--out", tmp_path)
    assert result.exit_code == 2
    assert one_error_line(result.stderr) == f"error: --out {tmp_path}: is a folder, not a file"


def test_version_comes_from_the_package_metadata() -> None:
    from importlib.metadata import version

    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"phalanx {version('phalanx')}"


def all_help_screens() -> list[list[str]]:
    import typer

    group = typer.main.get_command(app)
    screens: list[list[str]] = [[]]
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        screens.append([name])
        screens += [[name, sub] for sub in getattr(command, "commands", {})]
    return screens


def test_help_screens_show_no_typer_artifacts() -> None:
    screens = all_help_screens()
    assert ["bench", "sim"] in screens and ["cluster", "up"] in screens
    for words in screens:
        result = invoke(*words, "--help")
        assert result.exit_code == 0, (words, result.output)
        text = ANSI.sub("", result.stdout)
        assert "<bool>" not in text and "{" not in text.split("Usage:")[1].splitlines()[0], (
            words, text)
    usage = ANSI.sub("", invoke("run", "--help").stdout)
    assert re.search(r"Usage: \S+ run \[OPTIONS\] SCENARIO\s*$", usage, re.MULTILINE), usage
    main_help = ANSI.sub("", invoke("--help").stdout)
    assert "--show-completion" in main_help
    # a docstring's hard line breaks are not kept: at 200 columns a sentence stays on one line
    assert "must keep its invariants and its `expect:` entries" in main_help


def test_node_without_real_says_what_to_run_instead() -> None:
    result = invoke("node")
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert "add --real" in line and "`phalanx run SCENARIO`" in line
