"""Coordinate-wise median."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import AggregationContext, Aggregator


def sorted_columns(x: np.ndarray) -> np.ndarray:
    """Each coordinate's values sorted ascending (stable, so −0.0/+0.0 keep sender order and
    the result does not depend on the sorting algorithm a CPU dispatches to)."""
    return np.sort(x, axis=0, kind="stable")


@dataclass(frozen=True)
class Median(Aggregator):
    """Coordinate-wise median (Yin, Chen, Ramchandran, Bartlett 2018, "Byzantine-Robust
    Distributed Learning: Towards Optimal Statistical Rates", ICML).

    Per coordinate, the middle value; for even n, the midpoint ``(a + b) / 2`` of the two
    middle values. Needs a strict honest majority, n > 2f: then every output coordinate lies
    between the smallest and largest honest value of that coordinate.
    """

    name = "median"

    def aggregate_rows(self, x: np.ndarray, ctx: AggregationContext) -> np.ndarray:
        n = x.shape[0]
        self.require(n > 2 * ctx.f, f"needs n > 2f inputs; got n={n}, f={ctx.f}")
        s = sorted_columns(x)
        if n % 2:
            return s[n // 2].copy()
        return (s[n // 2 - 1] + s[n // 2]) / 2.0
