"""Data splits (engine/workloads/splits.py): IID, Dirichlet, extreme and gamma-similarity shards,
as the scenario names them, and the default that keeps earlier runs' draws."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

import phalanx
from phalanx.engine.rng import RngStreams
from phalanx.engine.workloads import make_workload
from phalanx.engine.workloads.splits import (
    DirichletSplit,
    ExtremeSplit,
    GammaSimilaritySplit,
    IidSplit,
    Split,
    make_split,
)
from phalanx.scenario.schema import ScenarioError, parse_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
CLASSES = 10
LABELS = np.random.default_rng(0).integers(0, CLASSES, 2000)
SPLITS: list[Split] = [IidSplit(), DirichletSplit(0.1), DirichletSplit(5.0), ExtremeSplit(),
                       GammaSimilaritySplit(0.3)]


def rng(seed: int = 1) -> np.random.Generator:
    return RngStreams(seed).stream("split")


def mean_entropy(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean over the nodes of the entropy (nats) of the node's label distribution."""
    out = []
    for part in parts:
        p = np.bincount(labels[part], minlength=CLASSES) / len(part)
        p = p[p > 0]
        out.append(float(-(p * np.log(p)).sum()))
    return float(np.mean(out))


@pytest.mark.parametrize("split", SPLITS, ids=repr)
def test_a_split_partitions_the_pool_and_is_a_pure_function_of_the_seed(split: Split) -> None:
    parts = split(LABELS, 7, rng())
    assert len(parts) == 7 and all(len(p) for p in parts)
    joined = np.concatenate(parts)
    assert np.array_equal(np.sort(joined), np.arange(len(LABELS)))  # disjoint, covering
    assert all(p.dtype == np.int64 and np.array_equal(p, np.sort(p)) for p in parts)
    again = split(LABELS, 7, rng())
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = split(LABELS, 7, rng(2))
    assert any(not np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_small_alpha_is_more_skewed_than_large_alpha() -> None:
    entropy = {alpha: np.mean([mean_entropy(LABELS, DirichletSplit(alpha)(LABELS, 10, rng(s)))
                               for s in range(5)]) for alpha in (0.1, 1.0, 100.0)}
    iid = mean_entropy(LABELS, IidSplit()(LABELS, 10, rng()))
    assert entropy[0.1] < entropy[1.0] < entropy[100.0]
    assert min(iid, entropy[100.0]) > 0.97 * np.log(CLASSES)  # large alpha: nearly IID
    assert entropy[0.1] < 0.5 * np.log(CLASSES)


def test_extreme_gives_each_node_few_classes_and_gamma_spans_iid_to_extreme() -> None:
    parts = ExtremeSplit()(LABELS, 10, rng())
    assert max(len(np.unique(LABELS[p])) for p in parts) <= 2
    assert [len(p) for p in parts] == [200] * 10
    # gamma 0 is the extreme split, gamma 1 the IID one (same draws from the same stream)
    for gamma, same in ((0.0, ExtremeSplit()), (1.0, IidSplit())):
        got = GammaSimilaritySplit(gamma)(LABELS, 10, rng())
        assert all(np.array_equal(a, b) for a, b in zip(got, same(LABELS, 10, rng()),
                                                        strict=True))
    half = mean_entropy(LABELS, GammaSimilaritySplit(0.5)(LABELS, 10, rng()))
    assert mean_entropy(LABELS, parts) < half < mean_entropy(LABELS, IidSplit()(LABELS, 10, rng()))


def test_no_node_is_left_empty_and_degenerate_cases_are_refused() -> None:
    labels = np.arange(30) % 3
    for seed in range(20):  # Dirichlet(0.01) over 25 nodes leaves most of them nothing
        parts = DirichletSplit(0.01)(labels, 25, rng(seed))
        assert min(len(p) for p in parts) == 1
        assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(30))
    with pytest.raises(ValueError, match="cannot give each of 31 nodes a sample from a pool "
                                         "of 30"):
        IidSplit()(labels, 31, rng())
    with pytest.raises(ValueError, match="alpha must be a positive number"):
        DirichletSplit(0.0)
    with pytest.raises(ValueError, match=r"gamma must be in \[0, 1\]"):
        GammaSimilaritySplit(1.5)
    with pytest.raises(ValueError, match="unknown split 'zipf'; known: dirichlet, extreme"):
        make_split({"kind": "zipf"})
    assert make_split({"kind": "dirichlet", "alpha": 0.3}) == DirichletSplit(0.3)
    assert make_split("extreme") == ExtremeSplit() and make_split(None) == IidSplit()


