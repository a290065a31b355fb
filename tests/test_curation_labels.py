"""Label aggregation through its public API: order-free to the bit, right on a simulated
crowd, and clear about bad input."""

from __future__ import annotations

import random

import numpy as np
import pytest

from phalanx.engine.curation.crowd import CrowdError, CrowdSpec, SimulatedCrowd
from phalanx.engine.curation.labels import (
    GLAD,
    Annotations,
    BradleyTerry,
    Comparisons,
    DawidSkene,
    LabelError,
    MajorityVote,
    OneCoinDawidSkene,
)

METHODS = (MajorityVote, DawidSkene, OneCoinDawidSkene, GLAD)


@pytest.fixture(scope="module")
def crowd() -> SimulatedCrowd:
    return SimulatedCrowd(CrowdSpec(seed=0))


def accuracy(labels: dict, crowd: SimulatedCrowd) -> float:
    return float(np.mean([labels[t] == crowd.truth[t] for t in crowd.tasks]))


@pytest.mark.parametrize("method", METHODS)
def test_arrival_order_does_not_change_a_bit(method, crowd: SimulatedCrowd) -> None:
    records = [(x.task, x.worker, x.label) for x in crowd.label(5)]
    shuffled = records[:]
    random.Random(7).shuffle(shuffled)
    a = method().fit(Annotations.from_records(records))
    b = method().fit(Annotations.from_records(shuffled))
    assert a.probas_.matrix.tobytes() == b.probas_.matrix.tobytes()
    assert a.labels_ == b.labels_ and a.skills_ == b.skills_


def test_majority_vote_breaks_ties_by_class_order_and_can_weigh_skill() -> None:
    data = Annotations.from_records([("t", "a", "dog"), ("t", "b", "cat")])
    assert MajorityVote().fit_predict(data) == {"t": "cat"}
    assert MajorityVote().fit(data, skills={"a": 2.0}).labels_ == {"t": "dog"}
    assert MajorityVote().fit(data).probas_["t"] == {"cat": 0.5, "dog": 0.5}
    with pytest.raises(LabelError, match="skill of worker 'a'"):
        MajorityVote().fit(data, skills={"a": -1.0})


@pytest.mark.parametrize("redundancy", [3, 5, 15])
def test_dawid_skene_beats_majority_vote_with_spammers_and_adversaries(
        crowd: SimulatedCrowd, redundancy: int) -> None:
    data = crowd.annotations(redundancy)
    ds, mv = DawidSkene().fit(data), MajorityVote().fit(data)
    assert accuracy(ds.labels_, crowd) > accuracy(mv.labels_, crowd) + 0.15
    assert ds.probas_.matrix.sum(axis=1) == pytest.approx(1.0)
    assert ds.errors_.shape == (15, 3, 3) and ds.errors_.sum(axis=2) == pytest.approx(1.0)


def test_skill_estimates_rank_honest_workers_above_spammers(crowd: SimulatedCrowd) -> None:
    data = crowd.annotations(5)
    kind = {a.id: a.kind for a in crowd.annotators}
    for method in (DawidSkene, OneCoinDawidSkene, GLAD):
        skills = method().fit(data).skills_
        honest = min(s for w, s in skills.items() if kind[w] == "honest")
        bad = [s for w, s in skills.items() if kind[w] in ("random", "permuter", "colluder")]
        assert max(bad) < honest, method.__name__


def test_glad_estimates_adversaries_as_worse_than_random(crowd: SimulatedCrowd) -> None:
    glad = GLAD().fit(crowd.annotations(15))
    kind = {a.id: a.kind for a in crowd.annotators}
    assert all(glad.alphas_[w] < 0 for w, k in kind.items() if k == "permuter")
    assert all(b > 0 for b in glad.betas_.values())


