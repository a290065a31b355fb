"""Coordinate-wise arithmetic mean: the non-robust baseline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._numeric import mean_rows
from .base import AggregationContext, Aggregator


@dataclass(frozen=True)
class Mean(Aggregator):
    """Arithmetic mean, summed in float64 in sender order, returned as float32.

    Not robust: one Byzantine vector moves it arbitrarily far (breakdown point 0); ``f`` is
    ignored. The formula (left-to-right float64 sum, then one division by n) is the one the
    node committed with before the robust rules existed, so old aggregates recompute exactly.
    """

    name = "mean"

    def aggregate_rows(self, x: np.ndarray, ctx: AggregationContext) -> np.ndarray:
        return mean_rows(x)