def test_mlp_shares_one_pool_under_a_non_iid_split() -> None:
    w = make_workload("mlp", {"split": {"kind": "extreme"}, "samples_per_node": 100},
                      n_nodes=4, rngs=RngStreams(3))
    hists = [w.label_histogram(node) for node in range(4)]
    assert all(sum(h) == 100 for h in hists)
    assert all(sum(c > 0 for c in h) <= 2 for h in hists)  # 4 classes cut in 4: one or two each
    iid = make_workload("mlp", {"samples_per_node": 100}, n_nodes=4, rngs=RngStreams(3))
    assert all(sum(c > 0 for c in iid.label_histogram(node)) == 4 for node in range(4))
    assert make_workload("linear", {}, 4, RngStreams(3)).label_histogram(0) is None


BASE = {"name": "t", "nodes": {"count": 4}, "training": {"rounds": 2}}


@pytest.mark.parametrize(("split", "message"), [
    ({"kind": "dirichlet", "alpha": 0}, r"^scenario: workload\.mlp\.split\.dirichlet\.alpha: "
                                        r"Input should be greater than 0 \(got 0\)$"),
    ({"kind": "zipf"}, r"^scenario: workload\.mlp\.split\.kind: unknown kind 'zipf'; one of "
                       r"iid, dirichlet, extreme, gamma_similarity$"),
    ({"kind": "extreme", "alpha": 1}, r"^scenario: workload\.mlp\.split\.extreme\.alpha: "
                                      r"unknown field; allowed: kind$"),
    ({"kind": "gamma_similarity", "gamma": 1.5}, r"gamma: Input should be less than or equal "
                                                 r"to 1 \(got 1\.5\)$"),
    ("zipf", r"^scenario: workload\.mlp\.split\.kind: unknown kind 'zipf'"),
])
def test_bad_split_fields_are_one_error_line(split: object, message: str) -> None:
    with pytest.raises(ScenarioError, match=message) as info:
        parse_scenario({**BASE, "workload": {"kind": "mlp", "split": split}})
    assert "\n" not in str(info.value)


def test_a_split_is_named_in_the_scenario_and_excludes_skew() -> None:
    s = parse_scenario({**BASE, "workload": {"kind": "mlp", "split": "extreme"}})
    assert s.workload.model_dump()["split"] == {"kind": "extreme"}
    s = parse_scenario({**BASE, "workload": {"kind": "digits",
                                             "split": {"kind": "dirichlet", "alpha": 0.1}}})
    assert s.workload.model_dump()["split"] == {"kind": "dirichlet", "alpha": 0.1}
    assert parse_scenario({**BASE, "workload": {"kind": "mlp"}}).workload.model_dump()[
        "split"] == {"kind": "iid"}
    with pytest.raises(ScenarioError, match=r"^scenario: workload\.mlp: skew \(0\.5\) and split "
                                            r"\(dirichlet\) both make the shards non-IID"):
        parse_scenario({**BASE, "workload": {"kind": "mlp", "skew": 0.5,
                                             "split": {"kind": "dirichlet"}}})


# final model hashes before splits existed (the same with `split` left out, or `split: iid`)
QUICKSTART_HASH = "faff1694d31f3f127e0f4df328f7dfcfbb3601d89046f3562957858b44a55ed1"
SKEW_HASH = "0646d6fdcafcdd983ff2609ed16243f275b2d08d7975bb24adcc11e5dafaa665"


def test_the_default_split_keeps_the_earlier_draws() -> None:
    quickstart = phalanx.run(SCENARIOS / "quickstart.yaml")
    assert quickstart.summary["final_model_hash"] == QUICKSTART_HASH
    data = yaml.safe_load((SCENARIOS / "quickstart.yaml").read_text())
    # the older `skew` knob, unchanged: 20 rounds with 60% of each shard from its home class
    data["workload"] = {**data["workload"], "skew": 0.6, "split": {"kind": "iid"}}
    data["training"]["rounds"], data["expect"] = 20, {}
    result = phalanx.run(parse_scenario(data))
    assert result.summary["final_model_hash"] == SKEW_HASH
    assert [h[i] for i, h in enumerate(result.summary["label_histograms"].values())] == [307] * 4
