"""A measured cost model for the simulator (opt-in: `phalanx run --costs FILE`).

By default a simulated node spends `training.step_time x cost / speed` on a gradient and no
time on anything else. With a costs file (written by `phalanx calibrate --components`, which
times each component alone on one machine, never a run of the scenario being predicted) every
node is modelled as the real node process on that machine:

- `gradient_seconds[workload]`: one gradient of the workload (replaces step_time; speed and
  slow faults still scale it);
- `apply_seconds[workload]`: aggregating a round's gradient set and the optimizer step, once
  per committed round;
- `frame_in` (decode + verify a received frame), `frame_out` (encode + sign a frame the node
  sends: once per frame, however many peers get it) and `persist` (one SQLite transaction
  with its flush, per batch of writes, as the real host writes them), each `base + per_byte x
  bytes`;
- `transport_latency`: one frame's one-way time through the real transport between two
  processes on the machine (TcpTransport over loopback, wake-ups included), added to every
  hop's latency;
- `cores`: a node handles one event at a time (input cost, then its outputs' costs, then its
  sends leave), and every CPU task of every node takes one of the machine's `cores`, so a
  cluster that shares a small machine queues for it;
- `background_load`: other tenants' runnable tasks (the load average measured before the
  components); the cores run our tasks at cores / (cores + background_load) of their speed,
  as a time-shared machine divides them. CPU components are CPU seconds, so this is the one
  place the machine's load enters;
- `disks`: the SQLite flushes of all nodes queue for the machine's disks (one by default):
  a flush is measured in wall time, and nodes that share a disk wait for each other's.

Link parameters stay the scenario's. The file is validated here (one-line errors), and a run
with it is a pure function of (scenario, seed, file).
"""

from __future__ import annotations

import heapq
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = "phalanx-costs/1"

__all__ = ["FORMAT", "CostError", "CostModel", "CpuPool", "Linear", "load_costs",
           "parse_costs", "workload_key"]


class CostError(ValueError):
    """A costs file that cannot be used; the message is one line."""


@dataclass(frozen=True)
class Linear:
    """Seconds for a payload of `size` bytes: base + per_byte x size."""

    base: float
    per_byte: float

    def __call__(self, size: int) -> float:
        return self.base + self.per_byte * size


@dataclass(frozen=True)
class CostModel:
    cores: int
    gradient_seconds: dict[str, float]
    apply_seconds: dict[str, float]
    frame_in: Linear
    frame_out: Linear
    persist: Linear
    transport_latency: float = 0.0
    background_load: float = 0.0
    disks: int = 1
    source: str = ""

    @property
    def speed(self) -> float:
        """The share of a core one of our tasks gets beside the other tenants' load."""
        return self.cores / (self.cores + self.background_load)

    def for_workload(self, key: str) -> tuple[float, float]:
        """(gradient, apply) seconds of the workload `key`; CostError when not measured."""
        if key not in self.gradient_seconds or key not in self.apply_seconds:
            raise CostError(f"{self.source}: no measured gradient/apply time for workload "
                            f"{key}; measure it with phalanx calibrate SCENARIO --components "
                            f"{self.source or 'FILE'}")
        return self.gradient_seconds[key], self.apply_seconds[key]


def workload_key(scenario: Any) -> str:
    """What a gradient's and an aggregation's cost depends on: the workload, the batch, the
    node count (aggregation), the aggregator, optimizer and compression."""
    t = scenario.training
    return json.dumps({"workload": scenario.workload.model_dump(mode="json"), "batch": t.batch,
                       "n": scenario.n, "aggregator": t.aggregator.model_dump(mode="json"),
                       "optimizer": t.optimizer,
                       "compression": scenario.compression.model_dump(mode="json")},
                      sort_keys=True, separators=(",", ":"))


class CpuPool:
    """The machine's cores: a task ready at t starts on the first core free (deterministic:
    ties go to the lowest core), and runs at `speed` (1: the cores are ours alone)."""

    def __init__(self, cores: int, speed: float = 1.0) -> None:
        self._free = [(0.0, core) for core in range(cores)]
        self.speed = speed

    def run(self, ready: float, seconds: float) -> float:
        """Book `seconds` of CPU from `ready` on; returns when the task ends."""
        if seconds <= 0.0:
            return ready
        free, core = heapq.heappop(self._free)
        end = max(ready, free) + seconds / self.speed
        heapq.heappush(self._free, (end, core))
        return end


def _seconds(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            math.isfinite(value) and value >= 0):
        raise CostError(f"{where} must be a finite number of seconds >= 0")
    return float(value)


def _count(value: Any, name: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4096:
        raise CostError(f"{source}: {name} must be an integer from 1 to 4096")
    return value


def _load(value: Any, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            math.isfinite(value) and 0 <= value <= 1e6):
        raise CostError(f"{source}: background_load must be a number >= 0 (runnable tasks)")
    return float(value)


def _linear(data: dict[str, Any], name: str, source: str) -> Linear:
    part = data.get(name)
    if not isinstance(part, dict) or set(part) != {"base", "per_byte"}:
        raise CostError(f"{source}: {name} must be an object with base and per_byte (seconds)")
    return Linear(_seconds(part["base"], f"{source}: {name}.base"),
                  _seconds(part["per_byte"], f"{source}: {name}.per_byte"))


def _table(data: dict[str, Any], name: str, source: str) -> dict[str, float]:
    table = data.get(name)
    if not isinstance(table, dict):
        raise CostError(f"{source}: {name} must be an object of workload -> seconds")
    return {str(k): _seconds(v, f"{source}: {name} entry {i}")
            for i, (k, v) in enumerate(table.items())}


def parse_costs(data: Any, source: str = "costs") -> CostModel:
    """Validate a parsed costs file; CostError names the first bad field."""
    if not isinstance(data, dict):
        raise CostError(f"{source}: expected a JSON object")
    if data.get("format") != FORMAT:
        raise CostError(f"{source}: format must be {FORMAT!r} (written by phalanx calibrate "
                        f"--components)")
    return CostModel(_count(data.get("cores"), "cores", source), _table(data, "gradient_seconds", source),
                     _table(data, "apply_seconds", source),
                     _linear(data, "frame_in", source), _linear(data, "frame_out", source),
                     _linear(data, "persist", source),
                     _seconds(data.get("transport_latency"), f"{source}: transport_latency"),
                     _load(data.get("background_load", 0.0), source),
                     _count(data.get("disks", 1), "disks", source), source)


def load_costs(path: str | Path) -> CostModel:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise CostError(f"{path}: cannot read the costs file ({err.strerror})") from None
    except UnicodeDecodeError:
        raise CostError(f"{path}: not a costs file (not UTF-8 text)") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise CostError(f"{path}: invalid JSON (line {err.lineno}: {err.msg})") from None
    return parse_costs(data, str(path))
