"""How a pool of labelled samples is shared out among the nodes: IID or label-skewed (non-IID).

Robust aggregation rules look fine on IID shards and break on heterogeneous ones (Karimireddy,
He, Jaggi, ICLR 2022), so a classification workload takes its shards from one of these splits,
the four that ByzFL (EPFL) ships and Flower's `flwr-datasets` partitioners mirror:

- `IidSplit`: a random permutation of the pool cut into n near-equal parts;
- `DirichletSplit(alpha)`: for each class, its samples go to the nodes in proportions drawn
  from Dirichlet(alpha, ..., alpha) (Hsu, Qi, Brown 2019; ByzFL's `dirichlet_niid`): small
  alpha puts most of a class on a few nodes, large alpha approaches IID;
- `ExtremeSplit`: the pool sorted by label and cut into n contiguous shards (ByzFL's
  `extreme_niid`; "sorted by label" in Karimireddy et al. 2022): each node sees one or two
  classes when there are about as many classes as nodes;
- `GammaSimilaritySplit(gamma)`: a fraction gamma of the pool spread IID, the rest sorted by
  label and cut (ByzFL's `gamma_similarity_niid`): gamma 1 is IID, gamma 0 is extreme.

A split maps (the pool's labels, n nodes, a numpy Generator) to n index arrays into the pool,
each sorted, disjoint, together covering the pool. It draws only from the Generator it is given
(a run passes `rngs.stream("split")`), so the shards are a pure function of the run's seed.

No node is left without data: a Dirichlet draw with small alpha can give a node nothing, and
then each empty node, in turn, takes the last sample of the largest shard (the lowest-numbered
one on ties). A pool with fewer samples than nodes is refused (ValueError).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np


class Split(ABC):
    """Share a pool of labelled samples among n nodes (see the module's docstring)."""

    kind: ClassVar[str]

    def __call__(self, labels: np.ndarray, n: int, rng: np.random.Generator) -> list[np.ndarray]:
        """n sorted int64 index arrays into `labels`: disjoint, covering it, none empty."""
        labels = np.asarray(labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{self.kind} split: labels must be a 1-D integer array "
                             f"(got shape {labels.shape}, dtype {labels.dtype})")
        if n < 1:
            raise ValueError(f"{self.kind} split: needs at least one node (got n={n})")
        if len(labels) < n:
            raise ValueError(f"{self.kind} split: cannot give each of {n} nodes a sample from a "
                             f"pool of {len(labels)}")
        parts = [np.sort(np.asarray(p, dtype=np.int64)) for p in self._assign(labels, n, rng)]
        return _fill_empty(parts)

    @abstractmethod
    def _assign(self, labels: np.ndarray, n: int,
                rng: np.random.Generator) -> list[np.ndarray]: ...


@dataclass(frozen=True, slots=True)
class IidSplit(Split):
    """A random permutation of the pool cut into n parts whose sizes differ by at most one."""

    kind: ClassVar[str] = "iid"

    def _assign(self, labels: np.ndarray, n: int,
                rng: np.random.Generator) -> list[np.ndarray]:
        return np.array_split(rng.permutation(len(labels)), n)


@dataclass(frozen=True, slots=True)
class DirichletSplit(Split):
    """Each class's samples (in a random order) go to the nodes in proportions p ~ Dir(alpha·1):
    node j gets the slice between floor(cumsum(p)[j-1]·count) and floor(cumsum(p)[j]·count),
    as in ByzFL's `dirichlet_niid` (Hsu, Qi, Brown 2019, "Measuring the effects of non-identical
    data distribution for federated visual classification")."""

    kind: ClassVar[str] = "dirichlet"
    alpha: float = 0.5

    def __post_init__(self) -> None:
        if not (np.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"dirichlet split: alpha must be a positive number "
                             f"(got {self.alpha!r})")

    def _assign(self, labels: np.ndarray, n: int,
                rng: np.random.Generator) -> list[np.ndarray]:
        parts: list[list[np.ndarray]] = [[] for _ in range(n)]
        for cls in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == cls))
            share = rng.dirichlet(np.full(n, self.alpha))
            cuts = (np.cumsum(share)[:-1] * len(members)).astype(np.int64)
            for node, chunk in enumerate(np.split(members, cuts)):
                parts[node].append(chunk)
        return [np.concatenate(p) for p in parts]


@dataclass(frozen=True, slots=True)
class ExtremeSplit(Split):
    """The pool in a random order, stably sorted by label, cut into n contiguous shards (ByzFL's
    `extreme_niid`; Karimireddy, He, Jaggi 2022, "Byzantine-robust learning on heterogeneous
    datasets via bucketing", data sorted by label)."""

    kind: ClassVar[str] = "extreme"

    def _assign(self, labels: np.ndarray, n: int,
                rng: np.random.Generator) -> list[np.ndarray]:
        return np.array_split(_sorted_by_label(labels, rng.permutation(len(labels))), n)


@dataclass(frozen=True, slots=True)
class GammaSimilaritySplit(Split):
    """A random fraction `gamma` of the pool is spread IID; the rest is sorted by label and cut
    into n contiguous shards; node j gets the j-th part of each (ByzFL's
    `gamma_similarity_niid`). gamma 1 is `IidSplit`, gamma 0 is `ExtremeSplit`."""

    kind: ClassVar[str] = "gamma_similarity"
    gamma: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma_similarity split: gamma must be in [0, 1] "
                             f"(got {self.gamma!r})")

    def _assign(self, labels: np.ndarray, n: int,
                rng: np.random.Generator) -> list[np.ndarray]:
        order = rng.permutation(len(labels))
        similar = int(self.gamma * len(labels))
        iid = np.array_split(order[:similar], n)
        skewed = np.array_split(_sorted_by_label(labels, order[similar:]), n)
        return [np.concatenate(pair) for pair in zip(iid, skewed, strict=True)]


def _sorted_by_label(labels: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """`indices` reordered by their label; ties keep their order in `indices`."""
    return indices[np.argsort(labels[indices], kind="stable")]


def _fill_empty(parts: list[np.ndarray]) -> list[np.ndarray]:
    """Each empty part, in node order, takes the last index of the largest part."""
    for node, part in enumerate(parts):
        if len(part) == 0:
            donor = int(np.argmax([len(p) for p in parts]))  # first of the largest
            parts[node], parts[donor] = parts[donor][-1:], parts[donor][:-1]
    return parts


SPLITS: dict[str, type[Split]] = {
    cls.kind: cls for cls in (IidSplit, DirichletSplit, ExtremeSplit, GammaSimilaritySplit)}


def make_split(spec: Split | Mapping[str, Any] | str | None) -> Split:
    """A split from a scenario's `split:` entry (a mapping with `kind` and the split's own
    fields, or a bare kind); None is IID."""
    if spec is None:
        return IidSplit()
    if isinstance(spec, Split):
        return spec
    params = {"kind": spec} if isinstance(spec, str) else dict(spec)
    kind = params.pop("kind", "iid")
    if kind not in SPLITS:
        raise ValueError(f"unknown split {kind!r}; known: {', '.join(sorted(SPLITS))}")
    return SPLITS[kind](**params)


def label_histogram(labels: np.ndarray, classes: int) -> list[int]:
    """How many samples of each class `labels` holds, as a list of `classes` counts."""
    return [int(c) for c in np.bincount(np.asarray(labels, dtype=np.int64), minlength=classes)]


__all__ = ["SPLITS", "DirichletSplit", "ExtremeSplit", "GammaSimilaritySplit", "IidSplit",
           "Split", "label_histogram", "make_split"]
