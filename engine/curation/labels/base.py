"""What every label aggregator shares: the fitted-result attributes and the EM posterior.

Arithmetic here is +, −, ×, ÷ on float64 (correctly rounded by IEEE 754) in a fixed order,
so the posteriors are the same bits on every machine for the same records.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Self

import numpy as np

from .annotations import Annotations, Id, LabelError

CLIP = 1e-10
"""Floor for probabilities in an E-step (crowd-kit's ``_EPS``): one label the model calls
impossible must not zero a class out for good."""


class ClassProbabilities(Mapping[Id, dict[Id, float]]):
    """task → {class: probability}, backed by a (tasks × classes) matrix (``.matrix``)."""

    def __init__(self, tasks: tuple[Id, ...], classes: tuple[Id, ...], matrix: np.ndarray):
        self.tasks, self.classes, self.matrix = tasks, classes, matrix
        self._row = {t: i for i, t in enumerate(tasks)}

    def __getitem__(self, task: Id) -> dict[Id, float]:
        row = self.matrix[self._row[task]]
        return dict(zip(self.classes, row.tolist(), strict=True))

    def __iter__(self) -> Iterator[Id]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)


@dataclass
class Aggregator(ABC):
    """Base of the classification aggregators: ``fit(data)`` sets ``labels_`` (task → label)
    and, where the method has them, ``probas_``; ties go to the first class in sorted order."""

    labels_: dict[Id, Id] = field(init=False, repr=False)
    probas_: ClassProbabilities = field(init=False, repr=False)

    @abstractmethod
    def fit(self, data: Annotations) -> Self:
        """Estimate the labels of ``data``'s tasks; returns self."""

    def fit_predict(self, data: Annotations) -> dict[Id, Id]:
        return self.fit(data).labels_

    def fit_predict_proba(self, data: Annotations) -> ClassProbabilities:
        return self.fit(data).probas_

    def _set_probas(self, data: Annotations, probas: np.ndarray) -> None:
        self.probas_ = ClassProbabilities(data.tasks, data.classes, probas)
        best = np.argmax(probas, axis=1)  # the first maximum: the lowest class on a tie
        self.labels_ = {t: data.classes[c] for t, c in zip(data.tasks, best.tolist(), strict=True)}


def row_sum(matrix: np.ndarray) -> np.ndarray:
    """Sum of each row, adding the columns left to right (a fixed order on any machine)."""
    total = matrix[:, 0].copy()
    for j in range(1, matrix.shape[1]):
        total += matrix[:, j]
    return total


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    return matrix / row_sum(matrix)[:, None]


def posterior(data: Annotations, priors: np.ndarray, likelihood: np.ndarray) -> np.ndarray:
    """E-step: P(true class | a task's labels) ∝ prior × Π over its labels of likelihood.

    ``likelihood[i, c]`` is P(row i's observed label | true class c). Factors are multiplied
    in rank order (each task's first label, then its second, ...) and rows renormalized after
    each rank, so long products neither underflow nor depend on anything but the records.
    """
    probas = np.tile(np.maximum(priors, CLIP), (len(data.tasks), 1))
    factors = np.maximum(likelihood, CLIP)
    rank = data.rank_in_task()
    for r in range(int(rank.max(initial=-1)) + 1):
        rows = np.flatnonzero(rank == r)
        tasks = data.task[rows]
        probas[tasks] = normalize_rows(probas[tasks] * factors[rows])
    return probas


def majority_probas(data: Annotations, weights: np.ndarray | None = None) -> np.ndarray:
    """Each task's (weighted) vote shares; a task whose weights sum to 0 gets uniform shares."""
    counts = data.counts(weights)
    totals = row_sum(counts)
    empty = totals <= 0
    counts[empty] = 1.0
    totals[empty] = counts.shape[1]
    return counts / totals[:, None]


def require_data(data: Annotations, method: str) -> None:
    if not isinstance(data, Annotations):
        raise LabelError(f"{method}.fit expects Annotations (Annotations.from_records(...)); "
                         f"got {type(data).__name__}")
    if len(data) == 0:
        raise LabelError(f"{method}.fit: no annotations to aggregate")


def require_iterations(method: str, n_iter: int, tol: float) -> None:
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 1:
        raise LabelError(f"{method}.n_iter must be an integer >= 1; got {n_iter!r}")
    if not isinstance(tol, int | float) or isinstance(tol, bool) or not tol >= 0:
        raise LabelError(f"{method}.tol must be a number >= 0; got {tol!r}")


def expectation_maximization(data: Annotations, n_iter: int, tol: float,
                             model: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
                             ) -> tuple[np.ndarray, int]:
    """EM from majority vote: `model(probas)` is a method's M-step, giving class priors and
    each row's likelihood per true class; stops after `n_iter` steps or once no posterior
    moves more than `tol`. The final posteriors and the steps taken."""
    probas = majority_probas(data)
    steps = 0
    for _ in range(n_iter):
        priors, likelihood = model(probas)
        updated = posterior(data, priors, likelihood)
        steps += 1
        moved = float(np.max(np.abs(updated - probas)))
        probas = updated
        if moved < tol:
            break
    return probas, steps
