"""Dawid–Skene: EM over a full confusion matrix per worker."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Self

import numpy as np

from .annotations import Annotations, Id, ordered_sum
from .base import (
    CLIP,
    Aggregator,
    expectation_maximization,
    require_data,
    require_iterations,
)


@dataclass
class DawidSkene(Aggregator):
    """Dawid & Skene (1979), "Maximum likelihood estimation of observer error-rates using the
    EM algorithm". Starts from majority vote; each iteration re-estimates every worker's
    confusion matrix ``errors_[w, true, observed]`` and the class priors from the task
    posteriors, then the posteriors from them.

    Stops after ``n_iter`` iterations or when no posterior moves by more than ``tol``
    (crowd-kit's defaults; it tests the change of the evidence lower bound instead, which
    needs logarithms, and this model uses only correctly rounded arithmetic).

    Example::

        data = Annotations.from_records(records)          # (task, worker, label)
        ds = DawidSkene(n_iter=100).fit(data)
        ds.labels_["t1"], ds.probas_["t1"], ds.skills_["ann"]

    ``skills_`` is a worker's expected accuracy: Σ_c prior_c · errors_[w, c, c].
    """

    n_iter: int = 100
    tol: float = 1e-5
    priors_: np.ndarray = field(init=False, repr=False)
    errors_: np.ndarray = field(init=False, repr=False)
    skills_: dict[Id, float] = field(init=False, repr=False)
    n_iter_: int = field(init=False, repr=False)

    def fit(self, data: Annotations) -> Self:
        require_data(data, "DawidSkene")
        require_iterations("DawidSkene", self.n_iter, self.tol)
        def model(probas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            priors, errors = confusion_m_step(data, probas)
            return priors, errors[data.worker, :, data.label]

        probas, self.n_iter_ = expectation_maximization(data, self.n_iter, self.tol, model)
        self.priors_, self.errors_ = confusion_m_step(data, probas)
        self._set_probas(data, probas)
        accuracy = np.zeros(len(data.workers))
        for c in range(len(data.classes)):
            accuracy += self.priors_[c] * self.errors_[:, c, c]
        self.skills_ = dict(zip(data.workers, accuracy.tolist(), strict=True))
        return self


def class_priors(probas: np.ndarray) -> np.ndarray:
    """Mean posterior per class, summing tasks in order."""
    return np.cumsum(probas, axis=0)[-1] / probas.shape[0]


def confusion_m_step(data: Annotations, probas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Priors and confusion matrices (workers × true × observed, rows summing to 1) that
    maximize the expected likelihood under the task posteriors ``probas``."""
    n_workers, n_classes = len(data.workers), len(data.classes)
    errors = np.empty((n_workers, n_classes, n_classes))
    cell = data.worker * n_classes + data.label
    for true in range(n_classes):
        mass = ordered_sum(cell, probas[data.task, true], n_workers * n_classes)
        errors[:, true, :] = np.maximum(mass.reshape(n_workers, n_classes), CLIP)
    totals = np.cumsum(errors, axis=2)[:, :, -1:]
    return class_priors(probas), errors / totals
