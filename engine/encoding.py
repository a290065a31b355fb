"""How a node puts gradients on the wire and reads its peers': dense, or compressed by one of
engine/compress's methods, which every member of a run uses (a gradient in another encoding is
refused, so nobody sends more than the run allows).

The sender's own gradients go through error feedback when the run asks for it (the residual
stays with the sender); a Byzantine behaviour that crafts a vector encodes it afresh. Receivers
decode every payload to a dense vector, checked before anything else looks at it: robust
aggregation always runs on dense vectors.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from phalanx.engine.compress import CompressError, Encoded, ErrorFeedback, make_compressor
from phalanx.net.messages import Gradient

__all__ = ["CompressError", "GradientEncoding"]

EMPTY = np.zeros(0, dtype=np.float32)


class GradientEncoding:
    def __init__(self, method: str = "none", params: dict[str, Any] | None = None,
                 error_feedback: bool = True) -> None:
        self.compressor = make_compressor(method, **(params or {}))
        self.name = "" if method == "none" else method  # dense gradients name no encoding
        self.feedback = ErrorFeedback(self.compressor) if error_feedback and self.name else None

    def pack(self, g: Gradient, values: np.ndarray, rng: np.random.Generator,
             own: bool = True) -> Gradient:
        """`g` carrying `values`, encoded: through the error feedback for our own gradient,
        afresh for a crafted one (it must not disturb the residual)."""
        if not self.name:
            return replace(g, values=values, encoding="", size=0, parts=())
        coder = self.feedback if own and self.feedback is not None else self.compressor
        enc = coder.encode(values, rng)
        return replace(g, values=EMPTY, encoding=enc.method, size=enc.size, parts=enc.parts)

    def dense(self, g: Gradient, size: int) -> np.ndarray:
        """The vector of `size` entries that `g` stands for; CompressError when its payload is
        malformed, claims another size (checked first: a forged size must not make us
        allocate), or is in another encoding than the run's."""
        if g.encoding != self.name:
            raise CompressError("wrong_encoding", f"{g.encoding or 'dense'} in a run of "
                                                  f"{self.name or 'dense'} gradients")
        if not self.name:
            return g.values
        if g.size != size:
            raise CompressError("wrong_size", f"{g.size} entries where the model has {size}")
        return self.compressor.decode(Encoded(g.encoding, g.size, g.parts))
