"""Dense quantizers: every entry travels, in fewer bits.

``none``, ``fp16`` and ``bf16`` send one 16/32-bit word per entry (``parts = (words,)``);
``int8`` sends one byte per entry plus one float32 scale per chunk (``parts = (q, scales)``).
The casts round to nearest, a deterministic error of at most half a step per entry, so they
count as biased; the casts saturate at the largest finite value instead of overflowing, so an
honest payload always decodes.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import numpy as np

from .base import MAX_SIZE, CompressError, Compressor, part


class _Elementwise(Compressor):
    """One wire word of dtype ``wire`` per entry."""

    n_parts = 1
    wire: ClassVar[type[np.generic]]

    def _decode(self, size: int, parts: tuple[np.ndarray, ...]) -> np.ndarray:
        return self._widen(part(parts, 0, self.wire, (size,)))

    def _encoded_bytes(self, size: int) -> float:
        return float(size * np.dtype(self.wire).itemsize)

    @abstractmethod
    def _widen(self, words: np.ndarray) -> np.ndarray:
        """A new float32 array from the validated wire words."""


class Identity(_Elementwise):
    """No compression: the dense float32 vector itself."""

    name = "none"
    biased = False
    wire = np.float32

    def _encode(self, x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray]:
        return (x.copy(),)  # the payload must not alias the caller's (mutable) gradient

    def _widen(self, words: np.ndarray) -> np.ndarray:
        return words.copy()


class Float16(_Elementwise):
    """IEEE half precision: 11 significant bits, |x| up to 65504 (saturated beyond)."""

    name = "fp16"
    biased = True
    wire = np.float16

    def _encode(self, x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray]:
        limit = np.finfo(np.float16).max
        return (np.clip(x, -limit, limit).astype(np.float16),)

    def _widen(self, words: np.ndarray) -> np.ndarray:
        return words.astype(np.float32)


class BFloat16(_Elementwise):
    """bfloat16, carried as the upper 16 bits of the float32 (numpy has no bfloat16 dtype):
    float32's range with 8 significant bits, rounded to nearest, ties to even."""

    name = "bf16"
    biased = True
    wire = np.uint16

    def _encode(self, x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray]:
        bits = x.view(np.uint32)
        # Adding 0x7FFF plus the lowest kept bit rounds the dropped half to nearest-even; x is
        # finite, so this cannot carry out of 32 bits.
        top = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
        overflowed = (top & np.uint32(0x7F80)) == np.uint32(0x7F80)  # rounded up to +-inf
        top = np.where(overflowed, (top & np.uint32(0x8000)) | np.uint32(0x7F7F), top)
        return (top.astype(np.uint16),)

    def _widen(self, words: np.ndarray) -> np.ndarray:
        return (words.astype(np.uint32) << np.uint32(16)).view(np.float32)


class Int8(Compressor):
    """Symmetric 8-bit quantization per chunk of ``chunk`` entries: scale = max|x|/127 (float32),
    q = round(x / scale) in [-127, 127]. A chunk of zeros has scale 0."""

    name = "int8"
    biased = True
    n_parts = 2

    def __init__(self, chunk: int = 256, *, max_size: int = MAX_SIZE) -> None:
        super().__init__(max_size=max_size)
        self.chunk = self.require_int("chunk", chunk, 1)

    def chunks(self, size: int) -> int:
        """How many scales a vector of ``size`` entries has."""
        return -(-size // self.chunk)

    def _encode(self, x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        m = self.chunks(x.size)
        blocks = np.zeros(m * self.chunk, np.float32)
        blocks[: x.size] = x
        blocks = blocks.reshape(m, self.chunk)
        scales = (np.abs(blocks).max(axis=1).astype(np.float64) / 127).astype(np.float32)
        # A scale that is 0 (zeros, or a max so small that max/127 underflows) divides by 1:
        # those entries round to 0, within half a step of what they were.
        divisor = np.where(scales > 0, scales, np.float32(1))
        q = np.clip(np.rint(blocks / divisor[:, None]), -127, 127)
        return q.ravel()[: x.size].astype(np.int8), scales

    def _decode(self, size: int, parts: tuple[np.ndarray, ...]) -> np.ndarray:
        m = self.chunks(size)
        q = part(parts, 0, np.int8, (size,))
        scales = part(parts, 1, np.float32, (m,))
        if (q == -128).any():
            raise CompressError("int8_range", "quantum -128 (the range is [-127, 127])")
        if (scales < 0).any():
            raise CompressError("negative_scale", "a chunk scale is negative")
        # Exactly one scale per entry (np.repeat(scales, chunk) would allocate m * chunk).
        counts = np.full(m, self.chunk)
        counts[-1] = size - self.chunk * (m - 1)
        return q.astype(np.float32) * np.repeat(scales, counts)

    def _encoded_bytes(self, size: int) -> float:
        return float(size + 4 * self.chunks(size))
