"""Centered clipping around the last committed aggregate."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._numeric import dists_to, kth_smallest
from .base import AggregationContext, Aggregator, is_int, is_real

#: the ``tau`` value that selects the adaptive radius (a string, so scenario files can name it)
AUTO = "auto"


def radius_rank(n: int) -> int:
    """The rank (1-based, ascending) of the distance the adaptive radius takes among n: the
    lower median, ⌈n/2⌉."""
    return (n + 1) // 2


@dataclass(frozen=True)
class CenteredClipping(Aggregator):
    """Centered clipping (Karimireddy, He, Jaggi 2021, "Learning from History for Byzantine
    Robust Optimization", ICML).

    From ``v = ctx.previous`` (the last committed aggregate; zeros if None) iterate
    ``iterations`` (the paper's L) times ``v ← v + (1/n) Σ_i clip_τ(x_i − v)``, where
    ``clip_τ(z) = z · min(1, τ/‖z‖)``. Each Byzantine vector moves v by at most τ/n per
    iteration, however far away it is. Use it with worker momentum, as the paper does.
    Needs n > 2f; ``previous`` must have the gradients' length.

    **The radius.** ``tau="auto"`` (the default) sets τ, at every iteration, to the median of
    the n distances to the current centre: the ⌈n/2⌉-th smallest ``‖x_i − v‖`` (the lower
    median). The paper's analysis ties τ to the honest vectors' spread around the current
    centre (τ_l of the order of sqrt(ρ² + σ²), up to a factor in the Byzantine fraction: ρ the
    centre's distance to the honest mean, σ the honest spread), which no fixed number tracks: gradients shrink as training converges
    and differ by orders of magnitude between models. The fixed τ = 10 of the paper's
    experiments (this rule's former default) clipped nothing on the project's models, so the
    rule was the mean, and IPM with ε = 100 wrecked it as it wrecks the mean. The median
    distance is the plug-in estimate of that spread with the best breakdown point (the scale
    estimate behind the median absolute deviation, Hampel 1974): whatever f < n/2 of the
    inputs are, it lies between the (⌈n/2⌉ − f)-th smallest and the ⌈n/2⌉-th smallest
    *honest* distance, so **Byzantine vectors, however far, cannot push τ beyond the largest
    honest distance**, and vectors sent at the centre cannot shrink it to zero (unless honest
    vectors sit there too). It needs no f and no tuning, and it is the same on every node: the
    distances do not depend on the sender order and the median is taken by sorting.
    Measured at n = 10, f = 3 (the mlp of ``scenarios/byzantine/n10.yaml`` on IID shards,
    worker momentum, 40 rounds, three seeds), it ends within 5 accuracy points of the
    attack-free run under sign flip and IPM ε = 100 (τ = 10: 15 and 68 points), and at most
    0.4 points below the mean on any seed under any attack (none, ALIE, mimic: where the mean
    is the best estimator). The ARC count of Allouah et al. 2024 ("Boosting Robustness by
    Clipping Gradients in Distributed Learning": clip the ⌊2f(n − f)/n⌋ farthest) and the
    (n − f)-th distance did as well or slightly worse on IID shards and worse under attack on
    label-skewed shards. Under strong label skew every radius leaves a large gap (the error
    floor of heterogeneity, where the coordinate median does better): add ``pre: [nnm]``.

    A number ``tau`` > 0 fixes the radius for every iteration (the authors' code defaults to
    τ = 10 and explores τ ∈ {0.1, 10, 1000}, L ∈ {1, 3, 5}): that path computes exactly what the rule computed before the
    adaptive default existed, bit for bit.
    """

    name = "centered_clipping"
    tau: float | str = AUTO
    iterations: int = 5

    def validate(self) -> None:
        self.require(
            (isinstance(self.tau, str) and self.tau == AUTO)
            or (is_real(self.tau) and math.isfinite(self.tau) and self.tau > 0),
            f"tau must be a finite number > 0 or {AUTO!r} (the adaptive radius); "
            f"got {self.tau!r}",
        )
        self.require(
            is_int(self.iterations) and self.iterations >= 1,
            f"iterations must be an integer >= 1; got {self.iterations!r}",
        )

    def radius(self, dists: list[float], f: int) -> float:
        """τ for one iteration, given the n distances to the current centre (``f`` is not
        used by the median; it is there for variants whose rank depends on it)."""
        if isinstance(self.tau, str):
            return kth_smallest(dists, radius_rank(len(dists)))
        return float(self.tau)

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
        for _ in range(int(self.iterations)):
            dists = dists_to(x, v)
            tau = self.radius(dists, ctx.f)
            step = np.zeros(d, dtype=np.float64)
            for i, r in enumerate(dists):  # fixed sender order
                z = x[i] - v
                if r > tau:
                    z *= tau / r
                step += z
            v = v + step / n
        return v
