"""How a node puts gradients on the wire and reads its peers': dense, or compressed by one of
engine/compress's methods, which every member of a run uses (a gradient in another encoding is
refused, so nobody sends more than the run allows).

The sender's own gradients go through error feedback when the run asks for it (the residual
stays with the sender); a Byzantine behaviour that crafts a vector encodes it afresh. Receivers
decode every payload to a dense vector, checked before anything else looks at it: robust
aggregation always runs on dense vectors.

With an adaptive top-k, each sender picks its own ratio per gradient from the link conditions
its driver measured (AdaptiveRatio); receivers need not know it and accept up to the largest
ratio the run allows.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from phalanx.engine.compress import (
    AdaptiveRatio,
    CompressError,
    Encoded,
    ErrorFeedback,
    NetworkConditions,
    make_compressor,
)
from phalanx.engine.compress.sparsify import sparse_bytes
from phalanx.net.messages import Gradient

__all__ = ["CompressError", "GradientEncoding"]

EMPTY = np.zeros(0, dtype=np.float32)


class GradientEncoding:
    def __init__(self, method: str = "none", params: dict[str, Any] | None = None,
                 error_feedback: bool = True,
                 adaptive: tuple[float, float, float] | None = None,
                 feedback_decay: float = 1.0) -> None:
        """`adaptive`: (target seconds, min ratio, max ratio) of an adaptive top-k, whose
        ratio then is not a parameter."""
        params = dict(params or {})
        self.adaptive: AdaptiveRatio | None = None
        if adaptive is not None:
            if method != "topk" or "ratio" in params:
                raise ValueError(f"an adaptive ratio is top-k's own (method topk, no ratio "
                                 f"parameter); got method {method} with {sorted(params)}")
            self.adaptive = AdaptiveRatio(*adaptive)
            params["ratio"] = self.adaptive.max_ratio  # the most a receiver accepts
        self.compressor = make_compressor(method, **params)
        self.name = "" if method == "none" else method  # dense gradients name no encoding
        self.feedback = (ErrorFeedback(self.compressor, feedback_decay)
                         if error_feedback and self.name else None)

    def ratio_for(self, size: int, conditions: NetworkConditions | None) -> float | None:
        """The top-k ratio of our next gradient: None unless adaptive; the largest allowed
        until the driver has measured the link."""
        if self.adaptive is None:
            return None
        if conditions is None or conditions.peers == 0:
            return self.adaptive.max_ratio
        per_entry = sparse_bytes(size, size) / size  # a value and its position's bits
        return self.adaptive.ratio(size, conditions, per_entry)

    def pack(self, g: Gradient, values: np.ndarray, rng: np.random.Generator,
             own: bool = True, ratio: float | None = None) -> Gradient:
        """`g` carrying `values`, encoded: through the error feedback for our own gradient,
        afresh for a crafted one (it must not disturb the residual); with top-k at `ratio`
        when given (an adaptive run's choice for this gradient)."""
        if not self.name:
            return replace(g, values=values, encoding="", size=0, parts=())
        coder = self.compressor if ratio is None else make_compressor("topk", ratio=ratio)
        if own and self.feedback is not None:
            enc = self.feedback.encode(values, rng, coder)
        else:
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
