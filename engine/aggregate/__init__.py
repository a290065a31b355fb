"""Aggregation of the agreed set of gradients into one update.

The seam for robust aggregation: every rule takes the gradients of the agreed set ordered by
sender id and must be bit-exact (fixed reduction order) so that any node can recompute a
committed aggregate. This issue ships the plain mean; robust rules plug in here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class Aggregator(Protocol):
    name: str

    def __call__(self, gradients: Sequence[np.ndarray]) -> np.ndarray: ...


class Mean:
    """Coordinate-wise arithmetic mean, summed in float64 in sender order, returned as float32."""

    name = "mean"

    def __call__(self, gradients: Sequence[np.ndarray]) -> np.ndarray:
        total = np.zeros(gradients[0].shape, dtype=np.float64)
        for g in gradients:  # explicit left-to-right order: no pairwise/threaded reduction
            total += g
        return (total / len(gradients)).astype(np.float32)


AGGREGATORS: dict[str, type[Aggregator]] = {"mean": Mean}


def make_aggregator(name: str) -> Aggregator:
    if name not in AGGREGATORS:
        raise ValueError(f"unknown aggregator {name!r}; known: {', '.join(sorted(AGGREGATORS))}")
    return AGGREGATORS[name]()
