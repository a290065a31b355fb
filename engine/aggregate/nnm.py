"""Nearest-neighbour mixing (NNM) before the robust rule."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._numeric import mean_rows, pairwise_sq_dists
from .base import AggregationContext, PreAggregator


@dataclass(frozen=True)
class NNM(PreAggregator):
    """Nearest-neighbour mixing (Allouah, Farhadkhani, Guerraoui, Gupta, Pinot, Stephan 2023,
    "Fixing by Mixing: A Recipe for Optimal Byzantine ML under Heterogeneity", AISTATS).

    Replaces every vector by the mean of its n − f nearest neighbours (Euclidean), itself
    included, then hands the n mixed vectors to ``inner`` with the same f. Neighbours are
    ranked by (squared distance, itself first, sender index) and summed nearest first, so
    when no two distances tie the mixed vectors are exactly permutation equivariant. Needs
    n > 2f.
    """

    name = "nnm"

    def neighbours(self, x: np.ndarray, f: int) -> list[list[int]]:
        """For each sender, its n − f nearest senders in summation order (itself first)."""
        n = x.shape[0]
        self.require(n > 2 * f, f"needs n > 2f inputs; got n={n}, f={f}")
        dist: list[list[float]] = pairwise_sq_dists(x).tolist()
        out = []
        for i, row in enumerate(dist):
            ranked = sorted(range(n), key=lambda j: (row[j], j != i, j))
            out.append(ranked[: n - f])
        return out

    def transform(self, x: np.ndarray, ctx: AggregationContext) -> np.ndarray:
        y = np.empty_like(x)
        for i, group in enumerate(self.neighbours(x, ctx.f)):
            y[i] = mean_rows(x, group)
        return y
