"""Inter-annotator agreement: Krippendorff's alpha, Fleiss' kappa, pairwise Cohen's kappa.

All take :class:`~.labels.Annotations` (task = unit, worker = coder, label = value; a missing
value is simply a missing record). Sums are accumulated in a fixed order and scalars added
with ``math.fsum`` (exactly rounded), so results do not depend on record order or machine.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .labels.annotations import Annotations, Id, LabelError

Level = Literal["nominal", "ordinal", "interval"]
LEVELS: tuple[Level, ...] = ("nominal", "ordinal", "interval")
MAX_VALUES = 2000
"""Distinct values alpha accepts: its coincidence matrix is values × values."""


class AgreementError(LabelError):
    """The metric is undefined on this data (e.g. nobody ever disagreed about anything)."""


def krippendorff_alpha(data: Annotations, level: Level = "nominal",
                       order: Sequence[Id] | None = None) -> float:
    """Krippendorff's alpha, 1 − D_observed / D_expected, from the coincidence matrix
    (Krippendorff 2011, "Computing Krippendorff's Alpha-Reliability"). Units with fewer than
    two values are unpairable and ignored.

    ``interval`` needs integer values; ``ordinal`` ranks the values by ``order`` when given
    (e.g. ``["low", "mid", "high"]``), otherwise by their sorted order.
    Guidance (Krippendorff 2004): ≥ 0.8 reliable, ≥ 0.667 tentative.
    """
    _require(data, "krippendorff_alpha")
    return alpha_from_counts(data.counts(), data.classes, level, order)


def alpha_from_counts(counts: np.ndarray, values: tuple[Id, ...], level: Level = "nominal",
                      order: Sequence[Id] | None = None) -> float:
    """`krippendorff_alpha` from its one input, the (units × values) matrix of how many
    coders gave each unit each value (`Annotations.counts()`: units in sorted order, values
    in `values` order), for a caller that keeps those counts up to date itself."""
    if level not in LEVELS:
        raise LabelError(f"level must be one of {', '.join(LEVELS)}; got {level!r}")
    if len(values) > MAX_VALUES:
        raise LabelError(f"krippendorff_alpha: {len(values)} distinct values, "
                         f"at most {MAX_VALUES} allowed")
    coincidence = _coincidences(counts)
    marginals = np.cumsum(coincidence, axis=1)[:, -1]
    delta = _distance(values, marginals, level, order)
    n = math.fsum(marginals.tolist())
    observed = math.fsum((coincidence * delta).ravel().tolist())
    expected = math.fsum((np.outer(marginals, marginals) * delta).ravel().tolist())
    if n < 2 or expected == 0:
        raise AgreementError("krippendorff_alpha is undefined: fewer than two pairable values "
                             "or no variation among them")
    return 1.0 - (n - 1.0) * observed / expected


def coincidences(data: Annotations) -> np.ndarray:
    """values × values matrix o[c, k] = Σ over units of (pairs of values c, k from different
    coders in the unit) / (values in the unit − 1)."""
    return _coincidences(data.counts())


def _coincidences(counts: np.ndarray) -> np.ndarray:
    m = counts.sum(axis=1)  # whole numbers: exact in any order
    pairable = m >= 2
    counts, m = counts[pairable], m[pairable]
    scaled = counts / (m - 1.0)[:, None]
    n_values = counts.shape[1]
    matrix = np.empty((n_values, n_values))
    for c in range(n_values):
        # cumsum adds units one after another: a fixed order
        matrix[c] = np.cumsum(scaled[:, c:c + 1] * counts, axis=0)[-1] if len(m) else 0.0
    matrix[np.diag_indices(n_values)] -= np.cumsum(scaled, axis=0)[-1] if len(m) else 0.0
    return matrix


def _distance(values: tuple[Id, ...], marginals: np.ndarray, level: Level,
              order: Sequence[Id] | None) -> np.ndarray:
    """Squared difference δ²(c, k) between values c and k at the given level."""
    n_values = len(values)
    if level == "nominal":
        return 1.0 - np.eye(n_values)
    if level == "interval":
        if not all(isinstance(v, int) for v in values):
            bad = next(v for v in values if not isinstance(v, int))
            raise LabelError(f"interval alpha needs integer values; got {bad!r}")
        x = np.array(values, dtype=np.float64)
        return (x[:, None] - x[None, :]) ** 2
    rank = _ranks(values, order)
    # ordinal: δ(c, k) = (n_c + ... + n_k − (n_c + n_k)/2)² over values ranked between c and k
    ranked = np.zeros(n_values)
    ranked[rank] = marginals
    below = np.concatenate(([0.0], np.cumsum(ranked)))
    lo = np.minimum(rank[:, None], rank[None, :])
    hi = np.maximum(rank[:, None], rank[None, :])
    between = below[hi + 1] - below[lo] - (marginals[:, None] + marginals[None, :]) / 2.0
    return between ** 2


def _ranks(values: tuple[Id, ...], order: Sequence[Id] | None) -> np.ndarray:
    if order is None:
        return np.arange(len(values))  # values are already in their sorted order
    position = {v: i for i, v in enumerate(order)}
    if len(position) != len(order):
        raise LabelError(f"order must list distinct values; got {list(order)!r}")
    missing = [v for v in values if v not in position]
    if missing:
        raise LabelError(f"value {missing[0]!r} is not in order {list(order)!r}")
    ranks = np.array([position[v] for v in values])
    return np.argsort(np.argsort(ranks, kind="stable"), kind="stable")


def fleiss_kappa(data: Annotations) -> float:
    """Fleiss' (1971) kappa over tasks with at least two labels; with a varying number of
    labels per task each task's agreement uses its own count (the usual generalization)."""
    _require(data, "fleiss_kappa")
    counts = data.counts()
    m = counts.sum(axis=1)
    counts, m = counts[m >= 2], m[m >= 2]
    if len(m) == 0:
        raise AgreementError("fleiss_kappa is undefined: no task has two labels")
    per_task = ((counts * counts).sum(axis=1) - m) / (m * (m - 1.0))
    observed = math.fsum(per_task.tolist()) / len(m)
    total = math.fsum(m.tolist())
    shares = [math.fsum(counts[:, c].tolist()) / total for c in range(counts.shape[1])]
    chance = math.fsum(p * p for p in shares)
    if chance == 1.0:
        raise AgreementError("fleiss_kappa is undefined: every label is the same class")
    return (observed - chance) / (1.0 - chance)


