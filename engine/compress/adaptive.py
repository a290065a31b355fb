"""Pick top-k's ratio from the network conditions: as many entries as fit a time budget."""

from __future__ import annotations

import math
from dataclasses import dataclass

from phalanx.engine.aggregate.base import is_int, is_real


def _finite(value: float) -> bool:
    return is_real(value) and math.isfinite(value)


def _check_positive(name: str, value: float) -> float:
    if not (_finite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class NetworkConditions:
    """What a node knows of its uplink when it sends a gradient.

    Attributes:
        bandwidth: bits per second available to this node's uplink (> 0; ``math.inf`` when
            it is too fast to measure, so that only latency limits the ratio).
        latency: seconds, one way (>= 0).
        peers: how many peers each gradient goes to (>= 0; 0 means nobody to send to).
    """

    bandwidth: float
    latency: float
    peers: int

    def __post_init__(self) -> None:
        if not (is_real(self.bandwidth) and self.bandwidth > 0):  # inf allowed, NaN not
            raise ValueError(f"bandwidth must be a number > 0; got {self.bandwidth!r}")
        if not (_finite(self.latency) and self.latency >= 0):
            raise ValueError(f"latency must be a finite number >= 0; got {self.latency!r}")
        if not (is_int(self.peers) and self.peers >= 0):
            raise ValueError(f"peers must be an integer >= 0; got {self.peers!r}")


class AdaptiveRatio:
    """The largest top-k ratio whose upload, peers * k * bytes_per_entry * 8 / bandwidth +
    latency seconds, fits ``target_seconds``, clamped to [min_ratio, max_ratio].

    The clamp is what keeps a node useful on a bad link: below ``min_ratio`` it sends late
    rather than send almost nothing. The ratio is non-decreasing in bandwidth and
    non-increasing in peers and latency.
    """

    def __init__(self, target_seconds: float, min_ratio: float, max_ratio: float) -> None:
        if not (_finite(min_ratio) and _finite(max_ratio) and 0 < min_ratio <= max_ratio <= 1):
            raise ValueError(
                f"need 0 < min_ratio <= max_ratio <= 1; got min_ratio={min_ratio!r}, "
                f"max_ratio={max_ratio!r}"
            )
        self.target_seconds = _check_positive("target_seconds", target_seconds)
        self.min_ratio = float(min_ratio)
        self.max_ratio = float(max_ratio)

    def ratio(self, size: int, conditions: NetworkConditions, bytes_per_entry: float = 8.0
              ) -> float:
        """The ratio for a vector of ``size`` entries (``bytes_per_entry``: a float32 value
        and its position's bits, at most 4 + log2(size) / 8 in top-k's wire format)."""
        if not (is_int(size) and size > 0):
            raise ValueError(f"size must be an integer > 0; got {size!r}")
        _check_positive("bytes_per_entry", bytes_per_entry)
        if not isinstance(conditions, NetworkConditions):
            raise ValueError(f"conditions must be a NetworkConditions; got {conditions!r}")
        if conditions.peers == 0:
            return self.max_ratio
        spare = self.target_seconds - conditions.latency
        if spare <= 0:  # latency alone uses up the budget
            return self.min_ratio
        if math.isinf(conditions.bandwidth):
            return self.max_ratio
        budget_bits = spare * conditions.bandwidth
        entries = budget_bits / (conditions.peers * bytes_per_entry * 8)
        return min(self.max_ratio, max(self.min_ratio, entries / size))
