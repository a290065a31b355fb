"""The asyncio host of one real node: it feeds the sans-IO Node its events (frames from the
transport, timers on the wall clock, finished compute jobs) and carries out the actions it
returns (sends, timers, compute, writes to the SQLite node log, metrics).

The transport is anything with `send(peer, frame)`: TCP (net/tcp.py) or MPI (net/mpi.py).

Its memory does not grow with the rounds: each commit's row for `results()` goes to
`<log>.commits.jsonl` beside the node's SQLite file once its round is `SPOOL_AFTER` rounds old (its
bytes sent are final by then), and only the rows of recent rounds and the models asked for
stay in memory. Older rounds a syncing peer asks for are read back from SQLite (`Load`).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from phalanx.apps.commit_rows import commit_row
from phalanx.apps.node_log import NodeLog
from phalanx.engine.driver import dispatch
from phalanx.engine.events import (
    Action,
    ComputeDone,
    Event,
    Finished,
    Job,
    LinkConditions,
    Loaded,
    LocalAnswer,
    LocalRequest,
    Metric,
    Persist,
    RoundCommitted,
    Stored,
    TimerFired,
    answer_of,
)
from phalanx.engine.metrics import MetricLog
from phalanx.engine.node import Node

T = TypeVar("T")

SPOOL_AFTER = 16  # rounds after which nothing more is sent for a round (sync answers, votes
# and proposals name the round the node is in): its commit row is complete


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
                 on_failure: Callable[[BaseException], None] | None = None,
                 on_metric: Callable[[Metric], None] | None = None) -> None:
        """`on_metric` hears every metric the node emits (the node's log tells its story
        from them: apps/node_logging.py)."""
        self.node, self.transport, self.disk = node, transport, disk
        self.keep_model = keep_model
        self.on_failure = on_failure
        self.on_metric = on_metric
        self.loop = asyncio.get_running_loop()
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.metrics = MetricLog()  # rejections and the kept models (commits: below)
        self.bytes_sent: dict[int, int] = {}  # round -> bytes, for the rounds not spooled yet
        self.commit_count = 0  # commits this process made
        self.last_train_loss: float | None = None
        self._recent: deque[tuple[RoundCommitted, float, int]] = deque()  # not spooled yet
        self._spool_path = disk.path.with_suffix(".commits.jsonl")
        self._spool = self._spool_path.open("w")  # this process's commits, as `results` says
        self.finished = asyncio.Event()
        self.last_commit: float | None = None  # wall time of the latest commit
        self.started = time.time()
        self.jobs_running = 0  # compute jobs handed to the worker and not yet back
        self._worker = ThreadPoolExecutor(max_workers=1,
                                          thread_name_prefix=f"node-{getattr(node, 'id', '?')}-compute")

    def feed(self, event: Event) -> None:
        self.execute(self.node.handle(event, time.time()))

    def ask(self, request: LocalRequest) -> LocalAnswer:
        """Hand the node a request from its own door (its web app) and carry out what it
        returns: what the answer acknowledges is on disk before this returns."""
        actions = self.node.handle(request, time.time())
        self.execute(actions)
        answer = answer_of(actions, request.token)
        if answer is None:  # every service answers its requests: a bug, not a client's doing
            raise RuntimeError(f"node {self.node.id} gave no answer to a {request.service} "
                               f"request")
        return answer

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
        if isinstance(metric, RoundCommitted):
            self._committed(metric)
        else:
            self.metrics.record(metric, time.time())
            if isinstance(metric, Finished):
                self.finished.set()
        if self.on_metric is not None:
            self.on_metric(metric)

    def load(self, token: int, keys: tuple[str, ...]) -> None:
        # a few records a syncing peer asked for: read on the loop, as every write is
        self.feed(Loaded(token, self.disk.load(keys)))

    # ---- the commits, kept for results() without keeping them all in memory -----------------

    def _committed(self, metric: RoundCommitted) -> None:
        self.last_commit = now = time.time()
        self.metrics.recorded += 1  # the order of metrics, as MetricLog counts it
        self.commit_count += 1
        self.last_train_loss = metric.train_loss
        if self.keep_model(metric.round):
            self.metrics.params.setdefault(metric.model_hash, metric.params)
        self._recent.append((metric, now, self.metrics.recorded))
        while self._recent and self._recent[0][0].round < metric.round - SPOOL_AFTER:
            self._spool_row(*self._recent.popleft())
        for old in [r for r in self.bytes_sent if r < metric.round - SPOOL_AFTER]:
            del self.bytes_sent[old]

    def _row(self, metric: RoundCommitted, t: float, order: int) -> dict[str, Any]:
        return commit_row(metric, t, order, self.bytes_sent.get(metric.round, 0), False)

    def _spool_row(self, metric: RoundCommitted, t: float, order: int) -> None:
        self._spool.write(json.dumps(self._row(metric, t, order)) + "\n")

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
        self._spool.close()

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
        """Every commit of this process (the spooled rows, then the recent ones) and the
        rejections, built when asked (`write_results` writes them without holding them)."""
        return {"commits": [json.loads(line) for line in self._commit_lines()],
                "rejections": dict(self.metrics.rejections)}

    def write_results(self, path: Path, extra: dict[str, Any]) -> None:
        """`results()` and `extra` as one JSON object in `path`, replaced at once (readers
        never see half a file); the commit rows are copied from the spool one at a time, so a
        long run's end does not hold them all in memory."""
        tmp = path.with_suffix(".tmp")
        rest = json.dumps({"rejections": dict(self.metrics.rejections), **extra})
        with tmp.open("w") as out:
            out.write('{"commits": [')
            for i, line in enumerate(self._commit_lines()):
                out.write(", " + line if i else line)
            out.write("], " + rest[1:])
        os.replace(tmp, path)

    def _commit_lines(self) -> Iterator[str]:
        if not self._spool.closed:
            self._spool.flush()
        with self._spool_path.open() as spooled:
            yield from (line.rstrip("\n") for line in spooled)
        yield from (json.dumps(self._row(*recent)) for recent in self._recent)

    def kept_models(self) -> dict[str, np.ndarray]:
        return {h.hex(): p for h, p in self.metrics.params.items()}
