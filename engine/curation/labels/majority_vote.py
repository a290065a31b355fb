"""Majority vote, optionally weighted by worker skill."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Self

import numpy as np

from .annotations import Annotations, Id, LabelError
from .base import Aggregator, majority_probas, require_data


@dataclass
class MajorityVote(Aggregator):
    """Each task gets the label with the most (skill-weighted) votes; a tie goes to the first
    class in sorted order. ``skills_`` is each worker's agreement with the result.

    Example::

        data = Annotations.from_records([("t1", "a", 1), ("t1", "b", 1), ("t1", "c", 0)])
        MajorityVote().fit_predict(data)                  # {"t1": 1}
        MajorityVote().fit(data, skills={"c": 5.0}).labels_   # {"t1": 0}

    Workers missing from ``skills`` weigh 1.
    """

    skills_: dict[Id, float] = field(init=False, repr=False)

    def fit(self, data: Annotations, skills: Mapping[Id, float] | None = None) -> Self:
        require_data(data, "MajorityVote")
        weights = None if skills is None else worker_weights(data, skills)[data.worker]
        self._set_probas(data, majority_probas(data, weights))
        best = np.argmax(self.probas_.matrix, axis=1)
        agrees = (data.label == best[data.task]).astype(np.float64)
        per_worker = np.bincount(data.worker, weights=agrees, minlength=len(data.workers))
        self.skills_ = dict(zip(data.workers,
                                (per_worker / np.bincount(data.worker)).tolist(), strict=True))
        return self


def worker_weights(data: Annotations, skills: Mapping[Id, float]) -> np.ndarray:
    """One weight per worker in ``data.workers`` order; 1 for a worker ``skills`` lacks."""
    weights = np.ones(len(data.workers))
    for i, worker in enumerate(data.workers):
        if worker in skills:
            w = skills[worker]
            if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w < 0:
                raise LabelError(f"skill of worker {worker!r} must be a finite number >= 0; "
                                 f"got {w!r}")
            weights[i] = float(w)
    return weights
