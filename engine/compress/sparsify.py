"""Sparsifiers: send a subset of the entries as (indices, values).

Wire format, shared by all three: ``parts = (indices, values)``, ``indices`` uint32 strictly
ascending (so each entry appears once and a receiver checks it in one pass), ``values`` float32
of the same length. The receiver cannot know how many entries an honest sender keeps (the
adaptive controller changes top-k's ratio per sender), so decode accepts any count up to size.
"""

from __future__ import annotations

import math

import numpy as np

from .base import MAX_SIZE, CompressError, Compressor, part


class _Sparse(Compressor):
    """Decoding of the (indices, values) wire format."""

    n_parts = 2

    def _decode(self, size: int, parts: tuple[np.ndarray, ...]) -> np.ndarray:
        idx = part(parts, 0, np.uint32, (None,))
        values = part(parts, 1, np.float32, (idx.size,))
        if idx.size:
            if int(idx.max()) >= size:
                raise CompressError("index_out_of_range", f"index {int(idx.max())} >= {size}")
            step = np.diff(idx.astype(np.int64))
            if (step == 0).any():
                raise CompressError("duplicate_index", "an index appears twice")
            if (step < 0).any():
                raise CompressError("unsorted_index", "indices must be ascending")
        out = np.zeros(size, np.float32)
        out[idx] = values
        return out

    @staticmethod
    def _pack(idx: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return idx.astype(np.uint32), values.astype(np.float32, copy=False)


class _FixedCount(_Sparse):
    """Keeps k = max(1, floor(ratio * size)) entries, whatever the data: rounding down keeps
    the payload within the budget a ratio was chosen for (see :mod:`.adaptive`)."""

    def __init__(self, ratio: float, *, max_size: int = MAX_SIZE) -> None:
        super().__init__(max_size=max_size)
        self.fraction = self.require_real("ratio", ratio, 0.0, 1.0)

    def k(self, size: int) -> int:
        """How many entries a vector of ``size`` keeps."""
        return max(1, math.floor(self.fraction * size))

    def _encoded_bytes(self, size: int) -> float:
        return 8.0 * self.k(size)

    def _decode(self, size: int, parts: tuple[np.ndarray, ...]) -> np.ndarray:
        # no more than the run's k: a sender must not carry more than the ratio allows (up to
        # twice the dense bytes, as (index, value) pairs)
        if len(parts) == self.n_parts and isinstance(parts[0], np.ndarray) and (
                parts[0].size > self.k(size)):
            raise CompressError("too_many_entries", f"more than the {self.k(size)} entries a "
                                                    f"ratio of {self.fraction:g} allows")
        return super()._decode(size, parts)


class TopK(_FixedCount):
    """The k entries of largest magnitude (Aji & Heafield 2017; Stich et al. 2018).

    Ties at the k-th magnitude go to the lower indices, so the kept set is a function of x alone
    (np.partition's choice among equal values is not specified).
    """

    name = "topk"
    biased = True

    def _encode(self, x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        n, k = x.size, self.k(x.size)
        mag = np.abs(x)
        if k == n:
            idx = np.arange(n)
        else:
            kth = np.partition(mag, n - k)[n - k]  # the k-th largest magnitude: O(n), no sort
            above = np.flatnonzero(mag > kth)
            ties = np.flatnonzero(mag == kth)[: k - above.size]
            idx = np.sort(np.concatenate([above, ties]))
        return self._pack(idx, x[idx])


class RandomK(_FixedCount):
    """k uniformly random entries scaled by size/k, so that E[decode] = x (Stich et al. 2018);
    unbiased at the price of variance (size/k - 1) * |x|^2."""

    name = "randomk"
    biased = False

    def _encode(self, x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        n, k = x.size, self.k(x.size)
        idx = np.sort(rng.choice(n, size=k, replace=False))
        with np.errstate(over="ignore"):  # an overflow becomes inf, refused by encode
            values = (x[idx].astype(np.float64) * (n / k)).astype(np.float32)
        return self._pack(idx, values)


class Threshold(_Sparse):
    """Every entry with |x_i| >= threshold (Strom 2015); may send nothing at all."""

    name = "threshold"
    biased = True

    def __init__(self, threshold: float, *, max_size: int = MAX_SIZE) -> None:
        super().__init__(max_size=max_size)
        self.threshold = self.require_real("threshold", threshold, 0.0, float("inf"))

    def _encode(self, x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        idx = np.flatnonzero(np.abs(x) >= self.threshold)
        return self._pack(idx, x[idx])

    def _encoded_bytes(self, size: int) -> float:
        # The count depends on the data; report the worst case, every entry kept.
        return 8.0 * size
