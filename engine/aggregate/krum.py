"""Krum and Multi-Krum."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._numeric import exact_sum, mean_rows, pairwise_sq_dists
from .base import AggregationContext, Aggregator, is_int


def krum_scores(x: np.ndarray, f: int) -> list[float]:
    """Krum score of each vector: the sum of the squared distances to its n − f − 2 nearest
    neighbours (itself excluded), summed exactly so that the score does not depend on the
    order of the senders."""
    n = x.shape[0]
    k = n - f - 2
    dist = pairwise_sq_dists(x)
    rows = dist.tolist()
    return [exact_sum(sorted(r[:i] + r[i + 1 :])[:k]) for i, r in enumerate(rows)]


def krum_ranking(x: np.ndarray, f: int) -> list[int]:
    """Sender indices from best (lowest) to worst Krum score; ties go to the lower index."""
    scores = krum_scores(x, f)
    return sorted(range(x.shape[0]), key=lambda i: (scores[i], i))


@dataclass(frozen=True)
class Krum(Aggregator):
    """Krum (Blanchard, El Mhamdi, Guerraoui, Stainer 2017, "Machine Learning with
    Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS).

    Scores every vector by the sum of squared distances to its n − f − 2 nearest neighbours
    and returns the vector with the lowest score (ties: the lowest sender index). Needs
    n > 2f + 2.
    """

    name = "krum"

    def aggregate_rows(self, x: np.ndarray, ctx: AggregationContext) -> np.ndarray:
        n = x.shape[0]
        self.require(n > 2 * ctx.f + 2, f"needs n > 2f + 2 inputs; got n={n}, f={ctx.f}")
        return x[krum_ranking(x, ctx.f)[0]].copy()


@dataclass(frozen=True)
class MultiKrum(Aggregator):
    """Multi-Krum (Blanchard, El Mhamdi, Guerraoui, Stainer 2017, "Machine Learning with
    Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS).

    Computes the Krum scores once and averages the ``m`` vectors with the best scores
    (ties: lower sender index first), summed from best to worst so that the result does not
    depend on the order of the senders. ``m=None`` (default) uses m = n − f. Needs n > 2f + 2
    and 1 <= m <= n − f.
    """

    name = "multi_krum"
    m: int | None = None

    def validate(self) -> None:
        self.require(
            self.m is None or (is_int(self.m) and self.m >= 1),
            f"m must be None (use n − f) or an integer >= 1; got {self.m!r}",
        )

    def aggregate_rows(self, x: np.ndarray, ctx: AggregationContext) -> np.ndarray:
        n = x.shape[0]
        self.require(n > 2 * ctx.f + 2, f"needs n > 2f + 2 inputs; got n={n}, f={ctx.f}")
        m = n - ctx.f if self.m is None else int(self.m)
        self.require(m <= n - ctx.f, f"needs m <= n − f; got m={m}, n={n}, f={ctx.f}")
        return mean_rows(x, krum_ranking(x, ctx.f)[:m])
