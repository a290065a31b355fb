"""A seeded simulated crowd: tasks with a hidden true class and annotators who label them.

Honest annotators have a per-class accuracy and a bias (a favourite wrong class); spammers
click at random or always give one class; adversaries either relabel consistently through a
permutation (permuters) or all give the same wrong label to a task (colluders). Every draw
comes from a named stream of :class:`~phalanx.engine.rng.RngStreams` keyed by task and
annotator, so a crowd is a pure function of its spec and seed, whatever order tasks are
labelled in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..rng import RngStreams
from .labels.annotations import Annotations

COUNT_FIELDS = ("tasks", "classes", "honest", "random", "constant", "permuters", "colluders",
                "seed")
Kind = Literal["honest", "random", "constant", "permuter", "colluder"]


class CrowdError(ValueError):
    """A crowd spec or request that cannot be simulated; one line naming the bad field."""


@dataclass(frozen=True)
class CrowdSpec:
    """How many tasks, classes and annotators of each kind; honest accuracies are drawn
    from ``accuracy`` (low, high), each class's from that ± ``class_spread``; ``bias`` is
    the share of an honest annotator's errors that go to its favourite wrong class;
    permuters follow their permutation with probability ``adversary_accuracy``."""

    tasks: int = 200
    classes: int = 3
    honest: int = 8
    random: int = 2
    constant: int = 1
    permuters: int = 2
    colluders: int = 2
    accuracy: tuple[float, float] = (0.6, 0.9)
    class_spread: float = 0.05
    bias: float = 0.5
    adversary_accuracy: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        for name in COUNT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise CrowdError(f"CrowdSpec.{name} must be an integer >= 0; got {value!r}")
        if self.tasks < 1 or self.classes < 2:
            raise CrowdError(f"a crowd needs >= 1 task and >= 2 classes; got tasks={self.tasks}, "
                             f"classes={self.classes}")
        if self.annotators < 1:
            raise CrowdError("a crowd needs at least one annotator")
        bounds = self.accuracy
        if not (isinstance(bounds, tuple) and len(bounds) == 2 and all(map(_is_share, bounds))
                and bounds[0] <= bounds[1]):
            raise CrowdError(f"CrowdSpec.accuracy must be (low, high) with 0 <= low <= high <= 1;"
                             f" got {self.accuracy!r}")
        for name in ("class_spread", "bias", "adversary_accuracy"):
            value = getattr(self, name)
            if not _is_share(value):
                raise CrowdError(f"CrowdSpec.{name} must be in [0, 1]; got {value!r}")

    @property
    def annotators(self) -> int:
        return self.honest + self.random + self.constant + self.permuters + self.colluders


def _is_share(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1


@dataclass(frozen=True, eq=False)
class SimulatedAnnotator:
    """``confusion[true, label]``: the probability of each label given the true class
    (for colluders, their marginal behaviour: any wrong class, chosen with the others)."""

    id: str
    kind: Kind
    confusion: np.ndarray
    seconds_per_label: float

    @property
    def honest(self) -> bool:
        return self.kind == "honest"


@dataclass(frozen=True)
class SimulatedLabel:
    task: str
    worker: str
    label: int
    seconds: float


class SimulatedCrowd:
    """Tasks ``t0000``, ``t0001``, ... with hidden classes ``truth`` (0..classes-1, uniform)
    and the annotators the spec asks for.

    Example::

        crowd = SimulatedCrowd(CrowdSpec(seed=1))
        data = crowd.annotations(redundancy=5)        # 5 distinct annotators per task
        crowd.truth["t0000"], crowd.annotators[0].kind
    """

    def __init__(self, spec: CrowdSpec) -> None:
        self.spec = spec
        self._streams = RngStreams(spec.seed)
        self.tasks = tuple(f"t{i:04d}" for i in range(spec.tasks))
        truth = self._streams.stream("truth").integers(0, spec.classes, size=spec.tasks)
        self.truth: dict[str, int] = dict(zip(self.tasks, truth.tolist(), strict=True))
        kinds: list[tuple[Kind, int]] = [("honest", spec.honest), ("random", spec.random),
                                         ("constant", spec.constant),
                                         ("permuter", spec.permuters),
                                         ("colluder", spec.colluders)]
        self.annotators = tuple(self._annotator(kind, i) for kind, count in kinds
                                for i in range(count))

    def _annotator(self, kind: Kind, index: int) -> SimulatedAnnotator:
        rng = self._streams.stream("annotator", kind, index)
        if kind == "honest":
            confusion = self._honest_confusion(rng)
            seconds = rng.uniform(8.0, 20.0)
        else:
            confusion = self._spammer_confusion(kind, rng)
            seconds = rng.uniform(1.0, 4.0)  # spammers do not read the text
        return SimulatedAnnotator(f"{kind}-{index}", kind, confusion, float(seconds))

    def _honest_confusion(self, rng: np.random.Generator) -> np.ndarray:
        s, k = self.spec, self.spec.classes
        mean = rng.uniform(*s.accuracy)
        per_class = np.clip(mean + rng.uniform(-s.class_spread, s.class_spread, size=k),
                            0.0, 1.0)
        favourite = int(rng.integers(k))
        confusion = np.empty((k, k))
        for true in range(k):
            wrong = [c for c in range(k) if c != true]
            shares = np.full(k - 1, 1.0 / (k - 1))
            if favourite != true:
                shares = shares * (1.0 - s.bias)
                shares[wrong.index(favourite)] += s.bias
            confusion[true, wrong] = (1.0 - per_class[true]) * shares
            confusion[true, true] = per_class[true]
        return confusion

    def _spammer_confusion(self, kind: Kind, rng: np.random.Generator) -> np.ndarray:
        k = self.spec.classes
        if kind == "random":
            return np.full((k, k), 1.0 / k)
        if kind == "constant":
            confusion = np.zeros((k, k))
            confusion[:, int(rng.integers(k))] = 1.0
            return confusion
        if kind == "permuter":  # a shift by 1..k-1 sends every class to a wrong one
            shift = int(rng.integers(1, k))
            p = self.spec.adversary_accuracy
            confusion = np.full((k, k), (1.0 - p) / k)
            confusion[np.arange(k), (np.arange(k) + shift) % k] += p
            return confusion
        return (1.0 - np.eye(k)) / (k - 1)  # colluder: wrong, with the other colluders

    def label(self, redundancy: int) -> list[SimulatedLabel]:
        """Each task labelled by ``redundancy`` distinct annotators, drawn uniformly from a
        stream per (redundancy, task); the same redundancy always gives the same labels."""
        n = len(self.annotators)
        if isinstance(redundancy, bool) or not isinstance(redundancy, int) or not 1 <= redundancy <= n:
            raise CrowdError(f"redundancy must be an integer from 1 to {n} (the annotators); "
                             f"got {redundancy!r}")
        out: list[SimulatedLabel] = []
        for task in self.tasks:
            chosen = self._streams.stream("assign", redundancy, task).choice(
                n, size=redundancy, replace=False)
            for a in sorted(chosen.tolist()):
                out.append(self._answer(task, self.annotators[a], redundancy))
        return out

    def _answer(self, task: str, annotator: SimulatedAnnotator, redundancy: int) -> SimulatedLabel:
        rng = self._streams.stream("label", redundancy, task, annotator.id)
        truth = self.truth[task]
        if annotator.kind == "colluder":
            label = self._collusion_label(task)
        else:
            label = int(rng.choice(self.spec.classes, p=annotator.confusion[truth]))
        seconds = float(annotator.seconds_per_label * rng.lognormal(0.0, 0.3))
        return SimulatedLabel(task, annotator.id, label, seconds)

    def _collusion_label(self, task: str) -> int:
        """The wrong label every colluder gives this task (they agree among themselves)."""
        shift = int(self._streams.stream("collusion", task).integers(1, self.spec.classes))
        return (self.truth[task] + shift) % self.spec.classes

    def annotations(self, redundancy: int) -> Annotations:
        return Annotations.from_records(
            ((x.task, x.worker, x.label) for x in self.label(redundancy)),
            classes=range(self.spec.classes))
