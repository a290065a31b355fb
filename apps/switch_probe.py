"""What a node's work costs when node processes take turns on shared cores.

A node wakes for each event after other processes ran on its core, so the caches hold their
data, not its own, and the same work costs more CPU than when it runs back to back (on this
2-core VM, four processes taking turns: x1.25-1.4 for sealing and opening one frame, x1.8
for one gradient of the small mlp, whose torch calls touch much memory). The probe times a
unit of work back to back in this process, then in `processes` processes that pass tokens
around a ring (as many tokens as cores, so that many run at once, as in a busy cluster),
each doing one unit per turn, and reports both: the cost model (sim/costs.py)
takes a gradient's CPU as it is taking turns, and adds the frame unit's difference
(`switch_seconds`) to every event a node handles.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from phalanx.net.crypto import Identity
from phalanx.net.envelope import open_frame, seal
from phalanx.net.messages import Gradient

RING_SECONDS = 2.0  # about how long the ring runs by default: turns for a stable median
MAX_TURNS = 1000

Unit = Callable[[], None]


def frame_unit() -> Unit:
    """Sealing and opening a 2.9 kB gradient frame (msgpack, Merkle hashing, Ed25519)."""
    identity = Identity.derive(0, 0)
    keyring = {0: identity.public_key}
    message = Gradient(0, bytes(32), 0.0, 1, np.ones(700, dtype=np.float32))

    def unit() -> None:
        open_frame(seal(identity, 0, 1, message), keyring)

    return unit


def gradient_unit(scenario_yaml: str) -> Unit:
    """One gradient of the scenario's workload (node 0's, successive rounds' batches), on one
    torch thread as a node computes it."""
    import torch

    from phalanx.engine.rng import RngStreams
    from phalanx.engine.workloads.base import GradientJob
    from phalanx.scenario.build import workload_for
    from phalanx.scenario.schema import parse_scenario

    torch.set_num_threads(1)
    scenario = parse_scenario(yaml.safe_load(scenario_yaml), "probe")
    workload = workload_for(scenario, RngStreams(scenario.seed))
    params = workload.init_params()
    rounds = iter(range(1 << 62))

    def unit() -> None:
        GradientJob(workload, 0, next(rounds), params).run()

    return unit


def _turns(unit: Unit, receive: int, send: int) -> float:
    """One process of the ring (file descriptors of its pipes): told its number of turns on
    stdin, it waits for the token, does one unit and passes the token on, each turn; returns
    its mean CPU seconds per unit."""
    unit()  # one-off set-up (shards, kernels) before the timed turns
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    turns = int(sys.stdin.readline())
    cpu = 0.0
    for _ in range(turns):
        os.read(receive, 1)
        start = time.thread_time()
        unit()
        cpu += time.thread_time() - start
        os.write(send, b"t")
    return cpu / turns


def back_to_back(unit: Unit, seconds: float = 0.5) -> float:
    """CPU seconds of one unit, run back to back for `seconds`."""
    unit()
    wall, start, count = time.perf_counter(), time.thread_time(), 0
    while count < 5 or time.perf_counter() - wall < seconds:
        unit()
        count += 1
    return (time.thread_time() - start) / count


def taking_turns(unit_args: list[str], processes: int, seconds: float = RING_SECONDS
                 ) -> dict[str, Any]:
    """A unit's CPU seconds back to back (here, before and after the ring) and as each of
    `processes` (at least 2) processes taking turns does it (the median process's mean).
    `unit_args`: `frame`, or `gradient SCENARIO_FILE`."""
    processes = max(2, processes)
    pipes = [os.pipe() for _ in range(processes)]  # process i reads pipes[i], writes i + 1
    ring = []
    try:
        for i in range(processes):
            receive, send = pipes[i][0], pipes[(i + 1) % processes][1]
            ring.append(subprocess.Popen(
                [sys.executable, "-m", "phalanx.apps.switch_probe", str(receive), str(send),
                 *unit_args], pass_fds=(receive, send), stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, text=True))
        for p in ring:  # all set up and waiting: the machine is quiet again
            if p.stdout is None or p.stdout.readline().strip() != "ready":
                raise ProbeError(f"a ring process of the {unit_args[0]} probe exited "
                                 f"({p.wait()})")
        unit = _unit(unit_args)
        before = back_to_back(unit, seconds / 4)
        # as many tokens as cores: as in a busy cluster, that many processes run at once
        # (contending for memory and the shared cache) while the others wait their turn
        tokens = min(len(os.sched_getaffinity(0)), processes)
        turns = max(10, min(MAX_TURNS, int(seconds * tokens / (processes * before))))
        for p in ring:
            assert p.stdin is not None
            p.stdin.write(f"{turns}\n")
            p.stdin.flush()
        for k in range(tokens):  # spread around the ring
            os.write(pipes[k * processes // tokens][1], b"t")
        shared = []
        for p in ring:
            out, _ = p.communicate(timeout=600)
            if p.returncode != 0:
                raise ProbeError(f"a ring process of the {unit_args[0]} probe exited "
                                 f"({p.returncode})")
            shared.append(float(out))
        alone = (before + back_to_back(unit, seconds / 4)) / 2
    finally:
        for p in ring:
            if p.poll() is None:
                p.kill()
                p.wait()
        for fds in pipes:
            for fd in fds:
                os.close(fd)
    return {"processes": processes, "tokens": tokens, "turns": turns, "back_to_back": alone,
            "taking_turns": statistics.median(shared)}


def _unit(args: list[str]) -> Unit:
    if args[0] == "frame":
        return frame_unit()
    return gradient_unit(Path(args[1]).read_text())


def switch_seconds(processes: int, seconds: float = RING_SECONDS) -> dict[str, Any]:
    """The frame unit's extra CPU when `processes` take turns (>= 0): what a wake-up on a
    shared core adds to an event's handling."""
    probe = taking_turns(["frame"], processes, seconds)
    return {**probe, "switch_seconds": max(0.0, probe["taking_turns"] - probe["back_to_back"])}


def shared_gradient_seconds(scenario_yaml: str, processes: int,
                            seconds: float = RING_SECONDS) -> dict[str, Any]:
    """A gradient's CPU seconds back to back and as `processes` node processes taking turns."""
    with tempfile.TemporaryDirectory(prefix="phalanx-probe-") as tmp:
        path = Path(tmp) / "scenario.yaml"
        path.write_text(scenario_yaml)
        return taking_turns(["gradient", str(path)], processes, seconds)


class ProbeError(RuntimeError):
    """A probe that could not run; the message is one line."""


if __name__ == "__main__":  # a ring process: RECEIVE_FD SEND_FD frame | gradient FILE
    print(_turns(_unit(sys.argv[3:]), int(sys.argv[1]), int(sys.argv[2])))
