"""A seeded simulated crowd: tasks with a hidden true class and annotators who label them.

Honest annotators have a per-class accuracy and a bias (a favourite wrong class); spammers
click at random or always give one class; adversaries either relabel consistently through a
permutation (permuters) or all give the same wrong label to a task (colluders). Every draw
comes from a named stream of :class:`~phalanx.engine.rng.RngStreams` keyed by task and
annotator, so a crowd is a pure function of its spec and seed, whatever order tasks are
labelled in.

Annotators come from the spec's per-kind counts, or from `AnnotatorGroup`s (a scenario's
`curation.crowd.groups`: per-class accuracy, speed). `label(k)` draws k annotators per task
(the benchmark's crowd); `answer(task, annotator)` is an annotator's answer to a task the
platform assigned them (a simulated run). The truth is drawn from the stream "truth" as
synthetic.py draws it, so a crowd on the same seed, task count and classes labels the
synthetic tasks against their hidden truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..rng import RngStreams
from .labels.annotations import Annotations

COUNT_FIELDS = ("tasks", "classes", "honest", "random", "constant", "permuters", "colluders",
                "seed")
Kind = Literal["honest", "random", "constant", "permuter", "colluder"]
KINDS: tuple[Kind, ...] = ("honest", "random", "constant", "permuter", "colluder")
DEFAULT_SECONDS = {"honest": (8.0, 20.0)}  # spammers do not read the text: (1, 4) seconds


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

    def groups(self) -> tuple[AnnotatorGroup, ...]:
        """The spec's annotators as groups, one per kind, in the crowd's kind order."""
        counts = (self.honest, self.random, self.constant, self.permuters, self.colluders)
        return tuple(AnnotatorGroup(kind, count, accuracy=self.accuracy,
                                    class_spread=self.class_spread, bias=self.bias,
                                    adversary_accuracy=self.adversary_accuracy)
                     for kind, count in zip(KINDS, counts, strict=True))


def _is_share(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1


@dataclass(frozen=True)
class AnnotatorGroup:
    """``count`` annotators of one kind who behave alike.

    Honest ones draw a mean accuracy from ``accuracy`` (low, high) and each class's from that
    ± ``class_spread``, unless ``per_class`` fixes one accuracy per class; ``bias`` is the
    share of their errors that go to a favourite wrong class. Permuters follow their
    permutation with probability ``adversary_accuracy``. Each annotator's mean seconds per
    task is drawn from ``seconds`` (low, high; None: 8–20 for honest annotators, 1–4 for the
    others, who do not read the text), and each task takes that × lognormal(0, ``spread``).
    """

    kind: Kind
    count: int
    accuracy: tuple[float, float] = (0.6, 0.9)
    per_class: tuple[float, ...] = ()
    class_spread: float = 0.05
    bias: float = 0.5
    adversary_accuracy: float = 0.9
    seconds: tuple[float, float] | None = None
    spread: float = 0.3

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise CrowdError(f"AnnotatorGroup.kind must be one of {', '.join(KINDS)}; "
                             f"got {self.kind!r}")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 0:
            raise CrowdError(f"AnnotatorGroup.count must be an integer >= 0; got {self.count!r}")
        for name in ("accuracy", "seconds"):
            bounds = getattr(self, name)
            if bounds is None and name == "seconds":
                continue
            valid = _is_share if name == "accuracy" else _is_duration
            if not (isinstance(bounds, tuple) and len(bounds) == 2 and all(map(valid, bounds))
                    and bounds[0] <= bounds[1]):
                limit = "0 <= low <= high <= 1" if name == "accuracy" else "0 < low <= high"
                raise CrowdError(f"AnnotatorGroup.{name} must be (low, high) with {limit}; "
                                 f"got {bounds!r}")
        if not (isinstance(self.per_class, tuple) and all(map(_is_share, self.per_class))):
            raise CrowdError("AnnotatorGroup.per_class must be a tuple of accuracies in [0, 1]")
        for name in ("class_spread", "bias", "adversary_accuracy"):
            if not _is_share(getattr(self, name)):
                raise CrowdError(f"AnnotatorGroup.{name} must be in [0, 1]; "
                                 f"got {getattr(self, name)!r}")
        if not _is_duration(self.spread) and self.spread != 0:
            raise CrowdError(f"AnnotatorGroup.spread must be a number >= 0; got {self.spread!r}")


def _is_duration(value: object) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and 0 < value < float("inf"))


@dataclass(frozen=True, eq=False)
class SimulatedAnnotator:
    """``confusion[true, label]``: the probability of each label given the true class
    (for colluders, their marginal behaviour: any wrong class, chosen with the others)."""

    id: str
    kind: Kind
    confusion: np.ndarray
    seconds_per_label: float
    spread: float = 0.3  # lognormal sigma of one label's time around seconds_per_label

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

    def __init__(self, spec: CrowdSpec, groups: Sequence[AnnotatorGroup] | None = None) -> None:
        """`groups`, when given, are the annotators instead of the spec's per-kind counts
        and skill settings (the spec still gives tasks, classes and seed)."""
        self.spec = spec
        self._streams = RngStreams(spec.seed)
        self.tasks = tuple(f"t{i:04d}" for i in range(spec.tasks))
        truth = self._streams.stream("truth").integers(0, spec.classes, size=spec.tasks)
        self.truth: dict[str, int] = dict(zip(self.tasks, truth.tolist(), strict=True))
        groups = spec.groups() if groups is None else tuple(groups)
        for group in groups:
            if group.per_class and len(group.per_class) != spec.classes:
                raise CrowdError(f"AnnotatorGroup.per_class gives {len(group.per_class)} "
                                 f"accuracies for {spec.classes} classes")
        if sum(g.count for g in groups) < 1:
            raise CrowdError("a crowd needs at least one annotator")
        made: dict[Kind, int] = dict.fromkeys(KINDS, 0)  # ids and streams count per kind
        annotators = []
        for group in groups:
            for _ in range(group.count):
                annotators.append(self._annotator(group, made[group.kind]))
                made[group.kind] += 1
        self.annotators = tuple(annotators)

    def _annotator(self, group: AnnotatorGroup, index: int) -> SimulatedAnnotator:
        kind = group.kind
        rng = self._streams.stream("annotator", kind, index)
        if kind == "honest":
            confusion = self._honest_confusion(rng, group)
        else:
            confusion = self._spammer_confusion(kind, rng, group)
        seconds = rng.uniform(*(group.seconds or DEFAULT_SECONDS.get(kind, (1.0, 4.0))))
        return SimulatedAnnotator(f"{kind}-{index}", kind, confusion, float(seconds),
                                  group.spread)

    def _honest_confusion(self, rng: np.random.Generator, group: AnnotatorGroup) -> np.ndarray:
        k = self.spec.classes
        if group.per_class:
            per_class = np.array(group.per_class, dtype=np.float64)
        else:
            mean = rng.uniform(*group.accuracy)
            per_class = np.clip(mean + rng.uniform(-group.class_spread, group.class_spread,
                                                   size=k), 0.0, 1.0)
        favourite = int(rng.integers(k))
        confusion = np.empty((k, k))
        for true in range(k):
            wrong = [c for c in range(k) if c != true]
            shares = np.full(k - 1, 1.0 / (k - 1))
            if favourite != true:
                shares = shares * (1.0 - group.bias)
                shares[wrong.index(favourite)] += group.bias
            confusion[true, wrong] = (1.0 - per_class[true]) * shares
            confusion[true, true] = per_class[true]
        return confusion

    def _spammer_confusion(self, kind: Kind, rng: np.random.Generator,
                           group: AnnotatorGroup) -> np.ndarray:
        k = self.spec.classes
        if kind == "random":
            return np.full((k, k), 1.0 / k)
        if kind == "constant":
            confusion = np.zeros((k, k))
            confusion[:, int(rng.integers(k))] = 1.0
            return confusion
        if kind == "permuter":  # a shift by 1..k-1 sends every class to a wrong one
            shift = int(rng.integers(1, k))
            p = group.adversary_accuracy
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
        seconds = float(annotator.seconds_per_label * rng.lognormal(0.0, annotator.spread))
        return SimulatedLabel(task, annotator.id, label, seconds)

    def answer(self, task: str, annotator: SimulatedAnnotator) -> SimulatedLabel:
        """`annotator`'s label for `task` when the platform assigns it (not `label`'s random
        draw of annotators): the same pair always gives the same label and time."""
        if task not in self.truth:
            raise CrowdError(f"no task {task[:40]!r} in this crowd")
        return self._answer(task, annotator, 0)

    def _collusion_label(self, task: str) -> int:
        """The wrong label every colluder gives this task (they agree among themselves)."""
        shift = int(self._streams.stream("collusion", task).integers(1, self.spec.classes))
        return (self.truth[task] + shift) % self.spec.classes

    def annotations(self, redundancy: int) -> Annotations:
        return Annotations.from_records(
            ((x.task, x.worker, x.label) for x in self.label(redundancy)),
            classes=range(self.spec.classes))
