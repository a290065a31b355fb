"""Sparsifiers: send a subset of the entries as (positions, values).

Wire format, shared by all three: ``parts = (width, gaps, values)``. The positions travel as
gaps, bit-packed: with the kept indices i_0 < i_1 < ... < i_{k-1}, gap_0 = i_0 and
gap_j = i_j - i_{j-1} - 1, each written in ``width`` bits (``width = [w]``, uint8, the bit
length of the largest gap, at most 32), packed little-endian into ``gaps`` (uint8,
ceil(k * w / 8) bytes, pad bits zero); ``values`` float32, one per kept entry. Gaps of kept
entries are much shorter than indices (about log2(1 / ratio) bits against log2(size) for a
spread-out top-k), and no payload can name an entry twice or out of order: a Byzantine sender
can only name an index past the end, which decode refuses. The receiver cannot know how many
entries an honest sender keeps (the adaptive controller changes top-k's ratio per sender), so
decode accepts any count up to the run's k (up to size for threshold).
"""

from __future__ import annotations

import math

import numpy as np

from .base import MAX_SIZE, CompressError, Compressor, part

MAX_WIDTH = 32  # bits per gap: enough for any index below 2**32


def pack_gaps(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(width, packed gaps) of strictly ascending indices."""
    gaps = np.diff(idx.astype(np.int64), prepend=-1) - 1
    width = int(gaps.max()).bit_length() if gaps.size else 0
    bits = np.empty((gaps.size, width), np.uint8)
    for b in range(width):  # one column at a time: k bytes of scratch, not 8 * k * width
        bits[:, b] = (gaps >> b) & 1
    return np.array([width], np.uint8), np.packbits(bits.ravel(), bitorder="little")


def unpack_gaps(width: int, packed: np.ndarray, k: int, size: int) -> np.ndarray:
    """The k indices a packed payload names (int64), checked to lie below ``size``."""
    if width > MAX_WIDTH:
        raise CompressError("bad_width", f"gaps of more than {MAX_WIDTH} bits")
    nbits = k * width
    if packed.size != -(-nbits // 8):
        raise CompressError("wrong_shape", f"{k} gaps of {width} bits take {-(-nbits // 8)} "
                                           f"bytes, not {packed.size}")
    if nbits % 8 and int(packed[-1]) >> (nbits % 8):
        raise CompressError("bad_padding", "the pad bits of the last byte are not zero")
    bits = np.unpackbits(packed, count=nbits, bitorder="little").reshape(k, width)
    gaps = np.zeros(k, np.int64)
    for b in range(width):
        gaps |= bits[:, b].astype(np.int64) << b
    idx = np.cumsum(gaps + 1) - 1
    if k and int(idx[-1]) >= size:  # ascending: the last is the largest
        raise CompressError("index_out_of_range", f"an index >= {size}")
    return idx


def sparse_bytes(k: int, size: int) -> int:
    """The most bytes k of size entries take: every gap as wide as the vector."""
    return 1 + math.ceil(k * (size - 1).bit_length() / 8) + 4 * k


class _Sparse(Compressor):
    """Decoding of the (width, gaps, values) wire format."""

    n_parts = 3

    def _decode(self, size: int, parts: tuple[np.ndarray, ...]) -> np.ndarray:
        width = int(part(parts, 0, np.uint8, (1,))[0])
        packed = part(parts, 1, np.uint8, (None,))
        values = part(parts, 2, np.float32, (None,))
        if values.size > size:
            raise CompressError("too_many_entries", f"more entries than the {size} there are")
        idx = unpack_gaps(width, packed, values.size, size)
        out = np.zeros(size, np.float32)
        out[idx] = values
        return out

    @staticmethod
    def _pack(idx: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, ...]:
        return (*pack_gaps(idx), values.astype(np.float32, copy=False))


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
        return float(sparse_bytes(self.k(size), size))

    def _decode(self, size: int, parts: tuple[np.ndarray, ...]) -> np.ndarray:
        # no more than the run's k: a sender must not carry more than the ratio allows
        if len(parts) == self.n_parts and isinstance(parts[2], np.ndarray) and (
                parts[2].size > self.k(size)):
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

    def _encode(self, x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
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

    def _encode(self, x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
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

    def _encode(self, x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        idx = np.flatnonzero(np.abs(x) >= self.threshold)
        return self._pack(idx, x[idx])

    def _encoded_bytes(self, size: int) -> float:
        # The count depends on the data; report the worst case, every entry kept.
        return 4.0 * size + size / 8 + 1
