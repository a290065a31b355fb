"""Gradient compression for the wire: one class per method, all called the same way.

::

    comp = make_compressor("topk", ratio=0.01)
    sender = ErrorFeedback(comp)                 # biased methods run under error feedback
    enc = sender.encode(gradient, rng)           # Encoded(method, size, parts) goes on the wire
    dense = comp.decode(enc)                     # any receiver; CompressError if malformed

Methods (``COMPRESSORS``) and what they do to a robust aggregator's guarantee. The aggregator
only ever sees decoded dense vectors, so its bound holds for them as inputs; the question is
how far an honest decoded vector is from the honest gradient.

* ``none``: identity; the guarantee is unchanged.
* ``randomk`` (unbiased): E[decode] = x, variance grows by (size/k - 1)|x|^2. Robust rules'
  error bounds scale with the honest vectors' variance, so they loosen by that factor.
* ``fp16``, ``bf16``, ``int8``: round to nearest, so strictly biased (flagged ``biased``), but
  by at most half a step per entry (2^-11, 2^-8 of |x_i|; max|chunk|/254): a small bounded
  perturbation of every honest vector, which error feedback, if used, also carries forward.
* ``topk``, ``threshold``, ``sign``, ``powersgd`` (biased): the decoded vector is
  systematically not x, and plain SGD on it need not converge; they need error feedback
  (:class:`ErrorFeedback`), whose residual is local to an honest sender. A Byzantine sender
  gains nothing from compression it could not send dense: whatever it encodes decodes to some
  dense vector, which the aggregator treats like any other.
* Sparse inputs and coordinate-wise rules (median, trimmed mean): a coordinate that most
  senders left out has a median of zero, so these rules keep their bound but move the model
  less than the mean; on the mlp with Adam directions top-k'd at 0.1 by 4 honest senders, 40
  rounds end at held-out loss 1.13 under the median against 0.76 under the mean (a test).
  Rules on whole vectors (Krum, geometric median, clipping) see distances that sparsity
  inflates by the dropped mass, which error feedback returns in later rounds.

Decoding validates every payload before computing with it (parts' count, dtype, shape,
indices, scales, padding, ranks, finiteness) and bounds the claimed size by ``max_size``, so a
Byzantine payload costs a receiver at most O(max_size) memory and O(size * rank) work, and it
uses elementwise arithmetic only so every node decodes the same bits. :class:`AdaptiveRatio`
picks top-k's ratio from :class:`NetworkConditions`. Sparse payloads name their entries by
bit-packed gaps (:mod:`.sparsify`), so no payload can name an entry twice or out of order.
"""

from __future__ import annotations

from .adaptive import AdaptiveRatio, NetworkConditions
from .base import COMPRESSORS, MAX_SIZE, CompressError, Compressor, Encoded, make_compressor
from .feedback import ErrorFeedback
from .powersgd import PowerSGD
from .quantize import BFloat16, Float16, Identity, Int8
from .sign import Sign
from .sparsify import RandomK, Threshold, TopK

__all__ = [
    "COMPRESSORS",
    "MAX_SIZE",
    "AdaptiveRatio",
    "BFloat16",
    "CompressError",
    "Compressor",
    "Encoded",
    "ErrorFeedback",
    "Float16",
    "Identity",
    "Int8",
    "NetworkConditions",
    "PowerSGD",
    "RandomK",
    "Sign",
    "Threshold",
    "TopK",
    "make_compressor",
]