@dataclass(frozen=True)
class PairwiseKappa:
    """Mean Cohen's kappa over worker pairs that share at least ``min_overlap`` tasks
    (``by_pair``); pairs whose kappa is undefined (both constant) are counted in
    ``undefined`` and left out of the mean."""

    mean: float
    by_pair: dict[tuple[Id, Id], float]
    undefined: int


def pairwise_cohen_kappa(data: Annotations, min_overlap: int = 10) -> PairwiseKappa:
    """Cohen's (1960) kappa for every pair of workers with enough tasks in common."""
    _require(data, "pairwise_cohen_kappa")
    if isinstance(min_overlap, bool) or not isinstance(min_overlap, int) or min_overlap < 1:
        raise LabelError(f"min_overlap must be an integer >= 1; got {min_overlap!r}")
    n_values = len(data.classes)
    tables: dict[tuple[int, int], np.ndarray] = {}
    bounds = np.concatenate(([0], np.cumsum(data.labels_per_task())))
    for start, stop in itertools.pairwise(bounds.tolist()):
        rows = list(zip(data.worker[start:stop].tolist(), data.label[start:stop].tolist(),
                        strict=True))
        for (a, la), (b, lb) in itertools.combinations(rows, 2):  # rows sorted by worker
            table = tables.setdefault((a, b), np.zeros((n_values, n_values)))
            table[la, lb] += 1.0
    by_pair: dict[tuple[Id, Id], float] = {}
    undefined = 0
    for (a, b), table in sorted(tables.items()):
        n = table.sum()
        if n < min_overlap:
            continue
        kappa = _cohen(table / n)
        if kappa is None:
            undefined += 1
        else:
            by_pair[(data.workers[a], data.workers[b])] = kappa
    if not by_pair:
        raise AgreementError(f"pairwise_cohen_kappa is undefined: no pair of workers shares "
                             f"{min_overlap} tasks with a defined kappa")
    return PairwiseKappa(math.fsum(by_pair.values()) / len(by_pair), by_pair, undefined)


def _cohen(joint: np.ndarray) -> float | None:
    observed = math.fsum(np.diag(joint).tolist())
    rows, columns = np.cumsum(joint, axis=1)[:, -1], np.cumsum(joint, axis=0)[-1]
    chance = math.fsum((rows * columns).tolist())
    return None if chance == 1.0 else (observed - chance) / (1.0 - chance)


def _require(data: Annotations, metric: str) -> None:
    if not isinstance(data, Annotations):
        raise LabelError(f"{metric} expects Annotations (Annotations.from_records(...)); "
                         f"got {type(data).__name__}")
