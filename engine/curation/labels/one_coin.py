"""One-coin Dawid–Skene: one accuracy per worker, errors spread evenly over wrong classes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Self

import numpy as np

from .annotations import Annotations, Id, ordered_sum
from .base import CLIP, Aggregator, expectation_maximization, require_data, require_iterations
from .dawid_skene import class_priors


@dataclass
class OneCoinDawidSkene(Aggregator):
    """Dawid–Skene with each worker's confusion matrix reduced to one number, the probability
    ``skills_[w]`` of giving the true label (wrong labels equally likely); far fewer
    parameters than the full model, so it needs fewer labels per worker.

    Same EM loop, defaults and stopping rule as :class:`DawidSkene`.

    Example::

        ocds = OneCoinDawidSkene().fit(Annotations.from_records(records))
        ocds.labels_, ocds.skills_
    """

    n_iter: int = 100
    tol: float = 1e-5
    priors_: np.ndarray = field(init=False, repr=False)
    skills_: dict[Id, float] = field(init=False, repr=False)
    n_iter_: int = field(init=False, repr=False)

    def fit(self, data: Annotations) -> Self:
        require_data(data, "OneCoinDawidSkene")
        require_iterations("OneCoinDawidSkene", self.n_iter, self.tol)
        def model(probas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            priors, skill = one_coin_m_step(data, probas)
            return priors, one_coin_likelihood(data, skill)

        probas, self.n_iter_ = expectation_maximization(data, self.n_iter, self.tol, model)
        self.priors_, skill = one_coin_m_step(data, probas)
        self._set_probas(data, probas)
        self.skills_ = dict(zip(data.workers, skill.tolist(), strict=True))
        return self


def one_coin_m_step(data: Annotations, probas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Priors, and each worker's expected share of correct labels under ``probas``."""
    correct = ordered_sum(data.worker, probas[data.task, data.label], len(data.workers))
    skill = correct / np.bincount(data.worker, minlength=len(data.workers))
    return class_priors(probas), np.clip(skill, CLIP, 1.0 - CLIP)


def one_coin_likelihood(data: Annotations, skill: np.ndarray) -> np.ndarray:
    """P(row's label | true class c): the worker's skill where c is the label, else its
    error rate shared by the other classes."""
    n_classes = len(data.classes)
    p = skill[data.worker]
    wrong = (1.0 - p) / max(n_classes - 1, 1)
    likelihood = np.repeat(wrong[:, None], n_classes, axis=1)
    likelihood[np.arange(len(data)), data.label] = p
    return likelihood
