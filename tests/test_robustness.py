"""Robustness claims of the Byzantine matrix (n = 10, f = 3, mlp, complete overlay): under each
gradient attack some robust rule ends close to the attack-free run, while the attacks bite
where the literature says they do. The table is printed (run with -s to see it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from phalanx.apps.matrix import (
    Cell,
    load_matrix,
    robustness,
    robustness_markdown,
    row_file,
    run_matrix,
    table,
)

MATRIX = Path(__file__).resolve().parent.parent / "scenarios" / "byzantine" / "matrix.yaml"


def rows_of(cells: list[Cell], rows_dir: Path) -> list[dict[str, Any]]:
    """The cells' rows: those this session's matrix tests (tests/test_byzantine_matrix.py)
    already wrote to `rows_dir`, and the rest run here. A cell is a pure function of its
    scenario, so a row read back is the row this test would compute; conftest.py orders this
    test last so that, in a whole-suite run, it mostly reads."""
    rows, missing = [], []
    for cell in cells:
        path = rows_dir / row_file(cell)
        if path.exists():
            rows.append(json.loads(path.read_text()))
        else:
            missing.append(cell)
    return rows + run_matrix(missing, workers=2) if missing else rows


def test_robust_rules_hold_and_attacks_bite(matrix_rows: Path) -> None:
    _, cells = load_matrix(MATRIX)
    cells = [c for c in cells if c.group == "gradient-n10" and c.topology == "complete"]
    df = table(rows_of(cells, matrix_rows))
    assert df.height == len(cells)
    print("\n".join(robustness_markdown(df)))
    r = {row["attack"]: row for row in robustness(df).iter_rows(named=True)}
    # some robust rule ends within 2 accuracy points of the attack-free run, for every attack
    # (with worker momentum: without it, plain and colluding sign flip and IPM stayed 2.9, 6.3
    # and 4.3 points below)
    for attack, row in r.items():
        assert row["best_gap"] <= 0.02, (attack, row)
    # the plain mean loses at least 10 points under sign flip and scaled gradients
    assert r["sign_flip"]["mean_lost"] >= 0.10 and r["scaled"]["mean_lost"] >= 0.10
    # ALIE or IPM costs at least one classic rule (Krum, median, trimmed mean) 4 points or more.
    # (IPM cost Krum 6.6 points when it was built for f = 3; since issue 17 it is built for
    # f = 2, as only n − f = 7 gradients are sure to arrive and Krum needs 2f + 3: 4.7 points,
    # with the trimmed mean's 4.6 under IPM ε = 100 next)
    assert max(r[a]["worst_classic_cost"] for a in ("alie", "ipm", "ipm100")) >= 0.04
    # every cell stayed safe and live
    assert df.filter(pl.col("failures").list.len() > 0).height == 0
