"""A simulated machine whose node spends measured CPU time (see sim/costs.py).

The node handles one event at a time, as a real node's event loop does: an event waits for
the node's previous one, takes its input's cost (the transport receiving a frame, the
core's measured handling of an event of its kind, and a wake-up on a shared core), then its outputs' costs (the transport
sending each frame to each peer, the CPU part of one SQLite transaction for the batch's
writes) pass, then the transaction's flush, before its sends leave. Every such CPU task, and
every gradient, books one of the machine's cores (`CpuPool`); the flush keeps the node waiting
for one of the machine's disks, no core busy.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from phalanx.engine.driver import dispatch
from phalanx.engine.events import (
    Action,
    Broadcast,
    Event,
    Job,
    Persist,
    Received,
    Send,
    Stored,
)
from phalanx.net.codec import encode_payload
from phalanx.net.messages import RoundRecord, SyncResponse
from phalanx.sim.costs import CostModel, CpuPool, event_kind, workload_key
from phalanx.sim.world import Host

if TYPE_CHECKING:
    from phalanx.sim.world import SimWorld


def stored_size(value: Stored) -> int:
    """Bytes the real node's SQLite log writes for `value` (it encodes records as here)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return len(value)
    if isinstance(value, RoundRecord):
        return len(encode_payload(SyncResponse(value.round, (value,))))
    return len(value.to_bytes())


class CostedHost(Host):
    def __init__(self, world: SimWorld, node_id: int, costs: CostModel, cpu: CpuPool,
                 disk: CpuPool) -> None:
        super().__init__(world, node_id)
        self.costs, self.cpu, self.disk_queue = costs, cpu, disk
        self.gradient, self.handling = costs.for_workload(workload_key(world.scenario))
        self.inbox: deque[Event] = deque()
        self.busy = False

    def crash(self) -> None:
        super().crash()
        if not self.up:  # what was queued or in hand dies with the process
            self.inbox.clear()
            self.busy = False

    def feed(self, event: Event, now: float | None = None) -> None:
        if self.node is None:
            return
        self.inbox.append(event)
        if not self.busy:
            self._next()

    def _next(self) -> None:
        if not self.inbox or self.node is None:
            self.busy = False
            return
        self.busy = True
        event = self.inbox.popleft()
        cost = self.handling(event_kind(event)) + self.costs.switch_seconds
        if isinstance(event, Received):
            cost += self.costs.transport_recv(len(event.frame))
        w = self.world
        w.call_at(self.cpu.run(w.now, cost), self._handle, event, self.incarnation)

    def _handle(self, event: Event, incarnation: int) -> None:
        if incarnation != self.incarnation or self.node is None:
            return
        w = self.world
        actions = self.node.handle(event, w.now)
        writes = [a for a in actions if type(a) is Persist]
        for write in writes:  # on disk at once, as the real host writes a batch before sends
            self.disk[write.key] = write.value
        cpu, flush = self._output_cost(actions), 0.0
        if writes:
            size = sum(stored_size(x.value) for x in writes)
            cpu += self.costs.persist_cpu(size)
            flush = self.costs.flush(size)  # waits for the disk (shared by every node)
        end = self.disk_queue.run(self.cpu.run(w.now, cpu), flush)
        w.call_at(end, self._send, [a for a in actions if type(a) is not Persist],
                  self.incarnation)

    def _send(self, actions: list[Action], incarnation: int) -> None:
        if incarnation != self.incarnation:
            return
        if actions:
            dispatch(actions, self)
        self._next()

    def _output_cost(self, actions: list[Action]) -> float:
        """The transport's CPU for the frames going out: once per frame and peer."""
        send, peers = self.costs.transport_send, len(self.world.members) - 1
        return sum(send(len(a.frame)) * (peers if isinstance(a, Broadcast) else 1)
                   for a in actions if isinstance(a, Broadcast | Send))

    def execute(self, actions: list[Action]) -> None:
        # events reach this host only through `feed`, whose queue dispatches the results
        dispatch(actions, self)

    def compute(self, job: Job) -> None:
        w = self.world
        start = max(w.now, self.compute_free_at)
        self.compute_free_at = self.cpu.run(
            start, self.gradient * job.cost * self.slowdown / self.speed)
        result: Any = job.run()
        w.call_at(self.compute_free_at, self._computed, job, result, self.incarnation)
