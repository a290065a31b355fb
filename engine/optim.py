"""The optimizer step every honest node applies identically to the agreed aggregate.

Each optimizer keeps its state in one flat float32 vector (its layout is the optimizer's own),
which the node checkpoints as it is. Pure numpy in float32 with no threading, so equal inputs
give bit-identical outputs on every machine that runs the same numpy.
"""

from __future__ import annotations

import numpy as np

from phalanx.engine.workloads.base import ParameterGroup


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
        m_hat, v_hat, state = self._moments(state, update, t)
        # (lr * m_hat) / ..., in this order: the float32 rounding every node must repeat
        params = params - self.lr * m_hat / (np.sqrt(v_hat) + self.eps)
        return params.astype(np.float32), state

    def direction(self, state: np.ndarray, update: np.ndarray, t: int
                  ) -> tuple[np.ndarray, np.ndarray]:
        """The bias-corrected m / (sqrt(v) + eps) of step `t`, and the moments after it."""
        m_hat, v_hat, state = self._moments(state, update, t)
        return (m_hat / (np.sqrt(v_hat) + self.eps)).astype(np.float32), state

    def _moments(self, state: np.ndarray, update: np.ndarray, t: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = update.size
        m = self.beta1 * state[:n] + (np.float32(1) - self.beta1) * update
        v = self.beta2 * state[n:] + (np.float32(1) - self.beta2) * update * update
        m_hat = m / np.float32(1 - float(self.beta1) ** t)
        v_hat = v / np.float32(1 - float(self.beta2) ** t)
        return m_hat, v_hat, np.concatenate([m, v]).astype(np.float32)


Optimizer = MomentumSGD | Adam


class SenderAdam:
    """Adam at the sender: a node sends its own Adam direction instead of its gradient and
    every node steps plain SGD on the aggregate of those (local preconditioning, as in 1-bit
    Adam's compression stage, Tang et al. 2021, without its frozen variance). Under top-k each
    coordinate then carries a normalized step, so one sent after many rounds is not squashed
    into a single normalized step by an Adam at the aggregate (RESULTS.md, issue 6).

    The moments and the step count are the sender's private state, like an error-feedback
    residual: `direction` computes them for this round's gradient, `adopt` keeps them once the
    round commits (a round redone after a view change must not advance them twice).
    """

    def __init__(self, size: int, beta1: float = 0.9, beta2: float = 0.99) -> None:
        self.adam = Adam(1.0, beta1, beta2)
        self.state = np.zeros(2 * size, np.float32)
        self.steps = 0
        self._pending: np.ndarray | None = None

    def direction(self, gradient: np.ndarray) -> np.ndarray:
        direction, self._pending = self.adam.direction(self.state, gradient, self.steps + 1)
        return direction

    def adopt(self) -> None:
        if self._pending is not None:
            self.state, self.steps, self._pending = self._pending, self.steps + 1, None

    def reset(self) -> None:
        self.state, self.steps, self._pending = np.zeros_like(self.state), 0, None

    def to_bytes(self) -> bytes:
        return self.steps.to_bytes(8, "little") + self.state.tobytes()

    def load(self, blob: bytes) -> None:
        self.steps = int.from_bytes(blob[:8], "little")
        self.state = np.frombuffer(blob[8:], dtype=np.float32).copy()
        self._pending = None


class GroupedOptimizer:
    """One optimizer per parameter group (engine/workloads/base.py, ParameterGroup), each at its
    group's learning rate and only in the group's rounds: a group outside them keeps its
    parameters and its state bit for bit, whatever the aggregate holds on its slice (so a
    Byzantine sender cannot move a frozen reward model). A group's step count starts at 1 in
    its first round, so Adam's bias correction treats a late group as fresh. State: each
    group's state, in group order."""

    def __init__(self, kind: str, lr: float, momentum: float,
                 groups: tuple[ParameterGroup, ...]) -> None:
        self.groups = groups
        self.parts = [make_optimizer(kind, lr if g.lr is None else g.lr, momentum)
                      for g in groups]
        self._state_slices: list[slice] = []

    def init_state(self, params: np.ndarray) -> np.ndarray:
        states, start = [], 0
        self._state_slices = []
        for g, opt in zip(self.groups, self.parts, strict=True):
            state = opt.init_state(params[g.start:g.stop])
            self._state_slices.append(slice(start, start + state.size))
            start += state.size
            states.append(state)
        return np.concatenate(states).astype(np.float32)

    def step(self, params: np.ndarray, state: np.ndarray, update: np.ndarray,
             t: int = 1) -> tuple[np.ndarray, np.ndarray]:
        if not self._state_slices:
            self.init_state(params)
        params, state = params.copy(), state.copy()
        round = t - 1  # the node steps round r with t = r + 1
        for g, opt, at in zip(self.groups, self.parts, self._state_slices, strict=True):
            if not g.active(round):
                continue
            part = slice(g.start, g.stop)
            params[part], state[at] = opt.step(params[part], state[at], update[part],
                                               round - g.first_round + 1)
        return params, state


def make_optimizer(kind: str, lr: float, momentum: float) -> Optimizer:
    """"sgd" (heavy ball with `momentum`) or "adam" (`momentum` is its beta1)."""
    if kind == "sgd":
        return MomentumSGD(lr, momentum)
    if kind == "adam":
        return Adam(lr, beta1=momentum)
    raise ValueError(f"unknown optimizer {kind!r}; known: adam, sgd")
