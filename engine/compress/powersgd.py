"""Low-rank compression by one step of subspace (power) iteration, warm-started from the
previous step's factor (PowerSGD, Vogels et al. 2019)."""

from __future__ import annotations

import math

import numpy as np

from .base import MAX_SIZE, CompressError, Compressor, part


def matrix_shape(size: int) -> tuple[int, int]:
    """The (rows, cols) a flat vector of ``size`` entries is viewed as: rows = ceil(sqrt(size)),
    cols = ceil(size / rows), the near-square shape that makes the factors smallest."""
    rows = math.isqrt(size - 1) + 1
    return rows, -(-size // rows)


class PowerSGD(Compressor):
    """``parts = (P, Q)``, float32 of shapes (rows, r) and (cols, r) with P orthonormal and
    r = min(rank, rows, cols); decode = (P Q^T).ravel()[:size].

    Stateful on the sending side: the Q of the last encode of each size seeds the next power
    iteration (that is what makes one step per round converge), so one instance belongs to one
    sender's stream of gradients; only the very first Q (or one that collapsed to a zero column)
    is drawn from ``rng``. Decoding is stateless and accepts any rank from 1 to r, computed
    with elementwise float64 operations in a fixed order so every node gets the same bits.
    """

    name = "powersgd"
    biased = True
    n_parts = 2

    def __init__(self, rank: int = 2, *, max_size: int = MAX_SIZE) -> None:
        super().__init__(max_size=max_size)
        self.rank = self.require_int("rank", rank, 1)
        self._warm: dict[int, np.ndarray] = {}

    def reset(self) -> None:
        """Forget the warm starts (the next encode of each size draws Q from its rng)."""
        self._warm.clear()

    def rank_for(self, size: int) -> int:
        """The rank the factors of a vector of ``size`` entries have."""
        return min(self.rank, *matrix_shape(size))

    def _encode(self, x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        rows, cols = matrix_shape(x.size)
        m = np.zeros(rows * cols)
        m[: x.size] = x
        m = m.reshape(rows, cols)
        q = self._warm.get(x.size)
        if q is None or not q.any(axis=0).all():  # a zero column would stay zero forever
            q = rng.standard_normal((cols, self.rank_for(x.size)))
        p, _ = np.linalg.qr(m @ q)
        q = m.T @ p
        self._warm[x.size] = q
        return p.astype(np.float32), q.astype(np.float32)

    def _decode(self, size: int, parts: tuple[np.ndarray, ...]) -> np.ndarray:
        rows, cols = matrix_shape(size)
        p = part(parts, 0, np.float32, (rows, None))
        q = part(parts, 1, np.float32, (cols, None))
        r = p.shape[1]
        if q.shape[1] != r:
            raise CompressError("wrong_shape", f"P has rank {r}, Q has rank {q.shape[1]}")
        if not 1 <= r <= self.rank_for(size):
            raise CompressError("bad_rank", f"rank {r} outside [1, {self.rank_for(size)}]")
        # No BLAS: float32 products are exact in float64 and the sum over j runs in order.
        out = np.zeros((rows, cols))
        for j in range(r):
            out += np.multiply.outer(p[:, j].astype(np.float64), q[:, j].astype(np.float64))
        return out.ravel()[:size].astype(np.float32)

    def _encoded_bytes(self, size: int) -> float:
        return 4.0 * self.rank_for(size) * sum(matrix_shape(size))
