"""The optimizer step every honest node applies identically to the agreed aggregate.

Each optimizer keeps its state in one flat float32 vector (its layout is the optimizer's own),
which the node checkpoints as it is. Pure numpy in float32 with no threading, so equal inputs
give bit-identical outputs on every machine that runs the same numpy.
"""

from __future__ import annotations

import numpy as np


class MomentumSGD:
    """Heavy-ball SGD: v ← μ·v + g; p ← p − lr·v. State: v."""

    def __init__(self, lr: float, momentum: float) -> None:
        self.lr = np.float32(lr)
        self.momentum = np.float32(momentum)

    def init_state(self, params: np.ndarray) -> np.ndarray:
        return np.zeros_like(params)

    def step(self, params: np.ndarray, velocity: np.ndarray, update: np.ndarray,
             t: int = 1) -> tuple[np.ndarray, np.ndarray]:
        velocity = self.momentum * velocity + update
        return (params - self.lr * velocity).astype(np.float32), velocity.astype(np.float32)


class Adam:
    """Adam (Kingma & Ba 2015) with bias correction, for models plain SGD trains poorly
    (transformers). State: the first and second moments, concatenated; `t` is the 1-based
    step, the round number plus one on every node."""

    def __init__(self, lr: float, beta1: float = 0.9, beta2: float = 0.99,
                 eps: float = 1e-8) -> None:
        self.lr, self.beta1, self.beta2, self.eps = (np.float32(v) for v in (lr, beta1, beta2,
                                                                              eps))

    def init_state(self, params: np.ndarray) -> np.ndarray:
        return np.zeros(2 * params.size, np.float32)

    def step(self, params: np.ndarray, state: np.ndarray, update: np.ndarray,
             t: int = 1) -> tuple[np.ndarray, np.ndarray]:
        n = params.size
        m = self.beta1 * state[:n] + (np.float32(1) - self.beta1) * update
        v = self.beta2 * state[n:] + (np.float32(1) - self.beta2) * update * update
        m_hat = m / np.float32(1 - float(self.beta1) ** t)
        v_hat = v / np.float32(1 - float(self.beta2) ** t)
        params = params - self.lr * m_hat / (np.sqrt(v_hat) + self.eps)
        return params.astype(np.float32), np.concatenate([m, v]).astype(np.float32)


Optimizer = MomentumSGD | Adam


def make_optimizer(kind: str, lr: float, momentum: float) -> Optimizer:
    """"sgd" (heavy ball with `momentum`) or "adam" (`momentum` is its beta1)."""
    if kind == "sgd":
        return MomentumSGD(lr, momentum)
    if kind == "adam":
        return Adam(lr, beta1=momentum)
    raise ValueError(f"unknown optimizer {kind!r}; known: adam, sgd")
