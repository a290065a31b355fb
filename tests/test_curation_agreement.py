"""Agreement metrics against published worked examples and scikit-learn."""

from __future__ import annotations

import random

import pytest
from sklearn.metrics import cohen_kappa_score

from phalanx.engine.curation.agreement import (
    AgreementError,
    fleiss_kappa,
    krippendorff_alpha,
    pairwise_cohen_kappa,
)
from phalanx.engine.curation.labels import Annotations, LabelError

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 coders,
# 12 units, values 1-5, "." missing. Published: nominal 0.743, ordinal 0.815, interval 0.849.
KRIPPENDORFF_2011 = {
    "A": "1 2 3 3 2 1 4 1 2 . . .",
    "B": "1 2 3 3 2 2 4 1 2 5 . 3",
    "C": ". 3 3 3 2 3 4 2 2 5 1 .",
    "D": "1 2 3 3 2 4 4 1 2 5 1 .",
}

# Fleiss (1971) as worked on Wikipedia ("Fleiss' kappa", worked example): 10 subjects,
# 14 raters, 5 categories; rows are how many raters chose each category. kappa = 0.210.
FLEISS_EXAMPLE = [
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
]


def krippendorff_records() -> list[tuple[int, str, int]]:
    return [(unit, coder, int(v)) for coder, row in KRIPPENDORFF_2011.items()
            for unit, v in enumerate(row.split(), start=1) if v != "."]


@pytest.mark.parametrize(("level", "published"),
                         [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)])
def test_alpha_matches_krippendorffs_own_example(level: str, published: float) -> None:
    data = Annotations.from_records(krippendorff_records())
    assert krippendorff_alpha(data, level) == pytest.approx(published, abs=5e-4)


def test_ordinal_alpha_follows_a_given_order_of_named_values() -> None:
    names = {1: "none", 2: "low", 3: "mid", 4: "high", 5: "top"}
    named = [(u, c, names[v]) for u, c, v in krippendorff_records()]
    order = ["none", "low", "mid", "high", "top"]
    assert krippendorff_alpha(Annotations.from_records(named), "ordinal", order) == \
        krippendorff_alpha(Annotations.from_records(krippendorff_records()), "ordinal")
    with pytest.raises(LabelError, match="value 'top' is not in order"):
        krippendorff_alpha(Annotations.from_records(named), "ordinal", order[:-1])
    with pytest.raises(LabelError, match="interval alpha needs integer values"):
        krippendorff_alpha(Annotations.from_records(named), "interval")


def test_alpha_is_order_free_to_the_bit_and_one_for_perfect_agreement() -> None:
    records = krippendorff_records()
    shuffled = records[:]
    random.Random(3).shuffle(shuffled)
    for level in ("nominal", "ordinal", "interval"):
        assert krippendorff_alpha(Annotations.from_records(shuffled), level) == \
            krippendorff_alpha(Annotations.from_records(records), level)
    same = Annotations.from_records([(u, c, u % 3) for u in range(6) for c in "ab"])
    assert krippendorff_alpha(same) == 1.0
    with pytest.raises(AgreementError, match="no variation"):
        krippendorff_alpha(Annotations.from_records([(u, c, 1) for u in range(4) for c in "ab"]))
    with pytest.raises(LabelError, match="level must be one of nominal, ordinal, interval"):
        krippendorff_alpha(same, "ratio")  # type: ignore[arg-type]


def test_fleiss_kappa_matches_the_worked_example() -> None:
    records = []
    for subject, row in enumerate(FLEISS_EXAMPLE):
        raters = iter(range(14))
        records += [(subject, next(raters), category)
                    for category, count in enumerate(row) for _ in range(count)]
    assert fleiss_kappa(Annotations.from_records(records)) == pytest.approx(0.210, abs=5e-4)


def test_pairwise_cohen_kappa_is_the_mean_of_scikit_learns_per_pair() -> None:
    data = Annotations.from_records(krippendorff_records())
    result = pairwise_cohen_kappa(data, min_overlap=5)
    by_coder = {c: {u: v for u, cc, v in krippendorff_records() if cc == c}
                for c in KRIPPENDORFF_2011}
    expected = {}
    for a, b in [("A", "B"), ("A", "C"), ("A", "D"), ("B", "C"), ("B", "D"), ("C", "D")]:
        shared = sorted(by_coder[a].keys() & by_coder[b].keys())
        expected[(a, b)] = cohen_kappa_score([by_coder[a][u] for u in shared],
                                             [by_coder[b][u] for u in shared])
    assert result.by_pair == pytest.approx(expected)
    assert result.mean == pytest.approx(sum(expected.values()) / 6)
    # A and C share 8 units: a higher bar drops that pair
    assert ("A", "C") not in pairwise_cohen_kappa(data, min_overlap=9).by_pair
    with pytest.raises(AgreementError, match="no pair of workers shares 50 tasks"):
        pairwise_cohen_kappa(data, min_overlap=50)
