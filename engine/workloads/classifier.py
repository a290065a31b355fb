"""A one-hidden-layer torch classifier over a flat float32 parameter vector: the model the mlp
and digits workloads share. A subclass supplies the data: each node's shard and a held-out set.

The network is written as a pure function of the flat vector (nodes exchange and average flat
vectors): logits = W2·relu(W1·x + b1) + b2.
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np
import torch
import torch.nn.functional as F

from phalanx.engine.rng import RngStreams
from phalanx.engine.workloads.base import GradientResult, Workload
from phalanx.engine.workloads.splits import label_histogram


class HiddenLayerClassifier(Workload):
    """Cross-entropy on a one-hidden-layer ReLU network; accuracy on the held-out set.

    Subclasses set `eval_x`/`eval_y` and implement `_shard(node)` (features, labels)."""

    eval_x: torch.Tensor
    eval_y: torch.Tensor

    def __init__(self, *, rngs: RngStreams, features: int, classes: int, hidden: int,
                 batch: int) -> None:
        self.features, self.classes, self.hidden = features, classes, hidden
        self.rngs, self.batch = rngs, batch
        # slices of the flat vector: W1 (hidden×features), b1, W2 (classes×hidden), b2
        sizes = [hidden * features, hidden, classes * hidden, classes]
        self._bounds = np.cumsum([0, *sizes])

    @abstractmethod
    def _shard(self, node: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Node `node`'s training data: float32 features and int64 labels."""

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
        batch = min(self.batch, len(y))  # a non-IID split may leave a node a small shard
        idx = self.rngs.stream("batch", node, round).choice(len(y), batch, replace=False)
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

    def label_histogram(self, node: int) -> list[int]:
        return label_histogram(self._shard(node)[1].numpy(), self.classes)
