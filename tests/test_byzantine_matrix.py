"""The Byzantine-tolerance regression suite: every cell of scenarios/byzantine/matrix.yaml is
one test (pytest-xdist spreads them), and must be safe (one model per round among the honest
nodes, every commit counted), live (every round committed) and meet its `expect:` section, or
have been refused up front (its rule needs more gradients than the n − f sure to arrive):
never an endless view change. The session writes runs/byzantine-matrix/matrix.{parquet,md}
(see conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from phalanx.apps.matrix import Cell, load_matrix, row_file, run_cell
from phalanx.engine.aggregate import AGGREGATORS
from phalanx.engine.byzantine import BEHAVIOURS

MATRIX = Path(__file__).resolve().parent.parent / "scenarios" / "byzantine" / "matrix.yaml"
SPEC, CELLS = load_matrix(MATRIX)


@pytest.mark.parametrize("cell", CELLS, ids=[c.id for c in CELLS])
def test_cell_is_safe_and_live(cell: Cell, matrix_rows: Path) -> None:
    row = run_cell(cell)
    matrix_rows.mkdir(parents=True, exist_ok=True)
    # written whole, then renamed: tests/test_robustness.py may read it from another worker
    part = matrix_rows / (row_file(cell) + ".part")
    part.write_text(json.dumps(row))
    part.replace(matrix_rows / row_file(cell))
    assert not row["safety_violations"], row
    assert not row["failures"], row["failures"]
    if cell.scenario is None:  # refused up front, with validate's one line
        assert row["refused"] and "\n" not in row["refused"], row
        assert "are sure to arrive" in row["refused"], row
    else:  # every round, not a run that changes views until its time runs out
        assert row["rounds_committed"] >= cell.scenario.training.rounds, row


def test_matrix_covers_every_behaviour_both_sizes_and_two_topologies() -> None:
    used = {SPEC.attacks[c.attack].behaviour for c in CELLS if c.attack != "none"}
    assert used - {None} == set(BEHAVIOURS) - {"honest"}
    sizes = {(c.n, c.f) for c in CELLS}
    assert {(10, 3), (31, 10)} <= sizes
    for n in (10, 31):
        assert len({c.topology for c in CELLS if c.n == n}) >= 2
    # every attacked cell has exactly f Byzantine (or crashed) nodes: the bound, not below it
    for c in CELLS:
        if c.attack != "none" and c.scenario is not None:
            faulty = c.scenario.byzantine_nodes() | {
                i for fault in c.scenario.faults if fault.kind == "crash" for i in fault.nodes}
            assert len(faulty) == c.scenario.f, c.id


def test_every_rule_meets_silence_equivocation_and_crashes_at_both_sizes() -> None:
    """Each built-in rule is paired with the attacks that leave only n − f gradients; the
    rules that need more at the scenario's f (Krum, Multi-Krum, bucketing s = 2) are refused,
    and their f-lowered variants run."""
    for n in (10, 31):
        cells = [c for c in CELLS if c.n == n and c.attack in ("silent", "equivocate", "crash")]
        rules = {c.aggregator.split(",")[0].split("+")[0] for c in cells}
        assert rules == set(AGGREGATORS), (n, rules)
        refused = {c.aggregator for c in cells if c.scenario is None}
        assert {"krum", "multi_krum", "median+bucketing(s=2)"} <= refused, refused
        ran = {c.aggregator for c in cells if c.scenario is not None}
        assert any(a.startswith("krum,f=") for a in ran) and any(
            a.startswith("median+bucketing(s=2),f=") for a in ran), ran
