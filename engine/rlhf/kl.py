"""The KL coefficient of PPO's per-token reward (`losses.token_rewards`): fixed, or adapted
towards a target KL per sequence (Ziegler et al. 2019).

Every node must hold the same coefficient, since it enters the rewards and so the gradients
the quorum compares. Both controllers are pure functions of their inputs (Python floats, no
clock, no randomness), so that holds if the caller feeds `update` a KL that every node
computes identically: one taken from committed data, such as the deterministic aggregate of
the KLs reported in a round's certified gradient results, never a node's own measurement.
`state()` and `from_state()` let a restarted node rebuild a controller from its store.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real
from typing import Protocol

__all__ = ["AdaptiveKL", "FixedKL", "KLController", "kl_controller_from_state"]

# Ziegler et al. clip the proportional error so that one noisy KL moves the coefficient by at
# most 20% of steps/horizon
MAX_ERROR = 0.2

State = dict[str, float | int | str]


class KLController(Protocol):
    value: float

    def update(self, kl: float, steps: int) -> None: ...


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number")
    return float(value)


def _count(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}")
    return value


def _field(state: Mapping[str, object], key: str) -> object:
    if key not in state:
        raise ValueError(f"KL controller state lacks {key!r}")
    return state[key]


def _check_kind(state: Mapping[str, object], kind: str) -> None:
    if _field(state, "kind") != kind:
        raise ValueError(f"KL controller state is not of kind {kind!r}")


class FixedKL:
    """A constant coefficient (InstructGPT used β = 0.02); `update` checks its arguments and
    changes nothing, so the two controllers are interchangeable."""

    def __init__(self, coef: float) -> None:
        coef = _number("coef", coef)
        if coef < 0:
            raise ValueError("coef must be >= 0")
        self.value = coef

    def update(self, kl: float, steps: int) -> None:
        _number("kl", kl)
        _count("steps", steps, 0)

    def state(self) -> State:
        return {"kind": "fixed", "value": self.value}

    @classmethod
    def from_state(cls, state: Mapping[str, object]) -> FixedKL:
        _check_kind(state, "fixed")
        return cls(_field(state, "value"))  # type: ignore[arg-type]  # _number checks it

    def __repr__(self) -> str:
        return f"FixedKL(coef={self.value})"


class AdaptiveKL:
    """Ziegler et al. 2019's proportional controller: after `steps` samples whose KL per
    sequence was `kl`,

        error = clip(kl / target − 1, −0.2, 0.2);   value ← value · (1 + error · steps / horizon)

    so the coefficient rises while the policy drifts further than `target` nats from the
    reference and falls while it stays closer. The paper uses horizon = 10000 (samples);
    `steps` may not exceed `horizon`, so one update moves the value by at most 20%.
    """

    def __init__(self, init: float, target: float, horizon: int) -> None:
        init, target = _number("init", init), _number("target", target)
        if init <= 0:
            raise ValueError("init must be > 0 (the update is multiplicative)")
        if target <= 0:
            raise ValueError("target must be > 0")
        self.value = init
        self.target = target
        self.horizon = _count("horizon", horizon, 1)

    def update(self, kl: float, steps: int) -> None:
        kl = _number("kl", kl)
        steps = _count("steps", steps, 0)
        if steps > self.horizon:
            raise ValueError("steps must be <= horizon")
        error = min(max(kl / self.target - 1, -MAX_ERROR), MAX_ERROR)
        self.value *= 1 + error * steps / self.horizon

    def state(self) -> State:
        return {"kind": "adaptive", "value": self.value, "target": self.target,
                "horizon": self.horizon}

    @classmethod
    def from_state(cls, state: Mapping[str, object]) -> AdaptiveKL:
        """The controller `state()` described: the current value is all that updates change."""
        _check_kind(state, "adaptive")
        return cls(_field(state, "value"), _field(state, "target"),  # type: ignore[arg-type]
                   _field(state, "horizon"))  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"AdaptiveKL(value={self.value}, target={self.target}, horizon={self.horizon})"


def kl_controller_from_state(state: Mapping[str, object]) -> FixedKL | AdaptiveKL:
    """Either controller from its `state()`, by its "kind"."""
    kinds: dict[object, type[FixedKL] | type[AdaptiveKL]] = {"fixed": FixedKL,
                                                              "adaptive": AdaptiveKL}
    kind = _field(state, "kind")
    if not isinstance(kind, str) or kind not in kinds:
        raise ValueError("KL controller kind must be 'fixed' or 'adaptive'")
    return kinds[kind].from_state(state)
