"""Synthetic tasks with a hidden truth, drawn from a seed (a simulated run's tasks).

Task ids are `t0000`, `t0001`, ... and the true answer index of each comes from the named
stream "truth" of the seed, as `SimulatedCrowd` (crowd.py) draws it: a crowd built with the
same seed, count and classes labels these very tasks against the same truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ..rng import RngStreams
from .tasks import Answer, Task, TaskSet

__all__ = ["SCHEMAS", "Synthetic", "synthetic_tasks"]

SCHEMAS: Final = ("single_choice", "rating", "pairwise")


@dataclass(frozen=True)
class Synthetic:
    tasks: TaskSet
    truth: dict[str, Answer]  # by task id: the hidden true answer


def synthetic_tasks(count: int, classes: int, schema: str, gold: int, seed: int) -> Synthetic:
    """`count` tasks of kind `schema`; the first `gold` carry their truth as gold answer."""
    if schema not in SCHEMAS:
        raise ValueError(f"schema {schema[:40]!r} is not one of {', '.join(SCHEMAS)}")
    if not (count >= 1 and classes >= 2 and 0 <= gold <= count):
        raise ValueError("synthetic tasks need count >= 1, classes >= 2, 0 <= gold <= count")
    k = 2 if schema == "pairwise" else classes
    draws = RngStreams(seed).stream("truth").integers(0, k, size=count).tolist()
    tasks, truth = [], {}
    for i, index in enumerate(draws):
        task_id = f"t{i:04d}"
        if schema == "single_choice":
            task = Task.make(id=task_id, kind=schema, text=f"item {i}",
                             options=tuple(f"class {c}" for c in range(classes)))
        elif schema == "rating":
            task = Task.make(id=task_id, kind=schema, text=f"item {i}", scale=(1, classes, 1))
        else:
            task = Task.make(id=task_id, kind=schema, text=f"prompt {i}",
                             completions=(f"completion {i}a", f"completion {i}b"))
        tasks.append(task)
        truth[task_id] = Answer((int(index),))
    gold_answers = {f"t{i:04d}": truth[f"t{i:04d}"] for i in range(gold)}
    return Synthetic(TaskSet(tasks, gold_answers), truth)
