"""Geometric median by the smoothed Weiszfeld algorithm (RFA)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._numeric import dists_to, exact_sum, mean_rows
from .base import AggregationContext, Aggregator, is_int, is_real


def smoothed_objective(dists: list[float], nu: float) -> float:
    """Σ g_ν(‖v − x_i‖) with g_ν(r) = r for r >= ν and r²/(2ν) + ν/2 below (Pillutla et al.)."""
    return exact_sum([r if r >= nu else r * r / (2.0 * nu) + nu / 2.0 for r in dists])


@dataclass(frozen=True)
class GeometricMedian(Aggregator):
    """Geometric median, argmin_v Σ_i ‖v − x_i‖, by the smoothed Weiszfeld algorithm of RFA
    (Pillutla, Kakade, Harchaoui 2022, "Robust Aggregation for Federated Learning", IEEE TSP).

    Starts from the mean and iterates ``v ← Σ β_i x_i / Σ β_i`` with
    ``β_i = 1 / max(nu, ‖v − x_i‖)``: each step does not increase the ν-smoothed objective
    (:func:`smoothed_objective`). Stops after ``max_iter`` steps, or earlier once a step lowers
    that objective by at most ``tol`` times its value. The early exit is reproducible: the
    objective is computed with fixed-order float64 operations, so every node takes it at the
    same step. Needs n > 2f (the geometric median's breakdown point is 1/2).
    """

    name = "geometric_median"
    nu: float = 1e-6
    max_iter: int = 100
    tol: float = 1e-15

    def validate(self) -> None:
        self.require(
            is_real(self.nu) and math.isfinite(self.nu) and self.nu > 0,
            f"nu must be a finite number > 0; got {self.nu!r}",
        )
        self.require(
            is_int(self.max_iter) and self.max_iter >= 1,
            f"max_iter must be an integer >= 1; got {self.max_iter!r}",
        )
        self.require(
            is_real(self.tol) and math.isfinite(self.tol) and self.tol >= 0,
            f"tol must be a finite number >= 0; got {self.tol!r}",
        )

    def aggregate_rows(self, x: np.ndarray, ctx: AggregationContext) -> np.ndarray:
        n, d = x.shape
        self.require(n > 2 * ctx.f, f"needs n > 2f inputs; got n={n}, f={ctx.f}")
        nu, tol = float(self.nu), float(self.tol)
        v = mean_rows(x)
        dists = dists_to(x, v)
        objective = smoothed_objective(dists, nu)
        for _ in range(int(self.max_iter)):
            betas = [1.0 / max(nu, r) for r in dists]
            total = np.zeros(d, dtype=np.float64)
            for i, beta in enumerate(betas):  # fixed sender order
                total += beta * x[i]
            v = total / exact_sum(betas)
            dists = dists_to(x, v)
            new_objective = smoothed_objective(dists, nu)
            if objective - new_objective <= tol * new_objective:
                break
            objective = new_objective
        return v
