"""The input of every label aggregator: (task, worker, label) records in one canonical order.

Records arrive from replicas in any order; sorting them by (task, worker) and indexing tasks,
workers and classes by their sorted ids makes every result a function of the set of records
alone, so two nodes holding the same records compute the same labels bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

Id = str | int
"""A task, worker or class identifier: a string or an integer (never a bool or a float)."""


class LabelError(ValueError):
    """Bad annotation input; the message is one line naming the bad value."""


def canonical_key(value: Id) -> tuple[int, int | str]:
    """A total order over mixed ids: integers first (numerically), then strings."""
    return (0, value) if isinstance(value, int) else (1, value)


def check_id(value: object, field: str) -> Id:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise LabelError(f"{field} must be a string or an integer; got {value!r}")
    return value


def sorted_ids(values: Iterable[Id]) -> tuple[Id, ...]:
    return tuple(sorted(set(values), key=canonical_key))


@dataclass(frozen=True, eq=False)
class Annotations:
    """Annotations in canonical order, as integer codes into sorted id tuples.

    Row ``i`` says worker ``workers[worker[i]]`` gave task ``tasks[task[i]]`` the label
    ``classes[label[i]]``; rows are sorted by (task, worker) and a worker labels a task once.

    Example::

        data = Annotations.from_records([("t1", "ann", "cat"), ("t1", "bob", "dog"),
                                         ("t2", "ann", "dog")])
        data.tasks, data.classes        # ("t1", "t2"), ("cat", "dog")
    """

    tasks: tuple[Id, ...]
    workers: tuple[Id, ...]
    classes: tuple[Id, ...]
    task: np.ndarray
    worker: np.ndarray
    label: np.ndarray

    @classmethod
    def from_records(cls, records: Iterable[Sequence[object]],
                     classes: Sequence[Id] | None = None) -> Annotations:
        """Build from (task, worker, label) records in any order.

        ``classes`` fixes the label set and its order (for a class nobody chose yet); without
        it the classes are the labels seen, sorted. An exact duplicate record (one replicated
        twice) counts once; a worker giving one task two different labels is an error.
        """
        seen: dict[tuple[Id, Id], Id] = {}
        for n, record in enumerate(records):
            if len(record) != 3:
                raise LabelError(f"record {n} must be (task, worker, label); got {record!r}")
            task, worker, label = (check_id(v, f)
                                   for v, f in zip(record, ("task", "worker", "label"), strict=True))
            previous = seen.setdefault((task, worker), label)
            if previous != label:
                raise LabelError(f"worker {worker!r} labelled task {task!r} twice "
                                 f"({previous!r} and {label!r})")
        if classes is None:
            class_ids = sorted_ids(seen.values())
        else:
            class_ids = tuple(check_id(c, "class") for c in classes)
            if len(set(class_ids)) != len(class_ids):
                raise LabelError(f"classes must be distinct; got {list(class_ids)!r}")
            unknown = set(seen.values()) - set(class_ids)
            if unknown:
                raise LabelError(f"label {sorted(unknown, key=canonical_key)[0]!r} is not one of "
                                 f"the classes {list(class_ids)!r}")
        tasks = sorted_ids(t for t, _ in seen)
        workers = sorted_ids(w for _, w in seen)
        task_code = {t: i for i, t in enumerate(tasks)}
        worker_code = {w: i for i, w in enumerate(workers)}
        class_code = {c: i for i, c in enumerate(class_ids)}
        rows = sorted((task_code[t], worker_code[w], class_code[lab])
                      for (t, w), lab in seen.items())
        codes = np.array(rows, dtype=np.int64).reshape(len(rows), 3)
        return cls(tasks, workers, class_ids, codes[:, 0].copy(), codes[:, 1].copy(),
                   codes[:, 2].copy())

    def __len__(self) -> int:
        return int(self.task.shape[0])

    def records(self) -> list[tuple[Id, Id, Id]]:
        """The (task, worker, label) records back, in canonical order."""
        return [(self.tasks[t], self.workers[w], self.classes[c])
                for t, w, c in zip(self.task.tolist(), self.worker.tolist(),
                                   self.label.tolist(), strict=True)]

    def counts(self, weights: np.ndarray | None = None) -> np.ndarray:
        """(tasks × classes) sum of the weights of the labels each task received (1 each by
        default)."""
        n_classes = len(self.classes)
        flat = self.task * n_classes + self.label
        return ordered_sum(flat, weights, len(self.tasks) * n_classes).reshape(
            len(self.tasks), n_classes)

    def labels_per_task(self) -> np.ndarray:
        return np.bincount(self.task, minlength=len(self.tasks))

    def rank_in_task(self) -> np.ndarray:
        """For each row, how many rows of the same task come before it (0, 1, 2, ...)."""
        starts = np.concatenate(([0], np.cumsum(self.labels_per_task())[:-1]))
        return np.arange(len(self)) - starts[self.task]

    def subset(self, keep: np.ndarray) -> Annotations:
        """The rows where the boolean mask ``keep`` is true, with the same id tuples."""
        return Annotations(self.tasks, self.workers, self.classes, self.task[keep],
                           self.worker[keep], self.label[keep])


def ordered_sum(index: np.ndarray, values: np.ndarray | None, size: int) -> np.ndarray:
    """``out[index[i]] += values[i]`` for i in row order, in float64.

    ``np.bincount`` adds in input order one element at a time (no pairwise or SIMD
    reassociation), so with canonical row order the sums are the same bits on every machine.
    """
    return np.bincount(index, weights=values, minlength=size).astype(np.float64, copy=False)
