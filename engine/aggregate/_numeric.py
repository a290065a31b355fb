"""Fixed-order float64 primitives shared by the aggregation rules.

Every rule must be reproducible bit for bit on any machine, so nothing here relies on an
operation whose reduction order is left to the library: no BLAS (``np.dot``, ``@``, ``einsum``,
``linalg.norm`` on 2-D), no threads, not even ``np.sum`` over long vectors (whose internal
pairwise/SIMD blocking is an implementation detail). Only these are used:

- element-wise ufuncs (``+ - * /``, ``sqrt``), which IEEE 754 rounds exactly on every CPU;
- sums over the *gradient* axis as an explicit left-to-right loop;
- sums over the *coordinate* axis as a fixed binary tree (:func:`tree_sum_rows`) built only
  from element-wise adds, whose shape depends on nothing but the vector length;
- sums of a handful of Python floats with :func:`math.fsum` (exactly rounded, so independent
  of order).

All inputs are float64 (float32 gradients convert exactly), which also keeps squares of float32
values far from float64 overflow and from subnormals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: largest temporary block (in float64 elements) a helper allocates at once
_BLOCK = 1 << 22


def stack_gradients(gradients: Sequence[np.ndarray]) -> np.ndarray:
    """Validate the inputs and copy them into one C-ordered ``(n, d)`` float64 array.

    Any memory layout (strided views, Fortran-ordered parents, float16/32/64) gives the same
    array: the copy is exact, so the rules below see identical bits.
    """
    if isinstance(gradients, np.ndarray) and gradients.ndim != 2:
        raise ValueError(
            f"gradients must be a sequence of 1-D arrays; got an array of shape {gradients.shape}"
        )
    n = len(gradients)
    if n == 0:
        raise ValueError("no gradients to aggregate (got an empty sequence)")
    first = np.asarray(gradients[0])
    if first.ndim != 1:
        raise ValueError(f"gradient 0 must be a 1-D array; got shape {first.shape}")
    d = first.shape[0]
    x = np.empty((n, d), dtype=np.float64)
    for i, g in enumerate(gradients):
        a = np.asarray(g)
        if a.dtype.kind != "f" or a.dtype.itemsize > 8:
            raise ValueError(
                f"gradient {i} has dtype {a.dtype}; expected float16, float32 or float64"
            )
        if a.shape != (d,):
            raise ValueError(
                f"gradient {i} has shape {a.shape}; all gradients must be 1-D of length {d} "
                "(the length of gradient 0)"
            )
        x[i] = a
    if not np.isfinite(x).all():
        bad = [i for i in range(n) if not np.isfinite(x[i]).all()]
        raise ValueError(f"gradients {bad} contain NaN or infinite values")
    return x


def sum_rows(x: np.ndarray, order: Sequence[int] | None = None) -> np.ndarray:
    """Σ x[i] over the gradient axis, added strictly left to right (in ``order`` if given)."""
    total = np.zeros(x.shape[1], dtype=np.float64)
    for i in range(x.shape[0]) if order is None else order:
        total += x[i]
    return total


def mean_rows(x: np.ndarray, order: Sequence[int] | None = None) -> np.ndarray:
    """Left-to-right sum divided by the count (the exact formula of the original ``Mean``)."""
    count = x.shape[0] if order is None else len(order)
    return sum_rows(x, order) / count


def tree_sum_rows(a: np.ndarray) -> np.ndarray:
    """Sum each row of a 2-D float64 array with a fixed binary tree of element-wise adds.

    The row is zero-padded to the next power of two ``P`` and folded in halves
    (``b[k] += b[k + P/2]``) until one value is left, so the rounding of the result depends
    only on the row's values and its length; every row of the same length uses the same tree.
    Adding the padding zeros is exact.
    """
    m, d = a.shape
    width = 1 << max(d - 1, 0).bit_length()
    buf = np.zeros((m, width), dtype=np.float64)
    buf[:, :d] = a
    while width > 1:
        width //= 2
        np.add(buf[:, :width], buf[:, width : 2 * width], out=buf[:, :width])
    return buf[:, 0].copy()


def tree_sum(a: np.ndarray) -> float:
    """:func:`tree_sum_rows` of a single 1-D vector."""
    return float(tree_sum_rows(a.reshape(1, -1))[0])


def sq_dists_to(x: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``‖x[i] − center‖²`` of every row, shape ``(n,)``."""
    n, d = x.shape
    out = np.empty(n, dtype=np.float64)
    rows = max(1, _BLOCK // max(2 * d, 1))
    for start in range(0, n, rows):
        diff = x[start : start + rows] - center
        np.multiply(diff, diff, out=diff)
        out[start : start + rows] = tree_sum_rows(diff)
    return out


def dists_to(x: np.ndarray, center: np.ndarray) -> list[float]:
    """Euclidean distances ``‖x[i] − center‖`` as Python floats (sqrt is exactly rounded)."""
    return [math.sqrt(s) for s in sq_dists_to(x, center).tolist()]


def pairwise_sq_dists(x: np.ndarray) -> np.ndarray:
    """Symmetric ``(n, n)`` matrix of squared distances, zero diagonal.

    Each pair is computed once as ``‖x[j] − x[i]‖²`` (i < j) and mirrored; since
    ``(a − b)² == (b − a)²`` exactly, the value does not depend on which sender came first.
    """
    n = x.shape[0]
    dist = np.zeros((n, n), dtype=np.float64)
    for i in range(n - 1):
        row = sq_dists_to(x[i + 1 :], x[i])
        dist[i, i + 1 :] = row
        dist[i + 1 :, i] = row
    return dist


def exact_sum(values: Sequence[float]) -> float:
    """Exactly rounded sum of a few scalars (independent of their order)."""
    return math.fsum(values)


def kth_smallest(values: Sequence[float], k: int) -> float:
    """The k-th smallest (1-based) of a few scalars, by sorting: independent of their order."""
    if not 1 <= k <= len(values):
        raise ValueError(f"k must be in 1..{len(values)}; got {k}")
    return sorted(values)[k - 1]
