"""`phalanx matrix`: a tiny matrix end to end, its files, and its one-line errors."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from phalanx.apps.cli import app
from phalanx.scenario.schema import load_scenario

BASE = """
name: tiny
seed: 2
nodes: {count: 4}
workload: {kind: linear, dim: 4, samples_per_node: 32, eval_samples: 64}
training: {rounds: 3, lr: 0.1, momentum: 0.5, step_time: 0.02, round_timeout: 0.3,
           view_timeout: 1.0}
record: none
expect: {honest_hashes_equal: true, rounds_committed_at_least: 3}
"""

MATRIX = """
name: tiny-matrix
attacks:
  silent: {behaviour: silent}
  double_vote: {behaviour: double_vote, expect: {excluded: [3]}}
groups:
  - name: g
    base: base.yaml
    byzantine_nodes: [3]
    attacks: [none, silent, double_vote]
    aggregators: [mean, median]
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "m.yaml").write_text(MATRIX)
    return tmp_path


def test_tiny_matrix_runs_writes_its_table_and_replayable_cells(folder: Path) -> None:
    result = CliRunner().invoke(app, ["matrix", str(folder / "m.yaml"), "--workers", "1",
                                      "--out", str(folder / "out"), "--write",
                                      str(folder / "cells")])
    assert result.exit_code == 0, result.output
    df = pl.read_parquet(folder / "out" / "matrix.parquet")
    assert df.height == 6 and df["failures"].list.len().sum() == 0
    assert df.filter(pl.col("attack") == "double_vote")["excluded"].to_list() == [[3], [3]]
    assert "tiny-matrix" in (folder / "out" / "matrix.md").read_text()
    cells = sorted((folder / "cells").glob("*.yaml"))
    assert len(cells) == 6
    assert load_scenario(cells[0]).nodes.count == 4  # every cell is a scenario of its own


