"""The workload interface and the compute job a node hands to its driver."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class GradientResult:
    values: np.ndarray  # flat float32 gradient
    loss: float  # training loss of the batch, before the step
    samples: int
    # further figures of this gradient (an RLHF policy step's reward, KL, clip fraction, ...):
    # each lands in rounds.parquet as `metric_<name>`, from the committing node's own gradient
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ParameterGroup:
    """A slice of the flat parameter vector with its own learning rate, gradient-norm bound
    and rounds: the optimizer steps a group only in its rounds, so a group outside them (a
    frozen reward model, a policy not yet trained) keeps its parameters and optimizer state
    bit for bit, whatever the aggregate holds there."""

    name: str
    start: int
    stop: int
    lr: float | None = None  # None: the scenario's training.lr
    max_norm: float | None = None  # an honest gradient's bound on this slice (None: none)
    first_round: int = 0
    last_round: int | None = None  # inclusive; None: to the end of the run

    def active(self, round: int) -> bool:
        return self.first_round <= round and (self.last_round is None or round <= self.last_round)


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

    def parameter_groups(self) -> tuple[ParameterGroup, ...]:
        """The vector's groups, in order and covering it; () for one group trained every
        round at the scenario's learning rate (every workload but a staged one)."""
        return ()

    def stage(self, round: int) -> str:
        """What `round` trains, as progress shows it ("train" unless the workload is staged)."""
        return "train"

    def compute(self, job: GradientJob) -> GradientResult:
        """The job's gradient. A workload that reads committed service state (an RLHF run's
        preference set) overrides this and finds it in `job.context`."""
        return self.gradient(job.params, job.node, job.round, job.poisoned)

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
    # committed state the node's services give the workload (Service.workload_inputs): a
    # pure function of committed data, the same at every node for the same round
    context: Mapping[str, Any] = field(default_factory=dict)

    def run(self) -> GradientResult:
        return self.workload.compute(self)
