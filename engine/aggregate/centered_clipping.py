"""Centered clipping around the last committed aggregate."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._numeric import dists_to
from .base import AggregationContext, Aggregator, is_int, is_real


@dataclass(frozen=True)
class CenteredClipping(Aggregator):
    """Centered clipping (Karimireddy, He, Jaggi 2021, "Learning from History for Byzantine
    Robust Optimization", ICML).

    From ``v = ctx.previous`` (the last committed aggregate; zeros if None) iterate
    ``iterations`` (the paper's L) times ``v ← v + (1/n) Σ_i clip_τ(x_i − v)``, where
    ``clip_τ(z) = z · min(1, τ/‖z‖)``. Each Byzantine vector moves v by at most τ/n per
    iteration, however far away it is. Use it with worker momentum, as the paper does.
    Needs n > 2f; ``previous`` must have the gradients' length.
    """

    name = "centered_clipping"
    tau: float = 10.0
    iterations: int = 5

    def validate(self) -> None:
        self.require(
            is_real(self.tau) and math.isfinite(self.tau) and self.tau > 0,
            f"tau must be a finite number > 0; got {self.tau!r}",
        )
        self.require(
            is_int(self.iterations) and self.iterations >= 1,
            f"iterations must be an integer >= 1; got {self.iterations!r}",
        )

    def aggregate_rows(self, x: np.ndarray, ctx: AggregationContext) -> np.ndarray:
        n, d = x.shape
        self.require(n > 2 * ctx.f, f"needs n > 2f inputs; got n={n}, f={ctx.f}")
        if ctx.previous is None:
            v = np.zeros(d, dtype=np.float64)
        else:
            self.require(
                ctx.previous.shape == (d,),
                f"ctx.previous has shape {ctx.previous.shape}; the gradients have length {d}",
            )
            v = ctx.previous.astype(np.float64)  # a copy: never mutate the caller's array
        tau = float(self.tau)
        for _ in range(int(self.iterations)):
            step = np.zeros(d, dtype=np.float64)
            for i, r in enumerate(dists_to(x, v)):  # fixed sender order
                z = x[i] - v
                if r > tau:
                    z *= tau / r
                step += z
            v = v + step / n
        return v
