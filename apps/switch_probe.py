"""What a node's work loses when node processes take turns on shared cores.

A node wakes for each event after other processes ran on its core, so its caches hold their
data, not its own, and the same work costs more CPU than when it runs back to back (on this
2-core VM: x1.25-1.41 for sealing and opening one frame with four processes taking turns).
The probe times a fixed unit of a node's kind of work (sealing and opening a 2.9 kB frame:
msgpack, Merkle hashing, Ed25519) back to back in one process, then in `processes` processes
that pass a token around a ring, each doing one unit per turn. The difference per unit is
the CPU a wake-up costs the node's work (`switch_seconds` of the cost model, sim/costs.py).
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from phalanx.net.crypto import Identity
from phalanx.net.envelope import open_frame, seal
from phalanx.net.messages import Gradient

TURNS = 1000  # units each process does in the ring
BACK_TO_BACK = 2000


def reference_unit() -> Callable[[], None]:
    identity = Identity.derive(0, 0)
    keyring = {0: identity.public_key}
    message = Gradient(0, bytes(32), 0.0, 1, np.ones(700, dtype=np.float32))

    def unit() -> None:
        open_frame(seal(identity, 0, 1, message), keyring)

    return unit


def _turns(receive: Connection, send: Connection, turns: int, results: Any) -> None:
    """One process of the ring: wait for the token, do one unit, pass the token on."""
    unit = reference_unit()
    unit()
    results.put("ready")
    cpu = 0.0
    for _ in range(turns):
        receive.recv_bytes()
        start = time.thread_time()
        unit()
        cpu += time.thread_time() - start
        send.send_bytes(b"t")
    results.put(cpu / turns)


def back_to_back_seconds(units: int = BACK_TO_BACK) -> float:
    unit = reference_unit()
    unit()
    start = time.thread_time()
    for _ in range(units):
        unit()
    return (time.thread_time() - start) / units


def switch_seconds(processes: int, turns: int = TURNS) -> dict[str, Any]:
    """The unit's CPU back to back and in a ring of `processes` (at least 2) processes, and
    the difference per unit (>= 0): the CPU a wake-up on a shared core adds."""
    processes = max(2, processes)
    ctx = multiprocessing.get_context("spawn")  # no inherited threads or torch state
    pipes = [ctx.Pipe(duplex=False) for _ in range(processes)]
    results = ctx.Queue()
    ring = [ctx.Process(target=_turns, daemon=True,
                        args=(pipes[i][0], pipes[(i + 1) % processes][1], turns, results))
            for i in range(processes)]
    for p in ring:
        p.start()
    try:
        for _ in ring:  # all started and waiting: the machine is quiet again
            results.get(timeout=120)
        before = back_to_back_seconds()
        pipes[0][1].send_bytes(b"t")
        shared = statistics.median(results.get(timeout=300) for _ in ring)
        warm = (before + back_to_back_seconds()) / 2
    finally:
        for p in ring:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    return {"processes": processes, "unit_back_to_back": warm, "unit_taking_turns": shared,
            "switch_seconds": max(0.0, shared - warm)}
