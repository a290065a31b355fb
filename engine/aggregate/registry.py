"""Name → class tables and the factory the node and the scenarios use."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import AggregationContext, Aggregator, PreAggregator, is_int
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


def aggregator_class(name: str) -> type[Aggregator]:
    """The rule called `name`: a built-in, or a user's (engine/plugins.py: an entry point in
    `phalanx.aggregators`, or `module:Class`); ValueError naming the known ones otherwise."""
    from phalanx.engine.plugins import resolve

    return resolve("aggregators", name, AGGREGATORS, Aggregator,  # type: ignore[return-value]
                   "aggregator")


def make_aggregator(
    name: str, f: int = 0, pre: Sequence[PreSpec] = (), **params: Any
) -> Aggregator:
    """Build the rule ``name`` with ``params``, wrapped by the pre-aggregation steps ``pre``.

    ``pre`` lists steps as a name or ``(name, {param: value})``; they run in the listed order
    before the rule (``pre=("nnm",)`` gives ``NNM(rule)``). ``f`` is the tolerance used when the
    result is called without a context. Raises ``ValueError`` naming the bad name, parameter or
    value and listing what is allowed.
    """
    if not isinstance(name, str):
        raise ValueError(f"unknown aggregator {name!r}; known: {', '.join(sorted(AGGREGATORS))}")
    rule_class = aggregator_class(name)
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
    agg = _build(rule_class, params, f=f)
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


# ---- how many inputs a rule needs ------------------------------------------------------------
#
# A round agrees on a set of gradients and every honest node aggregates exactly that set, so
# the smallest set a round may agree on is the largest count any rule needs; the scenario and
# the membership refuse a rule whose count the members cannot guarantee (scenario/schema.py).


@dataclass(frozen=True)
class Need:
    """How many inputs a rule needs with f Byzantine among them, and why in words
    (``why`` completes "krum needs ...": ``"2f + 3 = 9 inputs"``)."""

    inputs: int
    why: str


def _inputs(k: int) -> str:
    return f"{k} input" + ("" if k == 1 else "s")


def _majority(rule: Aggregator, f: int) -> Need:  # median, geometric median, centered clipping
    return Need(2 * f + 1, f"2f + 1 = {_inputs(2 * f + 1)}")


def _trimmed(rule: TrimmedMean, f: int) -> Need:
    if rule.trim is None:
        return _majority(rule, f)
    k = 2 * int(rule.trim) + 1
    return Need(k, f"2·trim + 1 = {_inputs(k)}")


def _krum(rule: Aggregator, f: int) -> Need:
    return Need(2 * f + 3, f"2f + 3 = {_inputs(2 * f + 3)}")


def _multi_krum(rule: MultiKrum, f: int) -> Need:
    if rule.m is None or int(rule.m) + f <= 2 * f + 3:
        return _krum(rule, f)
    k = int(rule.m) + f
    return Need(k, f"m + f = {_inputs(k)}")


def _bucketing(rule: Bucketing, inner: Need, f: int) -> Need:
    s = int(rule.s)
    k = s * (inner.inputs - 1) + 1  # the fewest m with ⌈m/s⌉ >= inner.inputs
    return Need(k, f"{_inputs(k)} (⌈{k}/{s}⌉ = {inner.inputs} bucket means for "
                   f"{describe(rule.inner)}, which needs {inner.why})")


def _nnm(rule: NNM, inner: Need, f: int) -> Need:
    if inner.inputs > 2 * f:  # NNM keeps the count and itself needs n > 2f
        return inner
    return Need(2 * f + 1, f"2f + 1 = {_inputs(2 * f + 1)} (for nnm)")


#: the built-in rules' declared needs (a class that declares ``min_inputs`` itself wins)
RULE_NEEDS: dict[type[Aggregator], Callable[[Any, int], Need]] = {
    Mean: lambda rule, f: Need(1, "1 input"),
    Median: _majority,
    GeometricMedian: _majority,
    CenteredClipping: _majority,
    TrimmedMean: _trimmed,
    Krum: _krum,
    MultiKrum: _multi_krum,
}
#: the built-in pre-aggregation steps: from the inner rule's need to the step's
STEP_NEEDS: dict[type[PreAggregator], Callable[[Any, Need, int], Need]] = {
    Bucketing: _bucketing,
    NNM: _nnm,
}


def describe(rule: Aggregator) -> str:
    """``median``, ``multi_krum (m = 4)``, ``median after bucketing (s = 3) and nnm``."""
    steps = []
    while isinstance(rule, PreAggregator):
        steps.append(rule.name + _shown_params(rule, every=True))
        rule = rule.inner
    text = rule.name + _shown_params(rule, every=False)
    return text + (" after " + " and ".join(steps) if steps else "")


def _shown_params(rule: Aggregator, every: bool) -> str:
    """The parameters (every one, or those set to another value than their default), as
    ``" (s = 3)"``."""
    shown = []
    for fl in dataclasses.fields(rule):
        if fl.init and fl.name not in ("f", "inner"):
            value = getattr(rule, fl.name)
            if every or fl.default is dataclasses.MISSING or value != fl.default:
                shown.append(f"{fl.name} = {value}")
    return f" ({', '.join(shown)})" if shown else ""


def _overrides(rule: Aggregator, method: str) -> bool:
    """Whether the rule's class declares `method` itself (rather than the base's default)."""
    return getattr(type(rule), method) is not getattr(Aggregator if method == "min_inputs"
                                                       else PreAggregator, method)


def declared_need(rule: Aggregator, f: int) -> Need | None:
    """The inputs ``rule`` needs with ``f`` Byzantine as its class declares it (its own
    ``min_inputs``, or for the built-ins the tables above), composed through pre-aggregation
    steps (their ``inputs_for``, or the table); None where some part does not declare it."""
    if _overrides(rule, "min_inputs"):
        own = rule.min_inputs(f)
        return None if own is None else Need(own, _inputs(own))
    if isinstance(rule, PreAggregator):
        inner = declared_need(rule.inner, f)
        if inner is None:
            return None
        if _overrides(rule, "inputs_for"):
            step_own = rule.inputs_for(inner.inputs, f)
            return None if step_own is None else Need(
                step_own, f"{_inputs(step_own)} (for {describe(rule.inner)} after {rule.name})")
        step = STEP_NEEDS.get(type(rule))
        return None if step is None else step(rule, inner, f)
    table = RULE_NEEDS.get(type(rule))
    return None if table is None else table(rule, f)


def probe_inputs(rule: Aggregator, f: int, most: int, least: int = 1) -> int | None:
    """The fewest inputs (from `least` up to `most`) `rule` aggregates with f Byzantine
    tolerated, found by trying it on probe vectors; None if even `most` is too few. The
    fallback for a rule that does not declare its need."""
    probe = [np.full(2, i, dtype=np.float32) for i in range(most)]
    for size in range(max(1, least), most + 1):
        try:
            rule(probe[:size], AggregationContext(f))
        except ValueError:
            continue
        return size
    return None


def required_inputs(rule: Aggregator, f: int, most: int) -> Need | None:
    """What ``rule`` needs with ``f`` Byzantine among its inputs: declared where it is,
    else probed up to ``most`` inputs (None: more than ``most``)."""
    need = declared_need(rule, f)
    if need is not None:
        return need
    k = probe_inputs(rule, f, most)
    return None if k is None else Need(k, _inputs(k))


def min_inputs(rule: Aggregator, f: int, most: int) -> int | None:
    """The fewest inputs ``rule`` aggregates with f Byzantine tolerated, if at most ``most``
    (declared where the rule declares it, else probed); None otherwise."""
    need = required_inputs(rule, f, most)
    return need.inputs if need is not None and need.inputs <= most else None
