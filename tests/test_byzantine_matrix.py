"""The Byzantine-tolerance regression suite: every cell of scenarios/byzantine/matrix.yaml is
one test (pytest-xdist spreads them), and must be safe (one model per round among the honest
nodes, every commit counted), live (every round committed) and meet its `expect:` section.
The session writes runs/byzantine-matrix/matrix.{parquet,md} (see conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from phalanx.apps.matrix import Cell, load_matrix, run_cell
from phalanx.engine.byzantine import BEHAVIOURS

MATRIX = Path(__file__).resolve().parent.parent / "scenarios" / "byzantine" / "matrix.yaml"
SPEC, CELLS = load_matrix(MATRIX)


@pytest.mark.parametrize("cell", CELLS, ids=[c.id for c in CELLS])
def test_cell_is_safe_and_live(cell: Cell, matrix_rows: Path) -> None:
    row = run_cell(cell)
    matrix_rows.mkdir(parents=True, exist_ok=True)
    (matrix_rows / (cell.id.replace("/", "__") + ".json")).write_text(json.dumps(row))
    assert not row["safety_violations"], row
    assert not row["failures"], row["failures"]


def test_matrix_covers_every_behaviour_both_sizes_and_two_topologies() -> None:
    used = {SPEC.attacks[c.attack].behaviour for c in CELLS if c.attack != "none"}
    assert used == set(BEHAVIOURS) - {"honest"}
    sizes = {(c.scenario.nodes.count, c.scenario.f) for c in CELLS}
    assert {(10, 3), (31, 10)} <= sizes
    for n in (10, 31):
        assert len({c.topology for c in CELLS if c.scenario.nodes.count == n}) >= 2
    # every attacked cell has exactly f Byzantine nodes: the bound, not below it
    for c in CELLS:
        if c.attack != "none":
            assert len(c.scenario.byzantine_nodes()) == c.scenario.f
