"""1-bit compression: the sign of every entry and one scale (signSGD with a scale, Bernstein et
al. 2018; the scaled form EF-SignSGD of Karimireddy et al. 2019 uses under error feedback)."""

from __future__ import annotations

import numpy as np

from .base import CompressError, Compressor, part


class Sign(Compressor):
    """``parts = (bits, scale)``: ``bits = np.packbits(x >= 0)`` (uint8, ceil(size/8) bytes,
    pad bits zero) and ``scale = [mean |x|]`` (float32, shape (1,)); decode = scale * (+-1).
    Zero entries count as positive."""

    name = "sign"
    biased = True
    n_parts = 2

    def _encode(self, x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        scale = np.array([np.abs(x).mean(dtype=np.float64)], np.float32)
        return np.packbits(x >= 0), scale

    def _decode(self, size: int, parts: tuple[np.ndarray, ...]) -> np.ndarray:
        bits = part(parts, 0, np.uint8, (-(-size // 8),))
        scale = part(parts, 1, np.float32, (1,))[0]
        if scale < 0:
            raise CompressError("negative_scale", "the sign scale is negative")
        # Canonical payloads only: one vector, one encoding.
        if size % 8 and int(bits[-1]) & (0xFF >> (size % 8)):
            raise CompressError("bad_padding", "the pad bits of the last byte are not zero")
        positive = np.unpackbits(bits, count=size).astype(bool)
        return np.where(positive, scale, -scale).astype(np.float32)

    def _encoded_bytes(self, size: int) -> float:
        return float(-(-size // 8) + 4)