def test_annotations_are_canonical_and_refuse_bad_records() -> None:
    data = Annotations.from_records([("t2", "b", 1), ("t1", "b", 0), ("t1", "a", 0),
                                     ("t1", "a", 0)])  # an exact duplicate counts once
    assert data.records() == [("t1", "a", 0), ("t1", "b", 0), ("t2", "b", 1)]
    with pytest.raises(LabelError, match="worker 'a' labelled task 't1' twice"):
        Annotations.from_records([("t1", "a", 0), ("t1", "a", 1)])
    with pytest.raises(LabelError, match="task must be a string or an integer; got True"):
        Annotations.from_records([(True, "a", 0)])
    with pytest.raises(LabelError, match="label 7 is not one of the classes"):
        Annotations.from_records([("t", "a", 7)], classes=[0, 1])
    with pytest.raises(LabelError, match=r"record 0 must be \(task, worker, label\)"):
        Annotations.from_records([("t", "a")])
    with pytest.raises(LabelError, match="no annotations"):
        DawidSkene().fit(Annotations.from_records([]))
    with pytest.raises(LabelError, match="n_iter must be an integer >= 1"):
        DawidSkene(n_iter=0).fit(data)


def test_a_class_nobody_chose_still_gets_a_probability() -> None:
    data = Annotations.from_records([("t", "a", "x"), ("t", "b", "x")], classes=["x", "y", "z"])
    probas = DawidSkene().fit(data).probas_["t"]
    assert list(probas) == ["x", "y", "z"] and probas["x"] > 0.99


def test_bradley_terry_recovers_the_order_of_hidden_strengths() -> None:
    rng = np.random.default_rng(3)
    strength = {f"item{i}": 2.0 ** i for i in range(6)}
    items = list(strength)
    records = []
    for _ in range(600):
        a, b = rng.choice(items, size=2, replace=False)
        p = strength[a] / (strength[a] + strength[b])
        records.append((str(a), str(b), str(a) if rng.random() < p else str(b)))
    bt = BradleyTerry().fit(Comparisons.from_records(records))
    assert bt.ranking_ == items[::-1]
    assert sum(bt.scores_.values()) == pytest.approx(1.0)
    shuffled = records[:]
    random.Random(1).shuffle(shuffled)
    assert BradleyTerry().fit(Comparisons.from_records(shuffled)).scores_ == bt.scores_


def test_bradley_terry_keeps_unbeaten_items_finite_and_refuses_bad_comparisons() -> None:
    bt = BradleyTerry().fit(Comparisons.from_records([("a", "b", "a"), ("a", "b", "a")]))
    assert 0 < bt.scores_["b"] < bt.scores_["a"] < 1
    with pytest.raises(LabelError, match="compares 'a' with itself"):
        Comparisons.from_records([("a", "a", "a")])
    with pytest.raises(LabelError, match="winner 'c' is neither 'a' nor 'b'"):
        Comparisons.from_records([("a", "b", "c")])


def test_the_simulated_crowd_is_seeded_and_assigns_each_annotator_once(
        crowd: SimulatedCrowd) -> None:
    labels = crowd.label(5)
    assert labels == SimulatedCrowd(CrowdSpec(seed=0)).label(5)
    assert labels != SimulatedCrowd(CrowdSpec(seed=1)).label(5)
    pairs = [(x.task, x.worker) for x in labels]
    assert len(pairs) == len(set(pairs)) == 5 * 200
    kind = {a.id: a.kind for a in crowd.annotators}
    constant = {x.label for x in labels if kind[x.worker] == "constant"}
    assert len(constant) == 1
    colluding: dict[str, set[int]] = {}
    for x in crowd.label(15):
        if kind[x.worker] == "colluder":
            assert x.label != crowd.truth[x.task]
            colluding.setdefault(x.task, set()).add(x.label)
    assert all(len(v) == 1 for v in colluding.values())
    with pytest.raises(CrowdError, match="redundancy must be an integer from 1 to 15"):
        crowd.label(16)
    with pytest.raises(CrowdError, match=r"CrowdSpec.bias must be in \[0, 1\]"):
        CrowdSpec(bias=2.0)
