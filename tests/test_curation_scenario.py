"""The scenario's `curation:` section through the CLI: annotation nodes outside the members,
and one-line errors for what a user can get wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from phalanx.apps.cli import app
from phalanx.scenario.schema import parse_scenario

QUICKSTART = Path(__file__).resolve().parent.parent / "scenarios" / "quickstart.yaml"


def write(folder: Path, curation: dict[str, Any], count: int = 6) -> Path:
    data = yaml.safe_load(QUICKSTART.read_text())
    data["nodes"]["count"] = count
    data["training"]["rounds"] = 3
    data["curation"] = curation
    path = folder / "scenario.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def cli(*args: object) -> tuple[int, str]:
    result = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "200"}).invoke(
        app, [str(a) for a in args])
    return result.exit_code, result.output


def test_annotation_nodes_are_the_last_ids_and_not_members(tmp_path: Path) -> None:
    scenario = parse_scenario(yaml.safe_load(write(tmp_path, {"annotation_nodes": 2})
                                             .read_text()))
    assert scenario.members == (0, 1, 2, 3) and scenario.annotation_nodes == (4, 5)
    assert scenario.followers == (4, 5) and scenario.n == 4
    code, out = cli("validate", tmp_path / "scenario.yaml")
    assert code == 0 and "annotation_nodes: 2" in out


@pytest.mark.parametrize(("curation", "count", "wanted"), [
    ({"annotation_nodes": 6}, 6, "curation.annotation_nodes: 6 of 6 nodes leaves no member"),
    ({"annotation_nodes": True}, 6, "curation.annotation_nodes"),
    ({"tasks": {"kind": "file", "path": "tasks.txt"}}, 4, "ends in .jsonl or .csv"),
    ({"tasks": {"kind": "synthetic", "count": 5, "gold": 6}}, 4, "6 gold tasks but only 5"),
    ({"redundancy": 0}, 4, "curation.redundancy"),
    ({"batch": {"max_records": 10**6}}, 4, "curation.batch.max_records"),
])
def test_a_bad_section_is_refused_in_one_line(tmp_path: Path, curation: dict[str, Any],
                                              count: int, wanted: str) -> None:
    code, out = cli("validate", write(tmp_path, curation, count))
    assert code != 0 and wanted in out
    assert "Traceback" not in out


def test_a_bad_task_file_stops_the_run_with_its_rows_on_one_line(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"id": "a", "kind": "single_choice", "text": "x", "options": ["y"]}\n'
                     '{"id": "b"}\n')
    path = write(tmp_path, {"annotation_nodes": 2, "tasks": {"kind": "file",
                                                            "path": str(tasks)}})
    code, out = cli("run", path, "--out", tmp_path / "run")
    lines = [line for line in out.splitlines() if line.startswith("error")]
    assert code != 0 and len(lines) == 1
    assert "row 1: a single_choice task needs at least 2 options; row 2:" in lines[0]
    assert not (tmp_path / "run").exists()
    tasks.unlink()
    code, out = cli("run", path, "--out", tmp_path / "run")
    assert code != 0 and "cannot read" in out and "Traceback" not in out
