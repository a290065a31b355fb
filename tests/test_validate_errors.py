"""`phalanx validate` reports every mistake of a scenario at once: one line each, the field's
path first, exit code 2; a true/false is never taken as a number, and an unknown key is named
with the field it most likely stands for."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from phalanx.apps.cli import app

GOOD = """\
name: tiny
seed: 3
nodes: {count: 4}
workload: {kind: linear, dim: 4, samples_per_node: 32, eval_samples: 64}
training: {rounds: 3}
"""

# five distinct mistakes, in five parts of the file
FIVE = """\
name: tiny
nodes: {count: true}
links: {latncy: 0.01}
topology: {kind: ring, degree: 3}
workload: {kind: linear, dim: 0}
training: {rounds: 3, lr: yes}
"""


def validate(tmp_path: Path, text: str) -> tuple[int, list[str]]:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    result = CliRunner().invoke(app, ["validate", str(path)])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.output
    return result.exit_code, lines


def fields(lines: list[str]) -> list[str]:
    """The field path each `error: <file>: <path>: ...` line names."""
    found = [re.match(r"error: \S+s\.yaml: ([\w.]+): ", line) for line in lines]
    assert all(found), lines
    return [m.group(1) for m in found if m]


def test_five_mistakes_are_five_lines_and_exit_code_2(tmp_path: Path) -> None:
    code, lines = validate(tmp_path, FIVE)
    assert code == 2
    assert len(lines) == 5, lines
    assert sorted(fields(lines)) == sorted(["nodes.count", "links.latncy", "topology.ring.degree",
                                            "workload.linear.dim", "training.lr"])
    assert not any("more)" in line for line in lines)  # nothing cut to the first error


def test_a_good_file_still_validates(tmp_path: Path) -> None:
    code, lines = validate(tmp_path, GOOD)
    assert (code, lines) == (0, [])


@pytest.mark.parametrize(("text", "field"), [
    (GOOD.replace("count: 4", "count: true"), "nodes.count"),
    (GOOD.replace("{rounds: 3}", "{rounds: 3, lr: false}"), "training.lr"),
    (GOOD.replace("seed: 3", "seed: true"), "seed"),
    (GOOD.replace("count: 4", "count: 4, speeds: {0: true}"), "nodes.speeds.0"),
    (GOOD + "byzantine: [{nodes: [true], behaviour: silent}]\n", "byzantine.0.nodes.0"),
    (GOOD.replace("{rounds: 3}", "{rounds: 3, aggregator: {kind: mean, params: {x: true}}}"),
     "training.aggregator.params.x"),
], ids=["count", "lr", "seed", "speeds", "byzantine_nodes", "aggregator_params"])
def test_true_or_false_is_never_a_number(tmp_path: Path, text: str, field: str) -> None:
    code, lines = validate(tmp_path, text)
    assert code == 2
    assert len(lines) == 1, lines
    assert fields(lines) == [field]
    assert re.search(r"expected a number, got (true|false)$", lines[0]), lines[0]


def test_flags_stay_flags(tmp_path: Path) -> None:
    code, _ = validate(tmp_path, GOOD + "unsafe: true\nexpect: {honest_hashes_equal: true}\n")
    assert code == 0


@pytest.mark.parametrize(("text", "line"), [
    (GOOD + "byzantine: [{nodes: [1], attack: silent}]\n",
     "byzantine.0.attack: unknown field; did you mean 'behaviour'?"),
    (GOOD + "links: {latncy: 0.01}\n", "links.latncy: unknown field; did you mean 'latency'?"),
    (GOOD + "faults: [{kind: crash, nodes: [1], at: 1.0, keepdisk: false}]\n",
     "faults.0.crash.keepdisk: unknown field; did you mean 'keep_disk'?"),
    (GOOD + "attack: [{nodes: [1], behaviour: silent}]\n",
     "attack: unknown field; did you mean 'byzantine'?"),
    (GOOD + "colour: red\n", "colour: unknown field; allowed: name, description, seed, nodes"),
    (GOOD + "topology: {kind: rign}\n", "topology.kind: unknown kind 'rign'; did you mean 'ring'"),
    (GOOD + "topology: {kind: star}\n",
     "topology.kind: unknown kind 'star'; one of complete, ring, random_regular,"),
    (GOOD.replace("training: {rounds: 3}\n", ""), "training: required, and missing"),
], ids=["attack", "typo", "in_a_tagged_list", "top_level_attack", "no_close_name",
        "kind_typo", "unknown_kind", "missing_section"])
def test_unknown_key_names_what_was_meant(tmp_path: Path, text: str, line: str) -> None:
    code, lines = validate(tmp_path, text)
    assert code == 2
    # one line: `attack:` is not also reported as "behaviour: Field required"
    assert len(lines) == 1 and line in lines[0], lines


def test_a_huge_value_is_not_echoed(tmp_path: Path) -> None:
    code, lines = validate(tmp_path, GOOD.replace("count: 4", "count: " + "9x" * 50_000))
    assert code == 2 and len(lines) == 1
    assert fields(lines) == ["nodes.count"] and len(lines[0]) < 300, lines[0][:400]
