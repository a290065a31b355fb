"""What every gradient attack is: the round's context, the callable interface and the checks
of its parameters."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np


@dataclass(frozen=True)
class AttackContext:
    """What a Byzantine node knows about the round besides the gradients."""

    n: int  # members in the round
    f: int  # Byzantine nodes (colluding)
    round: int
    rng: np.random.Generator  # seeded by the driver, per (node, round)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"AttackContext.n must be >= 1, got {self.n}")
        if not 0 <= self.f <= self.n:
            raise ValueError(f"AttackContext.f must be in [0, n={self.n}], got {self.f}")
        if self.round < 0:
            raise ValueError(f"AttackContext.round must be >= 0, got {self.round}")
        if not isinstance(self.rng, np.random.Generator):
            raise ValueError(
                f"AttackContext.rng must be a numpy.random.Generator, got {type(self.rng).__name__}"
            )


class GradientAttack(ABC):
    """A Byzantine gradient: ``attack(own, honest, ctx)`` returns the vector to send."""

    name: ClassVar[str]
    needs_honest: ClassVar[bool]  # True if it uses the honest gradients of the round

    @abstractmethod
    def __call__(
        self, own: np.ndarray, honest: Sequence[np.ndarray], ctx: AttackContext
    ) -> np.ndarray: ...


def check_real(
    owner: str, name: str, value: object, *, positive: bool = False, nonnegative: bool = False
) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{owner}.{name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{owner}.{name} must be > 0, got {value!r}")
    if nonnegative and value < 0:
        raise ValueError(f"{owner}.{name} must be >= 0, got {value!r}")


def check_int(owner: str, name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}.{name} must be an integer >= {minimum}, got {value!r}")