@pytest.mark.parametrize(("edit", "message"), [
    (("silent: {behaviour: silent}", "silent: {behaviour: quiet}"), "unknown behaviour 'quiet'"),
    (("attacks: [none, silent, double_vote]", "attacks: [none, loud]"), "attack 'loud'"),
    (("base: base.yaml", "base: nowhere.yaml"), "cannot read"),
    (("double_vote: {behaviour: double_vote, expect: {excluded: [3]}}",
      "double_vote: {faults: [{kind: crash}]}"), "attacks.double_vote: faults.0: crash: give exactly one of"),
    (("double_vote: {behaviour: double_vote, expect: {excluded: [3]}}",
      "double_vote: {behaviour: silent, faults: [{kind: crash, at_round: 1}]}"),
     "either 'behaviour'"),
])
def test_bad_matrix_is_one_line(folder: Path, edit: tuple[str, str], message: str) -> None:
    (folder / "m.yaml").write_text(MATRIX.replace(*edit))
    result = CliRunner().invoke(app, ["matrix", str(folder / "m.yaml"), "--workers", "1"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output


def test_a_failing_cell_exits_1(folder: Path) -> None:
    (folder / "m.yaml").write_text(MATRIX.replace("expect: {excluded: [3]}",
                                                  "expect: {excluded: [2]}"))
    result = CliRunner().invoke(app, ["matrix", str(folder / "m.yaml"), "--workers", "1",
                                      "--out", str(folder / "out")])
    assert result.exit_code == 1
    assert "excluded" in (folder / "out" / "matrix.md").read_text()


def test_refused_cells_are_reported_not_run_and_not_failed(folder: Path) -> None:
    """At n = 4 only n − f = 3 gradients are sure to arrive and Krum needs 2f + 3 = 5: its
    cells are refused with validate's line, beside the crash cells that run."""
    (folder / "m.yaml").write_text(MATRIX.replace("aggregators: [mean, median]",
                                                  "aggregators: [mean, krum]")
                                   .replace("double_vote: {behaviour: double_vote, "
                                            "expect: {excluded: [3]}}",
                                            "crash: {faults: [{kind: crash, at_round: 1}]}")
                                   .replace("[none, silent, double_vote]",
                                            "[none, silent, crash]"))
    result = CliRunner().invoke(app, ["matrix", str(folder / "m.yaml"), "--workers", "1",
                                      "--out", str(folder / "out"), "--write",
                                      str(folder / "cells")])
    assert result.exit_code == 0, result.output
    df = pl.read_parquet(folder / "out" / "matrix.parquet")
    refused = df.filter(pl.col("refused").is_not_null())
    assert sorted(refused["attack"].to_list()) == ["crash", "none", "silent"]
    assert set(refused["aggregator"].to_list()) == {"krum"}
    assert all(r.startswith("training.aggregator: krum needs 2f + 3 = 5 inputs")
               for r in refused["refused"].to_list())
    ran = df.filter(pl.col("refused").is_null())
    assert ran.height == 3 and ran["rounds_committed"].to_list() == [3, 3, 3]
    text = (folder / "out" / "matrix.md").read_text()
    assert "3 refused up front" in text and "g/complete/crash/krum: training.aggregator" in text
    assert len(list((folder / "cells").glob("*.yaml"))) == 3  # the refused have no scenario
    crash = load_scenario(next((folder / "cells").glob("*crash*.yaml")))
    assert [(f.kind, f.nodes) for f in crash.faults] == [("crash", [3])]  # the group's node


HETERO_BASE = """
name: hetero
seed: 1
nodes: {count: 4}
workload: {kind: mlp, samples_per_node: 64, eval_samples: 200}
training: {rounds: 4, lr: 0.1, step_time: 0.02, round_timeout: 0.3, view_timeout: 1.0}
record: none
node_logs: false
"""

HETERO = """
name: hetero-matrix
attacks:
  sign_flip: {behaviour: sign_flip, params: {scale: 50}}
groups:
  - name: h
    base: base.yaml
    byzantine_nodes: [3]
    splits: [iid, {kind: dirichlet, alpha: 0.1}]
    seeds: [1, 2]
    attacks: [none, sign_flip]
    aggregators: [mean, median]
"""


def test_heterogeneity_and_seeds_are_dimensions_and_the_report_averages_seeds(
        tmp_path: Path) -> None:
    from phalanx.apps.matrix import load_matrix, markdown, run_matrix, table

    (tmp_path / "base.yaml").write_text(HETERO_BASE)
    (tmp_path / "m.yaml").write_text(HETERO)
    _, cells = load_matrix(tmp_path / "m.yaml")
    assert len(cells) == 2 * 2 * 2 * 2
    ids = {c.id for c in cells}
    assert "h/complete/dirichlet(alpha=0.1)/sign_flip/median/seed=2" in ids
    cell = next(c for c in cells if c.split == "dirichlet(alpha=0.1)" and c.seed == 2)
    assert cell.scenario is not None and cell.scenario.seed == 2
    assert cell.scenario.workload.split.kind == "dirichlet"  # type: ignore[union-attr]
    df = table(run_matrix(cells, workers=2))
    assert len(df) == 8 and set(df["seeds"].to_list()) == {2}
    row = df.filter((pl.col("split") == "iid") & (pl.col("attack") == "sign_flip")
                    & (pl.col("aggregator") == "median")).row(0, named=True)
    assert row["lowest_accuracy"] <= row["final_accuracy"]
    # the mean under the same attack is the reference of the ↓ flag
    mean = df.filter((pl.col("split") == "iid") & (pl.col("attack") == "sign_flip")
                     & (pl.col("aggregator") == "mean"))["final_accuracy"][0]
    assert row["mean_accuracy"] == mean
    assert row["below_mean"] == (mean - row["final_accuracy"] > 0.01)
    text = markdown(df, "hetero-matrix")
    assert "## h, complete, dirichlet(alpha=0.1) (n=4, f=1, mean of 2 seeds)" in text
