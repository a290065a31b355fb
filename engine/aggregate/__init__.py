"""Deterministic Byzantine-robust aggregation of the agreed set of gradients.

One class per rule, all called the same way (:class:`Aggregator`)::

    rule = make_aggregator("krum", pre=[("bucketing", {"s": 2})])
    update = rule(gradients, AggregationContext(f=2, seed=round_seed, previous=last_update))

Inputs are 1-D float arrays of equal length ordered by sender id; the result is float32.
Every rule computes in float64 with a fixed reduction order (no BLAS, no threads, no
library-chosen summation order; see :mod:`._numeric`), so any node recomputes a committed
aggregate bit for bit.

Rules (``AGGREGATORS``): mean, median, trimmed_mean, krum, multi_krum, geometric_median,
centered_clipping. Pre-aggregation steps (``PRE_AGGREGATORS``), wrapping any rule:
bucketing, nnm.

Sender order: median, trimmed mean, Krum, Multi-Krum and NNM give the same bytes for any order
of the senders when no two values/scores/distances tie (ties go to the lower sender index);
mean, geometric median and centered clipping sum in sender order, so reordering can change the
last bit; bucketing with a fixed seed permutes positions, so reordering changes the buckets
(it is invariant only in distribution over seeds). The node always passes sender-id order.
"""

from __future__ import annotations

from .base import AggregationContext, Aggregator, PreAggregator
from .bucketing import Bucketing
from .centered_clipping import CenteredClipping
from .geometric_median import GeometricMedian
from .krum import Krum, MultiKrum
from .mean import Mean
from .median import Median
from .nnm import NNM
from .registry import (
    AGGREGATORS,
    PRE_AGGREGATORS,
    Need,
    declared_need,
    describe,
    make_aggregator,
    min_inputs,
    parameters,
    probe_inputs,
    required_inputs,
)
from .trimmed_mean import TrimmedMean

__all__ = [
    "AGGREGATORS",
    "NNM",
    "PRE_AGGREGATORS",
    "AggregationContext",
    "Aggregator",
    "Bucketing",
    "CenteredClipping",
    "GeometricMedian",
    "Krum",
    "Mean",
    "Median",
    "MultiKrum",
    "Need",
    "PreAggregator",
    "TrimmedMean",
    "declared_need",
    "describe",
    "make_aggregator",
    "min_inputs",
    "parameters",
    "probe_inputs",
    "required_inputs",
]
