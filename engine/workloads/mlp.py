"""A small torch classifier on a synthetic task with a held-out set.

Labels come from a random teacher network (with a little label noise), so the task is
non-linear and a one-hidden-layer student has to learn it. The student is written as a pure
function of a flat parameter vector: nodes exchange and average flat float32 vectors.

`skew` makes the shards non-IID: node i's shard holds a fraction `skew` of samples of its "home"
class (i mod classes) on top of an IID share, the label-skew setting in which robust rules
struggle (Karimireddy, He, Jaggi 2022).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from phalanx.engine.rng import RngStreams
from phalanx.engine.workloads.base import GradientResult, Workload


class MlpClassifier(Workload):
    name = "mlp"

    def __init__(self, *, n_nodes: int, rngs: RngStreams, features: int = 16, classes: int = 4,
                 hidden: int = 32, samples_per_node: int = 512, batch: int = 32,
                 label_noise: float = 0.05, eval_samples: int = 2000, skew: float = 0.0) -> None:
        self.features, self.classes, self.hidden = features, classes, hidden
        self.batch, self.label_noise = min(batch, samples_per_node), label_noise
        self.samples_per_node, self.rngs, self.skew = samples_per_node, rngs, skew
        teacher = rngs.stream("task")
        self._t1 = teacher.standard_normal((features, 2 * hidden)) / np.sqrt(features)
        self._t2 = teacher.standard_normal((2 * hidden, classes)) / np.sqrt(2 * hidden)
        self.eval_x, self.eval_y = self._draw(rngs.stream("eval"), eval_samples)
        self._shards: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        # slices of the flat vector: W1 (hidden×features), b1, W2 (classes×hidden), b2
        sizes = [hidden * features, hidden, classes * hidden, classes]
        self._bounds = np.cumsum([0, *sizes])

    def _draw(self, rng: np.random.Generator, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = rng.standard_normal((count, self.features))
        y = np.argmax(np.tanh(x @ self._t1) @ self._t2, axis=1)
        flip = rng.random(count) < self.label_noise
        y = np.where(flip, rng.integers(0, self.classes, count), y)
        return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64))

    def _shard(self, node: int) -> tuple[torch.Tensor, torch.Tensor]:
        if node not in self._shards:
            rng = self.rngs.stream("shard", node)
            if self.skew <= 0.0:
                self._shards[node] = self._draw(rng, self.samples_per_node)
            else:  # draw a pool, then keep `skew` of the shard from the home class
                x, y = self._draw(rng, 4 * self.classes * self.samples_per_node)
                home = int(torch.sum(y == node % self.classes))
                k = min(home, round(self.skew * self.samples_per_node))
                at_home = torch.nonzero(y == node % self.classes).flatten()[:k]
                rest = torch.nonzero(y != node % self.classes).flatten()[
                    : self.samples_per_node - k]
                idx = torch.cat([at_home, rest])
                self._shards[node] = x[idx], y[idx]
        return self._shards[node]

    @property
    def size(self) -> int:
        return int(self._bounds[-1])

    def init_params(self) -> np.ndarray:
        rng = self.rngs.stream("init")
        w1 = rng.uniform(-1, 1, (self.hidden, self.features)) / np.sqrt(self.features)
        w2 = rng.uniform(-1, 1, (self.classes, self.hidden)) / np.sqrt(self.hidden)
        parts = [w1.ravel(), np.zeros(self.hidden), w2.ravel(), np.zeros(self.classes)]
        return np.concatenate(parts).astype(np.float32)

    def _logits(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        b = self._bounds
        w1 = flat[b[0] : b[1]].view(self.hidden, self.features)
        w2 = flat[b[2] : b[3]].view(self.classes, self.hidden)
        return F.linear(F.relu(F.linear(x, w1, flat[b[1] : b[2]])), w2, flat[b[3] : b[4]])

    def gradient(self, params: np.ndarray, node: int, round: int,
                 poisoned: bool = False) -> GradientResult:
        x, y = self._shard(node)
        idx = self.rngs.stream("batch", node, round).choice(len(y), self.batch, replace=False)
        idx_t = torch.from_numpy(idx)
        labels = y[idx_t]
        if poisoned:  # label flipping: class c trains as class (classes - 1 - c)
            labels = self.classes - 1 - labels
        flat = torch.tensor(params, dtype=torch.float32, requires_grad=True)
        loss = F.cross_entropy(self._logits(flat, x[idx_t]), labels)
        loss.backward()
        assert flat.grad is not None
        return GradientResult(flat.grad.numpy().copy(), float(loss.item()), len(idx))

    def evaluate(self, params: np.ndarray) -> dict[str, float]:
        with torch.no_grad():
            logits = self._logits(torch.from_numpy(np.array(params, np.float32)), self.eval_x)
            loss = F.cross_entropy(logits, self.eval_y).item()
            accuracy = (logits.argmax(1) == self.eval_y).float().mean().item()
        return {"loss": float(loss), "accuracy": float(accuracy)}
