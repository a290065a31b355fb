"""The asyncio host of one real node: it feeds the sans-IO Node its events (frames from the
transport, timers on the wall clock, finished compute jobs) and carries out the actions it
returns (sends, timers, compute, writes to the SQLite node log, metrics).

The transport is anything with `send(peer, frame)`: TCP (net/tcp.py) or MPI (net/mpi.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import numpy as np

from phalanx.apps.node_log import NodeLog
from phalanx.apps.results import commit_row
from phalanx.engine.driver import dispatch
from phalanx.engine.events import (
    Action,
    ComputeDone,
    Event,
    Finished,
    Job,
    LinkConditions,
    Metric,
    Persist,
    RoundCommitted,
    Stored,
    TimerFired,
)
from phalanx.engine.metrics import MetricLog
from phalanx.engine.node import Node

T = TypeVar("T")


class Transport(Protocol):
    def send(self, peer: int, frame: bytes) -> None: ...


class AsyncHost:
    """Runs one Node on the running event loop. `keep_model(round)` says which committed
    models to keep for evaluation after the run (a long run must not keep them all).

    Compute jobs (a gradient step, seconds for a transformer) run on one worker thread per
    node, one at a time in the order the node asked, and their results come back to the loop
    as `ComputeDone` events: the loop keeps serving the transport (frames, heartbeats) and the
    HTTP endpoint while a job runs. Anything else that touches the workload's model (an
    evaluation) goes through `offload`, on the same thread, so it never races a job."""

    def __init__(self, node: Node, transport: Transport, disk: NodeLog,
                 keep_model: Callable[[int], bool] = lambda _: True,
                 on_failure: Callable[[BaseException], None] | None = None) -> None:
        self.node, self.transport, self.disk = node, transport, disk
        self.keep_model = keep_model
        self.on_failure = on_failure
        self.loop = asyncio.get_running_loop()
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.metrics = MetricLog()
        self.bytes_sent: dict[int, int] = {}
        self.finished = asyncio.Event()
        self.last_commit: float | None = None  # wall time of the latest commit
        self.started = time.time()
        self.jobs_running = 0  # compute jobs handed to the worker and not yet back
        self._worker = ThreadPoolExecutor(max_workers=1,
                                          thread_name_prefix=f"node-{getattr(node, 'id', '?')}-compute")

    def feed(self, event: Event) -> None:
        self.execute(self.node.handle(event, time.time()))

    def execute(self, actions: list[Action]) -> None:
        # one transaction for the batch's writes, before any of its sends: writing earlier
        # than the node asked is always safe (votes are on disk before they leave), and one
        # flush per batch instead of one per write is most of a small round's disk time
        writes = [(a.key, a.value) for a in actions if type(a) is Persist]
        if writes:
            self.disk.write_many(writes)
            actions = [a for a in actions if type(a) is not Persist]
        dispatch(actions, self)

    # ---- the node's actions (engine/driver.py) -------------------------------------------

    def broadcast(self, frame: bytes, kind: int, rnd: int) -> None:
        peers = self.peers
        relay = getattr(self.transport, "broadcast", None)
        if relay is not None:  # an emulated topology relays it down our tree (net/emulation)
            relay(frame)
        else:
            for peer in peers:
                self.transport.send(peer, frame)
        self.bytes_sent[rnd] = self.bytes_sent.get(rnd, 0) + len(frame) * len(peers)

    def send(self, peer: int, frame: bytes, kind: int, rnd: int) -> None:
        self.transport.send(peer, frame)
        self.bytes_sent[rnd] = self.bytes_sent.get(rnd, 0) + len(frame)

    def set_timer(self, name: str, delay: float) -> None:
        if name in self.timers:
            self.timers[name].cancel()
        self.timers[name] = self.loop.call_later(delay, self._fire, name)

    def cancel_timer(self, name: str) -> None:
        handle = self.timers.pop(name, None)
        if handle:
            handle.cancel()

    def compute(self, job: Job) -> None:
        self.jobs_running += 1
        future = self.loop.run_in_executor(self._worker, job.run)
        future.add_done_callback(lambda done: self._computed(job, done))

    def persist(self, key: str, value: Stored) -> None:
        self.disk.write_many([(key, value)])  # `execute` writes a batch's at once, first

    def emit(self, metric: Metric) -> None:
        self.metrics.record(metric, time.time())
        if isinstance(metric, RoundCommitted):
            self.last_commit = time.time()
            if not self.keep_model(metric.round):
                self.metrics.params.pop(metric.model_hash, None)
        if isinstance(metric, Finished):
            self.finished.set()

    # ---- compute off the loop --------------------------------------------------------------

    def _computed(self, job: Job, done: asyncio.Future[Any]) -> None:
        self.jobs_running -= 1
        if done.cancelled():
            return  # the host is closing
        error = done.exception()
        if error is not None:  # a bug in a job: the node cannot go on without its result
            if self.on_failure is None:
                raise error
            self.on_failure(error)
            return
        self.feed(ComputeDone(job, done.result()))

    async def offload(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the compute thread, after the jobs already queued there."""
        return await self.loop.run_in_executor(self._worker, fn)

    def close(self) -> None:
        """Stop taking jobs; a job already running finishes on its thread, unheard."""
        self._worker.shutdown(wait=False, cancel_futures=True)

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
