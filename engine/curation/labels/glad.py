"""GLAD: worker ability × task difficulty."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Self

import numpy as np

from .annotations import Annotations, Id, LabelError, ordered_sum
from .base import Aggregator, majority_probas, posterior, require_data, require_iterations
from .dawid_skene import class_priors

LOG_BETA_BOUND = 5.0
"""|log β| stays below this: beyond it σ(αβ) is 0 or 1 to float precision anyway."""


@dataclass
class GLAD(Aggregator):
    """Whitehill et al. (2009), "Whose vote should count more: optimal integration of labels
    from labelers of unknown expertise". A worker with ability α labels a task with inverse
    difficulty β correctly with probability σ(αβ), otherwise picks a wrong class uniformly;
    α < 0 marks a worker who is wrong on purpose.

    EM as in crowd-kit (``n_iter=100``, ``tol=1e-5``, standard normal priors on α − 1 and
    log β), but each M-step is a fixed number (``m_steps``) of gradient-ascent steps of size
    ``learning_rate`` rather than a line search, so the work done never depends on rounding.

    Determinism: σ uses numpy's ``exp``, the one function here that is not correctly rounded;
    it gives identical bits for identical inputs on one numpy build and CPU feature set (its
    SIMD exp may differ by an ulp across CPU families), unlike the other aggregators, which
    use only +, −, ×, ÷.

    Example::

        glad = GLAD().fit(Annotations.from_records(records))
        glad.labels_, glad.alphas_["ann"], glad.betas_["t1"]
    """

    n_iter: int = 100
    tol: float = 1e-5
    m_steps: int = 25
    learning_rate: float = 0.5
    priors_: np.ndarray = field(init=False, repr=False)
    alphas_: dict[Id, float] = field(init=False, repr=False)
    betas_: dict[Id, float] = field(init=False, repr=False)
    skills_: dict[Id, float] = field(init=False, repr=False)
    n_iter_: int = field(init=False, repr=False)

    def fit(self, data: Annotations) -> Self:
        require_data(data, "GLAD")
        require_iterations("GLAD", self.n_iter, self.tol)
        if isinstance(self.m_steps, bool) or not isinstance(self.m_steps, int) or self.m_steps < 1:
            raise LabelError(f"GLAD.m_steps must be an integer >= 1; got {self.m_steps!r}")
        if not isinstance(self.learning_rate, int | float) or not self.learning_rate > 0:
            raise LabelError(f"GLAD.learning_rate must be a number > 0; got {self.learning_rate!r}")
        probas = majority_probas(data)
        alpha = np.ones(len(data.workers))
        log_beta = np.zeros(len(data.tasks))
        self.n_iter_ = 0
        for _ in range(self.n_iter):
            priors = class_priors(probas)
            for _ in range(self.m_steps):
                alpha, log_beta = self._gradient_step(data, probas, alpha, log_beta)
            updated = posterior(data, priors, glad_likelihood(data, alpha, log_beta))
            self.n_iter_ += 1
            moved = float(np.max(np.abs(updated - probas)))
            probas = updated
            if moved < self.tol:
                break
        self.priors_ = class_priors(probas)
        self._set_probas(data, probas)
        self.alphas_ = dict(zip(data.workers, alpha.tolist(), strict=True))
        self.betas_ = dict(zip(data.tasks, np.exp(log_beta).tolist(), strict=True))
        self.skills_ = self.alphas_
        return self

    def _gradient_step(self, data: Annotations, probas: np.ndarray, alpha: np.ndarray,
                       log_beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One ascent step on the expected log-likelihood plus the log priors; each gradient
        is divided by the parameter's label count + 1 so busy workers do not take huge steps."""
        beta = np.exp(log_beta)[data.task]
        a = alpha[data.worker]
        # d/ds of q·log σ(s) + (1 − q)·log(1 − σ(s)) at s = αβ, q = P(label is true)
        slope = probas[data.task, data.label] - sigmoid(a * beta)
        grad_alpha = ordered_sum(data.worker, slope * beta, len(alpha)) - (alpha - 1.0)
        grad_log_beta = ordered_sum(data.task, slope * a * beta, len(log_beta)) - log_beta
        per_worker = np.bincount(data.worker, minlength=len(alpha))
        alpha = alpha + self.learning_rate * grad_alpha / (per_worker + 1)
        log_beta = log_beta + self.learning_rate * grad_log_beta / (data.labels_per_task() + 1)
        return alpha, np.clip(log_beta, -LOG_BETA_BOUND, LOG_BETA_BOUND)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def glad_likelihood(data: Annotations, alpha: np.ndarray, log_beta: np.ndarray) -> np.ndarray:
    n_classes = len(data.classes)
    right = sigmoid(alpha[data.worker] * np.exp(log_beta)[data.task])
    likelihood = np.repeat(((1.0 - right) / max(n_classes - 1, 1))[:, None], n_classes, axis=1)
    likelihood[np.arange(len(data)), data.label] = right
    return likelihood
