"""The single-choice answers of a log counted per task, kept up to date as records arrive, so
that Krippendorff's alpha over them needs no pass over the whole log.

`ChoiceTally.alpha()` is bit for bit `krippendorff_alpha(Annotations.from_records(rows))`
over the rows of `log.answers()` that answer single-choice tasks (the latest answer per task
and annotator, equivocators left out): it builds the same whole-number count matrix, units
in task-digest order and values in sorted order, and hands it to the same computation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np

from .agreement import AgreementError, alpha_from_counts
from .log import CurationLog

__all__ = ["ChoiceTally"]


class ChoiceTally:
    def __init__(self) -> None:
        self._choice: dict[tuple[bytes, bytes], int] = {}  # (task, annotator) -> counted
        self._counts: dict[bytes, Counter[int]] = {}  # task -> choice -> annotators
        self._equivocators: frozenset[bytes] = frozenset()

    def update(self, log: CurationLog, keys: Iterable[tuple[bytes, bytes]]) -> None:
        """Count again the (task, annotator) answers `keys` that `log` just took records
        for, and drop every answer of an annotator who became an equivocator."""
        equivocators = log.equivocators
        if equivocators != self._equivocators:
            fresh = equivocators - self._equivocators
            self._equivocators = equivocators
            for key in [k for k in self._choice if k[1] in fresh]:
                self._set(key, None)
        for task, annotator in keys:
            row = log.latest(task, annotator)
            counted = row is not None and annotator not in equivocators and (
                log.tasks.tasks[task].kind == "single_choice")
            self._set((task, annotator), row.answer.choice[0] if counted else None)  # type: ignore[union-attr]

    def _set(self, key: tuple[bytes, bytes], choice: int | None) -> None:
        old = self._choice.pop(key, None)
        if old is not None:
            counts = self._counts[key[0]]
            counts[old] -= 1
            if not counts[old]:
                del counts[old]
                if not counts:
                    del self._counts[key[0]]
        if choice is not None:
            self._choice[key] = choice
            self._counts.setdefault(key[0], Counter())[choice] += 1

    def alpha(self) -> float | None:
        """Krippendorff's alpha (nominal) over the counted answers; None without any, or
        where alpha is undefined."""
        if not self._counts:
            return None
        values = tuple(sorted({c for counts in self._counts.values() for c in counts}))
        column = {v: i for i, v in enumerate(values)}
        matrix = np.zeros((len(self._counts), len(values)))
        for row, task in enumerate(sorted(self._counts)):
            for choice, n in self._counts[task].items():
                matrix[row, column[choice]] = n
        try:
            return alpha_from_counts(matrix, values)
        except AgreementError:
            return None
