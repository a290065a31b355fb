"""Least squares on synthetic data: tiny and fast, for scale runs."""

from __future__ import annotations

import numpy as np

from phalanx.engine.rng import RngStreams
from phalanx.engine.workloads.base import GradientResult, Workload


class LinearRegression(Workload):
    """y = X·w* + noise with X ~ N(0, I); loss ½·mean((X·w − y)²), whose floor is noise²/2."""

    name = "linear"

    def __init__(self, *, n_nodes: int, rngs: RngStreams, dim: int = 16,
                 samples_per_node: int = 256, noise: float = 0.1, batch: int = 32,
                 eval_samples: int = 1000) -> None:
        self.dim, self.batch, self.noise = dim, min(batch, samples_per_node), noise
        self.samples_per_node, self.rngs = samples_per_node, rngs
        self.w_true = rngs.stream("task").standard_normal(dim)
        self.eval_x, self.eval_y = self._draw(rngs.stream("eval"), eval_samples)
        self._shards: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _draw(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.standard_normal((count, self.dim))
        return x, x @ self.w_true + self.noise * rng.standard_normal(count)

    def _shard(self, node: int) -> tuple[np.ndarray, np.ndarray]:
        if node not in self._shards:
            self._shards[node] = self._draw(self.rngs.stream("shard", node), self.samples_per_node)
        return self._shards[node]

    def init_params(self) -> np.ndarray:
        return np.zeros(self.dim, dtype=np.float32)

    def gradient(self, params: np.ndarray, node: int, round: int,
                 poisoned: bool = False) -> GradientResult:
        x, y = self._shard(node)
        idx = self.rngs.stream("batch", node, round).choice(len(y), self.batch, replace=False)
        xb, yb = x[idx], (-y[idx] if poisoned else y[idx])  # poisoned: the targets negated
        residual = xb @ params.astype(np.float64) - yb
        grad = xb.T @ residual / len(yb)
        return GradientResult(grad.astype(np.float32), float(0.5 * np.mean(residual**2)), len(yb))

    def evaluate(self, params: np.ndarray) -> dict[str, float]:
        residual = self.eval_x @ params.astype(np.float64) - self.eval_y
        return {"loss": float(0.5 * np.mean(residual**2))}
