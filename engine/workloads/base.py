"""The workload interface and the compute job a node hands to its driver."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class GradientResult:
    values: np.ndarray  # flat float32 gradient
    loss: float  # training loss of the batch, before the step
    samples: int


class Workload(ABC):
    """A model with flat float32 parameters, per-node data shards and a held-out set.

    Every draw comes from the run's named RNG streams, so node i's batch in round r is a pure
    function of (seed, i, r): a restarted node or a real process recomputes the same gradient.
    """

    name: str

    @abstractmethod
    def init_params(self) -> np.ndarray: ...

    @abstractmethod
    def gradient(self, params: np.ndarray, node: int, round: int,
                 poisoned: bool = False) -> GradientResult:
        """Node `node`'s gradient for `round`; `poisoned` flips the batch's labels (the
        data-poisoning attack of a Byzantine node)."""

    @abstractmethod
    def evaluate(self, params: np.ndarray) -> dict[str, float]:
        """Held-out metrics: always "loss", plus "accuracy" for classifiers."""

    def label_histogram(self, node: int) -> list[int] | None:
        """How many training samples of each class node `node`'s shard holds; None for a
        workload without class labels."""
        return None


@dataclass(frozen=True, slots=True)
class GradientJob:
    """Compute node `node`'s gradient for `round` on a snapshot of the parameters."""

    workload: Workload
    node: int
    round: int
    params: np.ndarray
    cost: float = 1.0
    poisoned: bool = False  # labels flipped: see Workload.gradient

    def run(self) -> GradientResult:
        return self.workload.gradient(self.params, self.node, self.round, self.poisoned)
