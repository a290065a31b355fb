"""Bucketing: average random small groups before the robust rule."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._numeric import mean_rows
from .base import AggregationContext, PreAggregator, is_int


@dataclass(frozen=True)
class Bucketing(PreAggregator):
    """Bucketing (Karimireddy, He, Jaggi 2022, "Byzantine-Robust Learning on Heterogeneous
    Datasets via Bucketing", ICLR).

    Permutes the n inputs with ``numpy.random.default_rng(ctx.seed).permutation(n)``, cuts the
    permuted sequence into buckets of ``s`` consecutive vectors (the last one smaller when s
    does not divide n), replaces each bucket by its mean (summed in permutation order) and
    hands the ⌈n/s⌉ means to ``inner`` with the same f (at most f buckets hold a Byzantine
    vector). The inner rule's size check applies to ⌈n/s⌉.

    Permutations: with a fixed seed the permutation acts on input *positions*, so reordering
    the senders changes which vectors share a bucket; the output is a deterministic function of
    (inputs in order, seed), and over random seeds its distribution is permutation invariant.
    With s = 1 it reduces to ``inner`` on permuted inputs.
    """

    name = "bucketing"
    s: int = 2

    def validate(self) -> None:
        self.require(is_int(self.s) and self.s >= 1, f"s must be an integer >= 1; got {self.s!r}")

    def buckets(self, n: int, seed: int) -> list[list[int]]:
        """The sender indices of each bucket, in summation order."""
        perm = np.random.default_rng(seed).permutation(n).tolist()
        s = int(self.s)
        return [perm[k : k + s] for k in range(0, n, s)]

    def transform(self, x: np.ndarray, ctx: AggregationContext) -> np.ndarray:
        groups = self.buckets(x.shape[0], ctx.seed)
        y = np.empty((len(groups), x.shape[1]), dtype=np.float64)
        for b, group in enumerate(groups):
            y[b] = mean_rows(x, group)
        return y
