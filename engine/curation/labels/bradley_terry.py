"""Bradley–Terry scores for pairwise preferences, fitted by minorization–maximization."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Self

import numpy as np

from .annotations import Id, LabelError, canonical_key, check_id, ordered_sum, sorted_ids
from .base import require_iterations


@dataclass(frozen=True, eq=False)
class Comparisons:
    """(left, right, winner) comparisons in canonical order, as codes into sorted ``items``.

    The same pair may be compared many times (by different people); each record counts.
    """

    items: tuple[Id, ...]
    left: np.ndarray
    right: np.ndarray
    left_won: np.ndarray

    @classmethod
    def from_records(cls, records: Iterable[Sequence[object]]) -> Comparisons:
        rows: list[tuple[Id, Id, Id]] = []
        for n, record in enumerate(records):
            if len(record) != 3:
                raise LabelError(f"comparison {n} must be (left, right, winner); got {record!r}")
            left, right, winner = (check_id(v, f) for v, f in
                                   zip(record, ("left", "right", "winner"), strict=True))
            if left == right:
                raise LabelError(f"comparison {n} compares {left!r} with itself")
            if winner not in (left, right):
                raise LabelError(f"comparison {n}: winner {winner!r} is neither {left!r} "
                                 f"nor {right!r}")
            rows.append((left, right, winner))
        items = sorted_ids(i for row in rows for i in row[:2])
        code = {item: i for i, item in enumerate(items)}
        coded = sorted((code[a], code[b], int(w == a)) for a, b, w in rows)
        table = np.array(coded, dtype=np.int64).reshape(len(coded), 3)
        return cls(items, table[:, 0].copy(), table[:, 1].copy(), table[:, 2].astype(bool))

    def __len__(self) -> int:
        return int(self.left.shape[0])


@dataclass
class BradleyTerry:
    """Bradley & Terry (1952): item i beats item j with probability p_i / (p_i + p_j).
    Fitted with Hunter's (2004) MM update p_i ← wins_i / Σ_j n_ij / (p_i + p_j).

    Each item also plays ``prior_games`` virtual wins and as many losses against a fixed
    reference of strength 1, a regularizer that keeps unbeaten and winless items finite and
    disconnected groups of items on one scale. ``scores_`` are the strengths scaled to sum
    to 1; ``ranking_`` lists items best first (ties in sorted order).

    Example::

        data = Comparisons.from_records([("a", "b", "a"), ("b", "c", "b"), ("a", "c", "a")])
        BradleyTerry().fit(data).ranking_          # ["a", "b", "c"]
    """

    n_iter: int = 100
    tol: float = 1e-5
    prior_games: float = 0.5
    scores_: dict[Id, float] = field(init=False, repr=False)
    ranking_: list[Id] = field(init=False, repr=False)
    n_iter_: int = field(init=False, repr=False)

    def fit(self, data: Comparisons) -> Self:
        if not isinstance(data, Comparisons):
            raise LabelError("BradleyTerry.fit expects Comparisons "
                             f"(Comparisons.from_records(...)); got {type(data).__name__}")
        if len(data) == 0:
            raise LabelError("BradleyTerry.fit: no comparisons to fit")
        require_iterations("BradleyTerry", self.n_iter, self.tol)
        if not isinstance(self.prior_games, int | float) or not self.prior_games > 0:
            raise LabelError(f"BradleyTerry.prior_games must be a number > 0; "
                             f"got {self.prior_games!r}")
        n = len(data.items)
        winner = np.where(data.left_won, data.left, data.right)
        wins = ordered_sum(winner, None, n) + self.prior_games
        both = np.concatenate((data.left, data.right))
        strength = np.ones(n)
        self.n_iter_ = 0
        for _ in range(self.n_iter):
            pair = 1.0 / (strength[data.left] + strength[data.right])
            games = ordered_sum(both, np.concatenate((pair, pair)), n)
            games += 2.0 * self.prior_games / (strength + 1.0)
            updated = wins / games
            self.n_iter_ += 1
            moved = float(np.max(np.abs(updated - strength) / strength))
            strength = updated
            if moved < self.tol:
                break
        scores = strength / np.cumsum(strength)[-1]
        self.scores_ = dict(zip(data.items, scores.tolist(), strict=True))
        self.ranking_ = sorted(data.items, key=lambda i: (-self.scores_[i], canonical_key(i)))
        return self
