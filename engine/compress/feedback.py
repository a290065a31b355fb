"""Error feedback: what a biased compressor drops this round is added back next round."""

from __future__ import annotations

import numpy as np

from .base import Compressor, Encoded


class ErrorFeedback:
    """Residual accumulation (Seide et al. 2014; Karimireddy et al. 2019): the sender compresses
    x + e and keeps e' = (x + e) - decode(encode(x + e)).

    Nothing is lost, only delayed: after any sequence of encodes, the sum of the inputs equals
    the sum of the decoded outputs plus the residual (up to float32 rounding), so top-k, sign
    or PowerSGD under error feedback converge like the uncompressed method. The residual is the
    sender's private state; a receiver only ever sees payloads.
    """

    def __init__(self, compressor: Compressor, decay: float = 1.0) -> None:
        """``decay`` < 1 makes the feedback leaky: the residual shrinks by that factor each
        round before it is added, so what stays unsent too long is dropped rather than sent
        late and stale (then the invariant below no longer holds)."""
        if not isinstance(compressor, Compressor):
            raise ValueError(f"ErrorFeedback wraps a Compressor; got {type(compressor).__name__}")
        if not (isinstance(decay, int | float) and 0.0 <= decay <= 1.0):
            raise ValueError(f"decay must be a number in [0, 1]; got {decay!r}")
        self.compressor = compressor
        self.decay = np.float32(decay)
        self.residual: np.ndarray | None = None

    def encode(self, x: np.ndarray, rng: np.random.Generator,
               compressor: Compressor | None = None) -> Encoded:
        """Encode ``x`` plus the carried residual and carry what the encoding lost; by
        ``compressor`` when given (the adaptive controller's ratio of the round), else by the
        one this feedback wraps."""
        coder = self.compressor if compressor is None else compressor
        if not (isinstance(x, np.ndarray) and x.ndim == 1 and x.dtype.kind == "f"):
            raise ValueError(f"x must be a 1-D float array; got {type(x).__name__}")
        if self.residual is not None and self.residual.size != x.size:
            raise ValueError(
                f"x has {x.size} entries but the residual has {self.residual.size}; reset() first"
            )
        target = (x.astype(np.float32) if self.residual is None
                  else x + (self.residual if self.decay == 1 else self.decay * self.residual))
        target = target.astype(np.float32, copy=False)
        enc = coder.encode(target, rng)
        # Decoding our own payload (rather than keeping what encode dropped) makes the residual
        # exactly what receivers did not get, whatever the method.
        self.residual = target - coder.decode(enc)
        return enc

    def reset(self) -> None:
        """Drop the residual (after a model reload, say, when it no longer applies)."""
        self.residual = None
