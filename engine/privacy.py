"""Differential privacy of what a node releases: its gradient clipped to an L2 norm C, plus
Gaussian noise of standard deviation sigma * C (the Gaussian mechanism), before anything else
touches it (worker momentum, compression and error feedback are post-processing).

The unit protected is a node's contribution to a round: with it present or absent the clipped
vector moves by at most C, so each release is a Gaussian mechanism of noise multiplier sigma,
and T releases compose to a mu-GDP mechanism with mu = sqrt(T) / sigma (Dong, Roth, Su 2019).
Its exact privacy profile (Balle & Wang 2018, Theorem 8) is

    delta(eps) = Phi(-eps/mu + mu/2) - e^eps * Phi(-eps/mu - mu/2),

and the accountant reports the smallest eps with delta(eps) <= delta. No subsampling
amplification is claimed: a node's batches come from its own shard every round.

The noise comes from a stream seeded by the node's secret key, the round and the model: the
same run replays exactly, and no other node can predict (and subtract) it.
"""

from __future__ import annotations

import math

import numpy as np

from phalanx.net.crypto import sha256

__all__ = ["clip_and_noise", "gaussian_delta", "gaussian_epsilon"]


def clip_and_noise(values: np.ndarray, clip: float, noise_multiplier: float, secret: bytes,
                   round: int, model_hash: bytes) -> np.ndarray:
    """`values` scaled into the L2 ball of radius `clip`, plus N(0, (noise_multiplier * clip)^2)
    in every coordinate, as float32."""
    v = values.astype(np.float64)
    norm = float(np.sqrt(np.square(v).sum()))
    if norm > clip:
        v *= clip / norm
    seed = sha256(b"phalanx/privacy" + secret + round.to_bytes(8, "big") + model_hash)
    rng = np.random.default_rng(np.frombuffer(seed, dtype=np.uint32))
    return (v + rng.normal(0.0, noise_multiplier * clip, v.shape)).astype(np.float32)


def gaussian_delta(epsilon: float, noise_multiplier: float, releases: int) -> float:
    """delta(eps) of `releases` Gaussian mechanisms of this noise multiplier (exact)."""
    from scipy.special import log_ndtr  # only the privacy report needs scipy: not every node

    mu = math.sqrt(releases) / noise_multiplier
    first = log_ndtr(-epsilon / mu + mu / 2)
    second = epsilon + log_ndtr(-epsilon / mu - mu / 2)
    return float(math.exp(first) * -math.expm1(second - first)) if second < first else 0.0


def gaussian_epsilon(noise_multiplier: float, releases: int, delta: float) -> float:
    """The smallest eps with delta(eps) <= `delta` (bisection; delta is decreasing in eps)."""
    if not (noise_multiplier > 0 and releases >= 0 and 0 < delta < 1):
        raise ValueError("need noise_multiplier > 0, releases >= 0 and 0 < delta < 1")
    if releases == 0 or gaussian_delta(0.0, noise_multiplier, releases) <= delta:
        return 0.0
    low, high = 0.0, 1.0
    while gaussian_delta(high, noise_multiplier, releases) > delta:
        low, high = high, 2 * high
    for _ in range(100):
        mid = (low + high) / 2
        if gaussian_delta(mid, noise_multiplier, releases) > delta:
            low = mid
        else:
            high = mid
    return high
