"""The optimizer step every honest node applies identically to the agreed aggregate."""

from __future__ import annotations

import numpy as np


class MomentumSGD:
    """Heavy-ball SGD on a flat float32 vector: v ← μ·v + g; p ← p − lr·v.

    Pure numpy in float32 with no threading, so equal inputs give bit-identical outputs on
    every machine that runs the same numpy.
    """

    def __init__(self, lr: float, momentum: float) -> None:
        self.lr = np.float32(lr)
        self.momentum = np.float32(momentum)

    def step(self, params: np.ndarray, velocity: np.ndarray,
             update: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        velocity = self.momentum * velocity + update
        return (params - self.lr * velocity).astype(np.float32), velocity.astype(np.float32)
