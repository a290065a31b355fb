"""The asyncio host of one real node: it feeds the sans-IO Node its events (frames from the
transport, timers on the wall clock, finished compute jobs) and carries out the actions it
returns (sends, timers, compute, writes to the SQLite node log, metrics).

The transport is anything with `send(peer, frame)`: TCP (net/tcp.py) or MPI (net/mpi.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from phalanx.apps.node_log import NodeLog
from phalanx.apps.results import commit_row
from phalanx.engine.events import (
    Action,
    Broadcast,
    CancelTimer,
    Compute,
    ComputeDone,
    Emit,
    Event,
    Finished,
    LinkConditions,
    Metric,
    Persist,
    RoundCommitted,
    Send,
    SetTimer,
    TimerFired,
)
from phalanx.engine.metrics import MetricLog
from phalanx.engine.node import Node


class Transport(Protocol):
    def send(self, peer: int, frame: bytes) -> None: ...


class AsyncHost:
    """Runs one Node on the running event loop. `keep_model(round)` says which committed
    models to keep for evaluation after the run (a long run must not keep them all)."""

    def __init__(self, node: Node, transport: Transport, disk: NodeLog,
                 keep_model: Callable[[int], bool] = lambda _: True) -> None:
        self.node, self.transport, self.disk = node, transport, disk
        self.keep_model = keep_model
        self.loop = asyncio.get_running_loop()
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.metrics = MetricLog()
        self.bytes_sent: dict[int, int] = {}
        self.finished = asyncio.Event()
        self.last_commit: float | None = None  # wall time of the latest commit
        self.started = time.time()

    def feed(self, event: Event) -> None:
        self.execute(self.node.handle(event, time.time()))

    def execute(self, actions: list[Action]) -> None:
        # one transaction for the batch's writes, before any of its sends: writing earlier
        # than the node asked is always safe (votes are on disk before they leave), and one
        # flush per batch instead of one per write is most of a small round's disk time
        writes = [(a.key, a.value) for a in actions if isinstance(a, Persist)]
        if writes:
            self.disk.write_many(writes)
        for action in actions:
            match action:
                case Broadcast(frame, _, rnd):
                    peers = self.peers
                    for peer in peers:
                        self.transport.send(peer, frame)
                    self.bytes_sent[rnd] = self.bytes_sent.get(rnd, 0) + len(frame) * len(peers)
                case Send(peer, frame, _, rnd):
                    self.transport.send(peer, frame)
                    self.bytes_sent[rnd] = self.bytes_sent.get(rnd, 0) + len(frame)
                case SetTimer(name, delay):
                    if name in self.timers:
                        self.timers[name].cancel()
                    self.timers[name] = self.loop.call_later(delay, self._fire, name)
                case CancelTimer(name):
                    handle = self.timers.pop(name, None)
                    if handle:
                        handle.cancel()
                case Compute(job):
                    result = job.run()  # small jobs: run inline, deliver on the next loop turn
                    self.loop.call_soon(self.feed, ComputeDone(job, result))
                case Persist():
                    pass  # written above
                case Emit(metric):
                    self._metric(metric)

    @property
    def peers(self) -> list[int]:
        """Where broadcasts go: the current members (they change when members join or leave);
        observers only ever get answers to their requests."""
        return [m for m in self.node.members if m != self.node.id]

    async def report_link(self, measure: Callable[[], tuple[float, float] | None],
                          every: float = 1.0) -> None:
        """Hand the node what the transport measured of its links ((bits/s of one link, the
        median over peers; one-way s), None until measured) whenever it changed, checked every
        `every` seconds: an adaptive compression sizes the node's next gradient from it. A
        link's rate is measured while a broadcast keeps every link busy, so the uplink as a
        whole carries that rate to each peer at once."""
        last = None
        while True:
            await asyncio.sleep(every)
            now = measure()
            if now is not None and now != last:
                last = now
                rate, latency = now
                self.feed(LinkConditions(rate * max(1, len(self.peers)), latency))

    def _fire(self, name: str) -> None:
        self.timers.pop(name, None)
        self.feed(TimerFired(name))

    def _metric(self, metric: Metric) -> None:
        self.metrics.record(metric, time.time())
        if isinstance(metric, RoundCommitted):
            self.last_commit = time.time()
            if not self.keep_model(metric.round):
                self.metrics.params.pop(metric.model_hash, None)
        if isinstance(metric, Finished):
            self.finished.set()

    def cancel_timers(self) -> None:
        for handle in self.timers.values():
            handle.cancel()
        self.timers.clear()

    def results(self) -> dict[str, Any]:
        commits = [commit_row(m, t, order, self.bytes_sent.get(m.round, 0), False)
                   for m, t, order in self.metrics.commits]
        return {"commits": commits, "rejections": dict(self.metrics.rejections)}

    def kept_models(self) -> dict[str, np.ndarray]:
        return {h.hex(): p for h, p in self.metrics.params.items()}
