"""Input checks and float64 reductions shared by the attacks.

Reductions run left to right in float64, so every colluding node given the same list in the
same order computes bit-identical vectors; `finite32` is the one way out to float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_F32_MAX = float(np.finfo(np.float32).max)


def check_own(own: np.ndarray) -> np.ndarray:
    a = np.asarray(own)
    if a.ndim != 1:
        raise ValueError(f"own gradient must be 1-D, got shape {a.shape}")
    return a


def check_honest(own: np.ndarray, honest: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The honest vectors as arrays of own's shape, or [own] when none were given."""
    if len(honest) == 0:
        return [own]
    out = []
    for i, h in enumerate(honest):
        a = np.asarray(h)
        if a.shape != own.shape:
            raise ValueError(
                f"honest gradient {i} has shape {a.shape}, expected {own.shape} (own gradient)"
            )
        out.append(a)
    return out


def finite32(x: np.ndarray) -> np.ndarray:
    """float32 copy of x with NaN -> 0 and everything else clipped into the float32 range."""
    y = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0, posinf=_F32_MAX, neginf=-_F32_MAX)
    np.clip(y, -_F32_MAX, _F32_MAX, out=y)
    return y.astype(np.float32)


def mean(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """Coordinate-wise mean in float64, summed left to right (bit-exact across nodes)."""
    total = np.zeros(vectors[0].shape, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # inf inputs: NaN, cleaned by finite32
        for v in vectors:
            total += v
    return total / len(vectors)


def std(vectors: Sequence[np.ndarray], mean: np.ndarray) -> np.ndarray:
    """Coordinate-wise sample standard deviation (ddof = 1, as torch.std in the reference
    implementations); zero when there is a single vector."""
    k = len(vectors)
    if k < 2:
        return np.zeros(mean.shape, dtype=np.float64)
    acc = np.zeros(mean.shape, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # inf inputs: NaN, cleaned by finite32
        for v in vectors:
            d = np.asarray(v, dtype=np.float64) - mean
            acc += d * d
        return np.sqrt(acc / (k - 1))
