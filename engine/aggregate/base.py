"""The uniform aggregation API: one class per rule, all called the same way.

``rule(gradients, ctx) -> aggregate``: ``gradients`` are 1-D float arrays of equal length
ordered by sender id, ``ctx`` says how many of them may be Byzantine (and carries the shared
seed and the last committed aggregate). Every rule computes in float64 with a fixed reduction
order (see :mod:`._numeric`) and returns float32, so any node recomputes a committed aggregate
bit for bit.

Pre-aggregation steps (bucketing, NNM) are aggregators that wrap another one: they transform
the ``(n, d)`` stack of inputs and hand the result to the wrapped rule.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ._numeric import stack_gradients


def is_int(value: object) -> bool:
    """True for Python/numpy integers, but not for bools."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """True for Python/numpy ints and floats, but not for bools."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


@dataclass(frozen=True, eq=False)
class AggregationContext:
    """What a rule needs to know besides the gradients; identical on every honest node.

    Attributes:
        f: how many of the input vectors the rule must tolerate being Byzantine.
        seed: shared randomness (bucketing draws its permutation from it); the node should
            derive it from the round so that it is the same everywhere but changes per round.
        previous: the last committed aggregate, the centre of centered clipping
            (``None`` means the zero vector).

    ``eq=False``: contexts hold an array, so they compare and hash by identity.
    """

    f: int
    seed: int = 0
    previous: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not is_int(self.f) or self.f < 0:
            raise ValueError(f"AggregationContext.f must be an integer >= 0; got {self.f!r}")
        if not is_int(self.seed) or self.seed < 0:
            raise ValueError(f"AggregationContext.seed must be an integer >= 0; got {self.seed!r}")
        if self.previous is not None:
            prev = self.previous
            if not isinstance(prev, np.ndarray) or prev.ndim != 1 or prev.dtype.kind != "f":
                raise ValueError(
                    "AggregationContext.previous must be None or a 1-D float array; got "
                    f"{type(prev).__name__} {getattr(prev, 'shape', '')}"
                )
            if not np.isfinite(prev).all():
                raise ValueError("AggregationContext.previous contains NaN or infinite values")


@dataclass(frozen=True)
class Aggregator(ABC):
    """Base class of every aggregation rule (and of every pre-aggregation wrapper).

    Subclasses are frozen dataclasses whose fields are the rule's parameters; they set
    ``name`` and implement :meth:`aggregate_rows`. ``f`` (keyword-only) is the tolerance used
    when the rule is called *without* a context (``rule(gradients)``, the node's plain call);
    a context passed to the call always takes precedence.
    """

    name: ClassVar[str]
    f: int = field(default=0, kw_only=True)

    def __post_init__(self) -> None:
        if not is_int(self.f) or self.f < 0:
            raise ValueError(f"{self.name}: f must be an integer >= 0; got {self.f!r}")
        self.validate()

    def validate(self) -> None:  # noqa: B027 - optional hook, most rules have nothing to check
        """Check the constructor parameters; raise ``ValueError`` naming the bad one."""

    def __call__(
        self, gradients: Sequence[np.ndarray], ctx: AggregationContext | None = None
    ) -> np.ndarray:
        """Aggregate ``gradients`` (1-D float arrays, ordered by sender) into one float32 vector."""
        if ctx is None:
            ctx = AggregationContext(f=self.f)
        elif not isinstance(ctx, AggregationContext):
            raise ValueError(f"ctx must be an AggregationContext; got {type(ctx).__name__}")
        x = stack_gradients(gradients)
        return self.aggregate_rows(x, ctx).astype(np.float32)

    @abstractmethod
    def aggregate_rows(self, x: np.ndarray, ctx: AggregationContext) -> np.ndarray:
        """The rule proper: ``x`` is a validated C-ordered ``(n, d)`` float64 array (row i is
        sender i's vector); return the ``(d,)`` float64 aggregate. Never mutate ``x``."""

    def require(self, ok: bool, message: str) -> None:
        """Raise ``ValueError("<name>: <message>")`` unless ``ok``."""
        if not ok:
            raise ValueError(f"{self.name}: {message}")

    def min_inputs(self, f: int) -> int | None:
        """The fewest inputs the rule aggregates while tolerating ``f`` Byzantine among them
        (Krum: 2f + 3), or None where the rule does not declare it.

        A rule of your own overrides this; it must then accept every count from there up (a
        round may agree on any set of at least that many gradients). Undeclared,
        :func:`.registry.required_inputs` finds the count by trying the rule on probe inputs.
        The built-in rules and steps answer from the registry's table (``RULE_NEEDS``,
        ``STEP_NEEDS``), pre-aggregation steps composed through the rule they wrap.
        """
        from .registry import declared_need  # the registry imports the rules: import it late

        need = declared_need(self, f)
        return None if need is None else need.inputs


@dataclass(frozen=True)
class PreAggregator(Aggregator):
    """A pre-aggregation step wrapping any rule: ``inner(transform(x))``.

    The wrapped rule sees the transformed vectors with the same context (same ``f``), and
    its size checks then apply to the transformed count.
    """

    inner: Aggregator

    def __post_init__(self) -> None:
        if not isinstance(self.inner, Aggregator):
            raise ValueError(
                f"{self.name}: inner must be an Aggregator; got {type(self.inner).__name__}"
            )
        super().__post_init__()

    def inputs_for(self, outputs: int, f: int) -> int | None:
        """The fewest inputs this step accepts with ``f`` and turns into at least ``outputs``
        vectors for the inner rule (bucketing with s: s·(outputs − 1) + 1), or None where the
        step does not declare it. A step of your own overrides this; ``min_inputs`` then
        composes it with the inner rule's need."""
        return None

    @abstractmethod
    def transform(self, x: np.ndarray, ctx: AggregationContext) -> np.ndarray:
        """Map the ``(n, d)`` float64 inputs to the ``(m, d)`` float64 vectors the inner rule sees."""

    def aggregate_rows(self, x: np.ndarray, ctx: AggregationContext) -> np.ndarray:
        y = self.transform(x, ctx)
        try:
            return self.inner.aggregate_rows(y, ctx)
        except ValueError as err:
            if y.shape[0] == x.shape[0]:
                raise
            raise ValueError(
                f"{err} (after {self.name}: {x.shape[0]} inputs became {y.shape[0]})"
            ) from err
