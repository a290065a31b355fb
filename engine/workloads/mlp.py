"""A small torch classifier on a synthetic task with a held-out set.

Labels come from a random teacher network (with a little label noise), so the task is
non-linear and a one-hidden-layer student (engine/workloads/classifier.py) has to learn it.

Shards: by default (`split` IID) each node draws its own `samples_per_node` samples from its own
stream. Any other split (engine/workloads/splits.py: dirichlet, extreme, gamma_similarity) draws
one pool of n × samples_per_node samples from the "pool" stream and shares it out with the
split, drawing from the "split" stream. `skew`, the older non-IID knob, is kept as it was: node
i's shard holds a fraction `skew` of samples of its "home" class (i mod classes) on top of an
IID share, the label-skew setting in which robust rules struggle (Karimireddy, He, Jaggi 2022).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from phalanx.engine.rng import RngStreams
from phalanx.engine.workloads.classifier import HiddenLayerClassifier
from phalanx.engine.workloads.splits import IidSplit, Split, make_split


class MlpClassifier(HiddenLayerClassifier):
    name = "mlp"

    def __init__(self, *, n_nodes: int, rngs: RngStreams, features: int = 16, classes: int = 4,
                 hidden: int = 32, samples_per_node: int = 512, batch: int = 32,
                 label_noise: float = 0.05, eval_samples: int = 2000, skew: float = 0.0,
                 split: Split | Mapping[str, Any] | str | None = None) -> None:
        super().__init__(rngs=rngs, features=features, classes=classes, hidden=hidden,
                         batch=batch)
        self.n_nodes, self.label_noise = n_nodes, label_noise
        self.samples_per_node, self.skew = samples_per_node, skew
        self.split = make_split(split)
        if skew > 0.0 and not isinstance(self.split, IidSplit):
            raise ValueError(f"skew ({skew}) and split ({self.split.kind}) both make the shards "
                             f"non-IID: give one of them")
        teacher = rngs.stream("task")
        self._t1 = teacher.standard_normal((features, 2 * hidden)) / np.sqrt(features)
        self._t2 = teacher.standard_normal((2 * hidden, classes)) / np.sqrt(2 * hidden)
        self.eval_x, self.eval_y = self._draw(rngs.stream("eval"), eval_samples)
        self._shards: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _draw(self, rng: np.random.Generator, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = rng.standard_normal((count, self.features))
        y = np.argmax(np.tanh(x @ self._t1) @ self._t2, axis=1)
        flip = rng.random(count) < self.label_noise
        y = np.where(flip, rng.integers(0, self.classes, count), y)
        return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64))

    def _shard(self, node: int) -> tuple[torch.Tensor, torch.Tensor]:
        if node not in self._shards:
            if not isinstance(self.split, IidSplit):
                self._split_pool()
            elif self.skew <= 0.0:
                self._shards[node] = self._draw(self.rngs.stream("shard", node),
                                                self.samples_per_node)
            else:
                self._shards[node] = self._skewed(node)
        return self._shards[node]

    def _split_pool(self) -> None:
        """Every node's shard at once: one pool, shared out by the split."""
        x, y = self._draw(self.rngs.stream("pool"), self.n_nodes * self.samples_per_node)
        parts = self.split(y.numpy(), self.n_nodes, self.rngs.stream("split"))
        for node, idx in enumerate(parts):
            idx_t = torch.from_numpy(idx)
            self._shards[node] = x[idx_t], y[idx_t]

    def _skewed(self, node: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw a pool, then keep `skew` of the shard from the home class."""
        x, y = self._draw(self.rngs.stream("shard", node), 4 * self.classes * self.samples_per_node)
        home = int(torch.sum(y == node % self.classes))
        k = min(home, round(self.skew * self.samples_per_node))
        at_home = torch.nonzero(y == node % self.classes).flatten()[:k]
        rest = torch.nonzero(y != node % self.classes).flatten()[: self.samples_per_node - k]
        idx = torch.cat([at_home, rest])
        return x[idx], y[idx]
