"""The digits workload (engine/workloads/digits.py): scikit-learn's bundled 8×8 digits, a fixed
held-out part, the training part shared by the scenario's split, and a run that learns."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

import phalanx
from phalanx.apps.results import label_histograms
from phalanx.engine.rng import RngStreams
from phalanx.engine.workloads import make_workload
from phalanx.engine.workloads.digits import holdout_indices, load_digits
from phalanx.scenario.build import workload_for
from phalanx.scenario.schema import ScenarioError, parse_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


def test_the_data_is_read_from_the_wheel_without_importing_sklearn() -> None:
    imported = "sklearn" in sys.modules
    x, y = load_digits()
    assert x.shape == (1797, 64) and x.dtype == np.float32 and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0  # pixels 0..16 scaled to [0, 1]
    assert np.bincount(y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert imported or "sklearn" not in sys.modules


def test_the_held_out_part_is_stratified_and_the_same_for_every_seed() -> None:
    _, y = load_digits()
    train, test = holdout_indices(y)
    assert len(test) == 359 and len(train) == 1438
    assert np.intersect1d(train, test).size == 0 and len(np.union1d(train, test)) == 1797
    assert np.all(np.abs(np.bincount(y[test]) - 0.2 * np.bincount(y)) <= 0.5)
    a = make_workload("digits", {}, n_nodes=4, rngs=RngStreams(1))
    b = make_workload("digits", {}, n_nodes=4, rngs=RngStreams(2))
    assert a.eval_y.tolist() == b.eval_y.tolist()  # type: ignore[attr-defined]


def test_the_training_part_is_shared_by_the_split() -> None:
    split = {"kind": "dirichlet", "alpha": 0.1}
    w = make_workload("digits", {"split": split}, n_nodes=10, rngs=RngStreams(1))
    hists = label_histograms(w, 10)
    assert sum(map(sum, hists.values())) == 1438 and all(map(sum, hists.values()))
    again = make_workload("digits", {"split": split}, n_nodes=10, rngs=RngStreams(1))
    assert label_histograms(again, 10) == hists
    # Dirichlet(0.1): most of each node's data is one or two digits; IID: every digit everywhere
    assert np.mean([max(h) / sum(h) for h in hists.values()]) > 0.4
    iid = label_histograms(make_workload("digits", {}, n_nodes=10, rngs=RngStreams(1)), 10)
    assert all(min(h) > 0 for h in iid.values())
    few = make_workload("digits", {"samples_per_node": 50}, n_nodes=4, rngs=RngStreams(1))
    assert [sum(h) for h in label_histograms(few, 4).values()] == [50] * 4


def test_more_data_than_the_training_part_is_one_error_line() -> None:
    s = parse_scenario({"name": "big", "nodes": {"count": 30}, "training": {"rounds": 1},
                        "workload": {"kind": "digits", "samples_per_node": 50}})
    with pytest.raises(ScenarioError, match=r"^big: workload: digits: 30 nodes × "
                                            r"samples_per_node 50 exceeds the 1438 training "
                                            r"images \(leave samples_per_node out"):
        workload_for(s, RngStreams(s.seed))


def test_a_digits_run_learns_on_dirichlet_shards_and_reports_label_histograms(
        tmp_path: Path) -> None:
    data = yaml.safe_load((SCENARIOS / "digits.yaml").read_text())
    data["training"]["rounds"] = 60
    data["expect"] = {"honest_hashes_equal": True, "final_accuracy_above": 0.5}
    result = phalanx.run(parse_scenario(data), out=tmp_path)
    assert result.ok, result.failures
    hists = result.summary["label_histograms"]
    assert sorted(hists, key=int) == [str(i) for i in range(10)]
    assert sum(map(sum, hists.values())) == 1438
    rounds = pl.read_parquet(tmp_path / "rounds.parquet")
    assert rounds.schema["label_histogram"] == pl.List(pl.Int64)
    per_node = rounds.group_by("node").agg(pl.col("label_histogram").first()).sort("node")
    assert per_node["label_histogram"].to_list() == [hists[str(i)] for i in range(10)]
    assert '"label_histograms"' in (tmp_path / "summary.json").read_text()
