"""Name → class tables and the factory the node and the scenarios use."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from .base import Aggregator, PreAggregator, is_int
from .bucketing import Bucketing
from .centered_clipping import CenteredClipping
from .geometric_median import GeometricMedian
from .krum import Krum, MultiKrum
from .mean import Mean
from .median import Median
from .nnm import NNM
from .trimmed_mean import TrimmedMean

AGGREGATORS: dict[str, type[Aggregator]] = {
    cls.name: cls
    for cls in (
        Mean, Median, TrimmedMean, Krum, MultiKrum, GeometricMedian, CenteredClipping
    )
}
PRE_AGGREGATORS: dict[str, type[PreAggregator]] = {cls.name: cls for cls in (Bucketing, NNM)}

PreSpec = str | tuple[str, Mapping[str, Any]]


def parameters(cls: type[Aggregator]) -> list[str]:
    """The constructor parameters a rule accepts by name (besides ``f`` and ``inner``)."""
    return [
        fl.name for fl in dataclasses.fields(cls) if fl.init and fl.name not in ("f", "inner")
    ]


def _build(cls: type[Aggregator], params: Mapping[str, Any], **fixed: Any) -> Aggregator:
    known = parameters(cls)
    for key in params:
        if key not in known:
            raise ValueError(
                f"{cls.name} has no parameter {key!r}; its parameters: "
                f"{', '.join(known) if known else '(none)'}"
            )
    return cls(**fixed, **params)


def make_aggregator(
    name: str, f: int = 0, pre: Sequence[PreSpec] = (), **params: Any
) -> Aggregator:
    """Build the rule ``name`` with ``params``, wrapped by the pre-aggregation steps ``pre``.

    ``pre`` lists steps as a name or ``(name, {param: value})``; they run in the listed order
    before the rule (``pre=("nnm",)`` gives ``NNM(rule)``). ``f`` is the tolerance used when the
    result is called without a context. Raises ``ValueError`` naming the bad name, parameter or
    value and listing what is allowed.
    """
    if not isinstance(name, str) or name not in AGGREGATORS:
        raise ValueError(f"unknown aggregator {name!r}; known: {', '.join(sorted(AGGREGATORS))}")
    if not is_int(f) or f < 0:
        raise ValueError(f"f must be an integer >= 0; got {f!r}")
    steps: Sequence[PreSpec] = [pre] if _is_one_step(pre) else list(pre)  # type: ignore[list-item]
    parsed: list[tuple[str, Mapping[str, Any]]] = []
    for step in steps:
        step_params: Mapping[str, Any]
        if isinstance(step, str):
            step_name, step_params = step, {}
        elif (
            isinstance(step, tuple)
            and len(step) == 2
            and isinstance(step[0], str)
            and isinstance(step[1], Mapping)
        ):
            step_name, step_params = step
        else:
            raise ValueError(
                f"each pre-aggregation step must be a name or (name, {{param: value}}); got {step!r}"
            )
        if step_name not in PRE_AGGREGATORS:
            raise ValueError(
                f"unknown pre-aggregation step {step_name!r}; known: "
                f"{', '.join(sorted(PRE_AGGREGATORS))}"
            )
        parsed.append((step_name, step_params))
    agg = _build(AGGREGATORS[name], params, f=f)
    for step_name, step_params in reversed(parsed):
        agg = _build(PRE_AGGREGATORS[step_name], step_params, f=f, inner=agg)
    return agg


def _is_one_step(pre: object) -> bool:
    """``pre="nnm"`` or ``pre=("bucketing", {"s": 2})`` given bare instead of in a list."""
    if isinstance(pre, str):
        return True
    return (
        isinstance(pre, tuple)
        and len(pre) == 2
        and isinstance(pre[0], str)
        and isinstance(pre[1], Mapping)
    )


def min_inputs(rule: Aggregator, f: int, most: int) -> int | None:
    """The fewest inputs (up to `most`) `rule` aggregates with f Byzantine tolerated, found by
    trying it (each rule states its own requirement, e.g. Krum's n > 2f + 2); None if even
    `most` is too few."""
    import numpy as np

    from .base import AggregationContext

    probe = [np.full(2, i, dtype=np.float32) for i in range(most)]
    for size in range(1, most + 1):
        try:
            rule(probe[:size], AggregationContext(f))
        except ValueError:
            continue
        return size
    return None
