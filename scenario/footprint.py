"""What a simulated run of a scenario will take on disk and in memory, from its sizes alone.

`phalanx validate` prints it, so a heavy scenario is known as one before it runs. Everything is
arithmetic on the scenario (nodes, rounds, the model's parameter count, the gradient payload
on the wire): no model is built and torch is not imported. The constants were fitted to
measured runs on a 2-core machine (README, "Disk and memory"); the estimate aims at the right
size, within a factor of 2, not at the byte.
"""

from __future__ import annotations

from dataclasses import dataclass

from phalanx.scenario.schema import (
    DigitsWorkload,
    LinearWorkload,
    MlpWorkload,
    Scenario,
    TransformerWorkload,
)

# engine/workloads/digits.py's images (8×8 pixels) and classes, kept here because importing
# that module loads torch
DIGITS_FEATURES, DIGITS_CLASSES = 64, 10
FRAME_BYTES = 184  # a signed gradient frame around its payload: header, hashes, signature
VOTE_BYTES = 190  # one signed vote frame, as a certificate holds it
EVENT_BYTES = 14  # one message event in events.parquet (compressed columns)
ROUND_ROW_BYTES = 16  # one (round, node) row of rounds.parquet
CHECKPOINT_VECTORS = 5  # a node's checkpoint: params, Adam's two moments, update, momentum
BASE_MEMORY = 420e6  # the process before the first round: Python, torch, numpy, the scenario
# what the simulator holds per gradient frame sent, in frame bytes: the frame (one copy, which
# every node's in-memory log shares), its decoded envelope in the verify-once cache, and the
# allocator's slack (measured: 2.2 GB at 600 rounds of transformer_byzantine, 0.56 GB of frames)
MEMORY_PER_FRAME_BYTE = 3.3
# what one message of a round costs while the round's traffic is in flight (its hop events,
# routed copies): measured 1.7 kB at 250 and 1000 nodes (scale_1000: 1M messages a round)
MEMORY_PER_ROUND_MESSAGE = 1700

@dataclass(frozen=True, slots=True)
class Footprint:
    parameters: int | None  # None: a user workload, whose size only its code knows
    gradient_bytes: int  # one signed gradient frame on the wire
    node_logs_bytes: int  # nodes/*.sqlite and nodes/frames.sqlite
    results_bytes: int  # rounds.parquet and events.parquet
    peak_memory_bytes: int

    def lines(self) -> list[str]:
        if self.parameters is None:
            return ["footprint: unknown (a user workload: its parameter count is its own)"]
        return [f"footprint (estimate): {self.parameters:,} parameters, "
                f"{_size(self.gradient_bytes)} per gradient frame",
                f"disk {_size(self.node_logs_bytes)} node logs + "
                f"{_size(self.results_bytes)} results; peak memory "
                f"{_size(self.peak_memory_bytes)} (a simulated run)"]


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def parameter_count(scenario: Scenario) -> int | None:
    w = scenario.workload
    if isinstance(w, LinearWorkload):
        return w.dim
    if isinstance(w, MlpWorkload | DigitsWorkload):
        features, classes = ((w.features, w.classes) if isinstance(w, MlpWorkload)
                             else (DIGITS_FEATURES, DIGITS_CLASSES))
        return features * w.hidden + w.hidden + w.hidden * classes + classes
    if isinstance(w, TransformerWorkload):
        return w.gpt_config().num_params
    return None


def messages_per_round(scenario: Scenario) -> int:
    """Messages one fault-free round sends: the gradients, the proposal, two vote phases."""
    n = scenario.nodes.count
    votes = 2 * n * (n - 1) if scenario.training.votes == "broadcast" else 4 * (n - 1)
    return n * (n - 1) + (n - 1) + votes


def _ratio(method: str, params: dict[str, object], size: int) -> float:
    """The compressor's dense-to-wire ratio; `none` is 1 without loading the compressors
    (and numpy with them: `phalanx validate` stays light)."""
    if method == "none":
        return 1.0
    from phalanx.engine.compress import make_compressor

    return make_compressor(method, **params).ratio(size)


def estimate(scenario: Scenario) -> Footprint:
    params = parameter_count(scenario)
    if params is None:
        return Footprint(None, 0, 0, 0, 0)
    c = scenario.compression
    payload = 4 * params / _ratio(c.method, c.params, params)
    gradient = int(payload) + FRAME_BYTES
    n, rounds = scenario.nodes.count, scenario.training.rounds
    quorum = 2 * ((scenario.n - 1) // 3) + 1
    # per node and round: the record without its frames (proposal naming n digests, commit
    # and prepare certificates); the frames once for the run, in frames.sqlite
    record = 100 + 34 * n + 2 * quorum * VOTE_BYTES
    logs = (n * rounds * record + rounds * n * gradient + n * CHECKPOINT_VECTORS * 4 * params
            if scenario.node_logs else 0)
    events = rounds * messages_per_round(scenario) * EVENT_BYTES if scenario.record == "all" else 0
    results = rounds * n * ROUND_ROW_BYTES + events
    memory = (BASE_MEMORY + MEMORY_PER_FRAME_BYTE * rounds * n * gradient
              + MEMORY_PER_ROUND_MESSAGE * messages_per_round(scenario))
    return Footprint(params, gradient, int(logs), int(results), int(memory))
