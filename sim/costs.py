"""A measured cost model for the simulator (opt-in: `phalanx run --costs FILE`).

By default a simulated node spends `training.step_time x cost / speed` on a gradient and no
time on anything else. With a costs file (written by `phalanx calibrate --components`, which
times each component alone on one machine, never a real run of the scenario being predicted)
every node is modelled as the real node process on that machine:

- `gradient_seconds[workload]`: one gradient of the workload as the scenario's node
  processes compute it taking turns on the machine's cores (apps/switch_probe.py; replaces
  step_time; speed and slow faults still scale it);
- `handle_seconds[workload][kind]`: the node core's own CPU time for one event of each kind
  (`event_kind`: a received frame by its message kind, a timer, a finished gradient ...):
  decoding and verifying what came in, the protocol's Python, signing what goes out, and the
  aggregation and optimizer step where a set is applied. Timed in `Node.handle` with the
  scenario's nodes in one process (calibrate's harness: no network, no other processes); a
  kind the harness never met costs the median of the measured frame kinds;
- `transport_send` / `transport_recv`: the real transport's CPU per frame and peer (the
  asyncio loop's turn, the socket call, framing), `base + per_byte x bytes`, from a
  ping-pong between two processes;
- `switch_seconds`: the CPU a wake-up adds to a node's work when node processes take turns
  on shared cores (their caches hold the others' data: apps/switch_probe.py), added to
  every handled event;
- `persist_cpu`: the CPU of one SQLite transaction of the node's records (encoding them,
  SQLite's work), and `flush`: the wall time it then waits for the disk, each `base +
  per_byte x bytes`, per batch of writes, as the real host writes them;
- `transport_latency`: one frame's one-way time through the real transport between two
  processes on the machine (TcpTransport over loopback, wake-ups included), added to every
  hop's latency;
- `cores`: a node handles one event at a time (receiving it, handling it, then sending and
  persisting its outputs before its sends leave), and every CPU task of every node takes one
  of the machine's `cores`, so a cluster that shares a small machine queues for it;
- `background_load`: other tenants' runnable tasks (measured by a CPU probe); the cores run
  our tasks at cores / (cores + background_load) of their speed, as a time-shared machine
  divides them. CPU components are CPU seconds, so this is the one place the machine's load
  enters;
- `disks`: the SQLite flushes of all nodes queue for the machine's disks (one by default),
  no core busy.

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

from phalanx.engine.events import Event, Received
from phalanx.net.envelope import peek_kind
from phalanx.net.messages import KINDS

FORMAT = "phalanx-costs/2"

__all__ = ["FORMAT", "CostError", "CostModel", "CpuPool", "Handling", "Linear", "event_kind",
           "load_costs", "parse_costs", "workload_key"]


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
class Handling:
    """The node core's CPU seconds per event kind, for one workload."""

    seconds: dict[str, float]

    def __post_init__(self) -> None:
        frames = sorted(v for k, v in self.seconds.items() if k.startswith("frame/"))
        object.__setattr__(self, "_unseen", frames[len(frames) // 2] if frames else 0.0)

    def __call__(self, kind: str) -> float:
        return self.seconds.get(kind, self._unseen)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class CostModel:
    cores: int
    gradient_seconds: dict[str, float]
    handle_seconds: dict[str, Handling]
    transport_send: Linear
    transport_recv: Linear
    persist_cpu: Linear
    flush: Linear
    switch_seconds: float = 0.0
    transport_latency: float = 0.0
    background_load: float = 0.0
    disks: int = 1
    source: str = ""

    @property
    def speed(self) -> float:
        """The share of a core one of our tasks gets beside the other tenants' load."""
        return self.cores / (self.cores + self.background_load)

    def for_workload(self, key: str) -> tuple[float, Handling]:
        """(gradient seconds, handling costs) of the workload `key`; CostError when not
        measured."""
        if key not in self.gradient_seconds or key not in self.handle_seconds:
            raise CostError(f"{self.source}: no measured gradient/handling time for workload "
                            f"{key}; measure it with phalanx calibrate SCENARIO --components "
                            f"{self.source or 'FILE'}")
        return self.gradient_seconds[key], self.handle_seconds[key]


def event_kind(event: Event) -> str:
    """What a handled event's cost depends on: a received frame's message kind (read from its
    header, unverified: it only picks a cost), else the event's type."""
    if isinstance(event, Received):
        kind = peek_kind(event.frame)
        if kind is None:
            return "frame/unreadable"
        cls = KINDS.get(kind)
        return f"frame/{cls.__name__ if cls is not None else kind}"
    return type(event).__name__


def workload_key(scenario: Any) -> str:
    """What a gradient's and an aggregation's cost depends on: the workload, the batch, the
    node count (aggregation), the aggregator, optimizer and compression; not which samples
    a node holds (the workload's `split`)."""
    t = scenario.training
    workload = scenario.workload.model_dump(mode="json", exclude={"split"})
    return json.dumps({"workload": workload, "batch": t.batch,
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


def _handling(data: dict[str, Any], source: str) -> dict[str, Handling]:
    table = data.get("handle_seconds")
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise CostError(f"{source}: handle_seconds must be an object of workload -> (event "
                        f"kind -> seconds)")
    return {str(k): Handling(_table(table, str(k), f"{source}: handle_seconds"))
            for k in table}


def parse_costs(data: Any, source: str = "costs") -> CostModel:
    """Validate a parsed costs file; CostError names the first bad field."""
    if not isinstance(data, dict):
        raise CostError(f"{source}: expected a JSON object")
    if data.get("format") != FORMAT:
        raise CostError(f"{source}: format must be {FORMAT!r} (written by phalanx calibrate "
                        f"--components)")
    return CostModel(_count(data.get("cores"), "cores", source),
                     _table(data, "gradient_seconds", source), _handling(data, source),
                     *(_linear(data, name, source) for name in (
                         "transport_send", "transport_recv", "persist_cpu", "flush")),
                     _seconds(data.get("switch_seconds"), f"{source}: switch_seconds"),
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
