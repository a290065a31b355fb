"""Coordinate-wise trimmed mean."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._numeric import mean_rows
from .base import AggregationContext, Aggregator, is_int
from .median import sorted_columns


@dataclass(frozen=True)
class TrimmedMean(Aggregator):
    """Coordinate-wise trimmed mean (Yin, Chen, Ramchandran, Bartlett 2018, "Byzantine-Robust
    Distributed Learning: Towards Optimal Statistical Rates", ICML).

    Per coordinate, drop the ``trim`` largest and ``trim`` smallest values and average the
    remaining n − 2·trim (summed in ascending order of value, so the result does not depend on
    the order of the senders). ``trim=None`` (default) drops ``ctx.f`` on each side. Needs
    n > 2·trim; with trim >= f every output coordinate lies within the honest values' range.
    """

    name = "trimmed_mean"
    trim: int | None = None

    def validate(self) -> None:
        self.require(
            self.trim is None or (is_int(self.trim) and self.trim >= 0),
            f"trim must be None (use f) or an integer >= 0; got {self.trim!r}",
        )

    def aggregate_rows(self, x: np.ndarray, ctx: AggregationContext) -> np.ndarray:
        n = x.shape[0]
        t = ctx.f if self.trim is None else int(self.trim)
        self.require(
            n > 2 * t, f"needs n > 2·trim inputs; got n={n}, trim={t}"
            + (" (= f)" if self.trim is None else "")
        )
        return mean_rows(sorted_columns(x)[t : n - t])
