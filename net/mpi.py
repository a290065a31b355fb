"""An MPI transport with the interface of `net.tcp.TcpTransport`: one node per rank.

The asyncio host that drives a node over TCP can drive it over MPI instead (`mpiexec -n 4 ...`,
rank = node id). Nothing here ever blocks inside MPI: blocking MPICH calls spin a core while
they wait, and with more ranks than cores (`-n 4` on 2 cores) spinning ranks starve the ones
doing real work. So sends are `Isend`s, receives are matched with `Improbe` and completed
with `Irecv`, barriers are `Ibarrier`s, and one asyncio task polls them, sleeping between polls
(0.5 ms while traffic flows, backing off to 5 ms when idle).

The transport owns all point-to-point traffic on the communicator it is given (it matches any
tag); a program that also talks on that communicator should hand it `comm.Dup()`.

mpi4py is imported here and only here, so `phalanx.net` imports without MPI installed; importing
this module initializes MPI (mpi4py's default).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from mpi4py import MPI

MAX_FRAME = 64 * 1024 * 1024
MAX_PENDING = 1024  # outstanding sends per peer; beyond it the newest frame is dropped
MAX_PENDING_BYTES = 256 * 1024 * 1024  # outstanding bytes per peer (one larger frame may pass)
TAG_FRAME = 1
TAG_BYE = 2  # "I will send you nothing more": sent by close(), ordered after every frame
POLL_MIN = 0.0005
POLL_MAX = 0.005
MATCH_BATCH = 256  # messages matched per poll before yielding to the loop

# Requests that close() gave up on, with their buffers: MPI may still touch them, so they live
# until the process exits.
_abandoned: list[tuple[MPI.Request, object]] = []


@dataclass
class _Outbox:
    """Sends to one peer that MPI has not completed yet, with the buffers it still reads."""

    requests: list[MPI.Request] = field(default_factory=list)
    frames: list[bytes] = field(default_factory=list)
    nbytes: int = 0

    def add(self, request: MPI.Request, frame: bytes) -> None:
        self.requests.append(request)
        self.frames.append(frame)
        self.nbytes += len(frame)

    def reap(self) -> int:
        """Forget the completed sends; return how many completed."""
        if not self.requests:
            return 0
        done = MPI.Request.Testsome(self.requests) or []
        for i in sorted(done, reverse=True):
            del self.requests[i]
            self.nbytes -= len(self.frames.pop(i))
        return len(done)


@dataclass
class _Inbound:
    request: MPI.Request
    buf: bytearray
    tag: int


class MpiTransport:
    """Sends frames to peers by rank and hands every received frame to `on_frame`."""

    def __init__(self, comm: MPI.Comm, on_frame: Callable[[bytes], None],
                 max_frame: int = MAX_FRAME, max_pending: int = MAX_PENDING,
                 max_pending_bytes: int = MAX_PENDING_BYTES) -> None:
        self.comm = comm
        self.on_frame = on_frame
        self.max_frame = max_frame
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.bytes_sent = 0
        self.bytes_received = 0  # every data frame off the wire, refused ones included
        self.frames_received = 0  # frames handed to on_frame
        self.dropped_full = 0  # frames refused because a peer had too many sends outstanding
        self.dropped_closed = 0  # frames offered after close() began
        self.refused_large = 0  # received frames over max_frame, discarded
        self.closed_cleanly = False  # set by close(): every peer said bye and the barrier passed
        self._rank = comm.Get_rank()
        self._peers = [r for r in range(comm.Get_size()) if r != self._rank]
        self._outbox = {peer: _Outbox() for peer in self._peers}
        self._inbox: dict[int, deque[_Inbound]] = {peer: deque() for peer in self._peers}
        self._byes: set[int] = set()
        self._status = MPI.Status()
        self._poller: asyncio.Task[None] | None = None
        self._start_barrier: MPI.Request | None = None
        self._closing = False

    @property
    def node_id(self) -> int:
        return self._rank

    @property
    def peers(self) -> list[int]:
        return list(self._peers)

    def pending(self, peer: int) -> tuple[int, int]:
        """(frames, bytes) sent to `peer` that MPI has not completed yet."""
        box = self._outbox[peer]
        return len(box.requests), box.nbytes

    async def start(self) -> None:
        self._poller = asyncio.create_task(self._poll())

    async def wait_for_peers(self, timeout: float) -> None:
        """Return once every rank has called this: a start barrier that keeps the loop running
        (frames that arrive meanwhile are delivered). Raises TimeoutError; calling it again
        resumes the same barrier. Collectives match in call order, so either every rank calls
        this or none does, or one rank's start barrier would pair with another's final one."""
        if self._start_barrier is None:
            self._start_barrier = self.comm.Ibarrier()
        if not await self._until(self._start_barrier.Test, timeout):
            raise TimeoutError(f"rank {self._rank}: not every rank reached the start barrier "
                               f"within {timeout} s")

    def send(self, peer: int, frame: bytes) -> None:
        """Start sending `frame` to `peer` and return at once; a frame that would exceed the
        peer's bound on outstanding sends is dropped and counted instead."""
        if self._closing:
            self.dropped_closed += 1
            return
        box = self._outbox.get(peer)
        if box is None:
            raise ValueError(f"rank {self._rank} has no peer {peer}; peers are {self._peers}")
        if self._full(box, len(frame)):
            box.reap()  # only when full: most calls then cost no MPI call at all
            if self._full(box, len(frame)):
                self.dropped_full += 1
                return
        box.add(self.comm.Isend([frame, MPI.BYTE], peer, TAG_FRAME), frame)
        self.bytes_sent += len(frame)

    def _full(self, box: _Outbox, size: int) -> bool:
        return len(box.requests) >= self.max_pending or (
            box.nbytes > 0 and box.nbytes + size > self.max_pending_bytes)

    async def close(self, timeout: float = 10.0) -> None:
        """Finish this rank's part of the conversation without blocking the loop: tell every
        peer we are done, keep receiving until every peer has said the same and our own sends
        have completed, then pass a final barrier so no rank leaves while others still talk to
        it. Within `timeout`; past it, unfinished requests are left to MPI_Finalize (which does
        not wait for them) and `closed_cleanly` stays False."""
        if self._closing:
            return
        self._closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for peer, box in self._outbox.items():
            box.add(self.comm.Isend([b"", MPI.BYTE], peer, TAG_BYE), b"")
        if self._poller is None:  # never started: the drain still needs someone to poll
            await self.start()
        drained = await self._until(self._drained, timeout)
        barrier = self.comm.Ibarrier()
        passed = await self._until(barrier.Test, max(deadline - loop.time(), 0.0))
        await self._stop_poller()
        if not (drained and passed):
            _abandoned.append((barrier, None))
            self._abandon()
        self.closed_cleanly = drained and passed

    def _drained(self) -> bool:
        return (len(self._byes) == len(self._peers)
                and not any(self._inbox.values())
                and not any(box.requests for box in self._outbox.values()))

    def _abandon(self) -> None:
        """Park every unfinished request with its buffer. Sends are not cancelled: MPI 4.1
        deprecates it, and MPICH 5.0 crashes cancelling a large (rendezvous) send; MPICH's
        MPI_Finalize leaves unfinished requests behind with a warning instead."""
        for box in self._outbox.values():
            _abandoned.extend(zip(box.requests, box.frames, strict=True))
            box.requests, box.frames, box.nbytes = [], [], 0
        for queue in self._inbox.values():
            _abandoned.extend((item.request, item.buf) for item in queue)
            queue.clear()

    async def _stop_poller(self) -> None:
        if self._poller is None:
            return
        self._poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._poller
        self._poller = None

    async def _until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Poll `done` with the same back-off as the receiver; False if `timeout` passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = POLL_MIN
        while not done():
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, POLL_MAX)
        return True

    async def _poll(self) -> None:
        delay = POLL_MIN
        while True:
            busy = self._pump()
            delay = POLL_MIN if busy else min(delay * 2, POLL_MAX)
            await asyncio.sleep(delay)

    def _pump(self) -> bool:
        """One poll: match new messages, deliver finished receives, reap finished sends.
        True while traffic is flowing (so the next poll comes soon)."""
        matched = self._match()
        delivered = self._deliver()
        reaped = sum(box.reap() for box in self._outbox.values())
        receiving = any(self._inbox.values())
        return bool(matched or delivered or reaped or receiving)

    def _match(self) -> int:
        count = 0
        while count < MATCH_BATCH:
            message = self.comm.Improbe(MPI.ANY_SOURCE, MPI.ANY_TAG, self._status)
            if message is None:
                break
            # MPI cannot refuse or truncate a matched message cleanly: even an oversized one is
            # received in full, then dropped in _deliver.
            buf = bytearray(self._status.Get_count(MPI.BYTE))
            inbound = _Inbound(message.Irecv([buf, MPI.BYTE]), buf, self._status.Get_tag())
            self._inbox[self._status.Get_source()].append(inbound)
            count += 1
        return count

    def _deliver(self) -> int:
        """Hand over completed receives, per sender in the order MPI matched them (which is
        the order that sender sent them)."""
        count = 0
        for source, queue in self._inbox.items():
            while queue and queue[0].request.Test():
                inbound = queue.popleft()
                count += 1
                if inbound.tag == TAG_BYE:
                    self._byes.add(source)
                    continue
                self.bytes_received += len(inbound.buf)
                if len(inbound.buf) > self.max_frame:
                    self.refused_large += 1
                    continue
                self.frames_received += 1
                self._hand_over(bytes(inbound.buf))
        return count

    def _hand_over(self, frame: bytes) -> None:
        # A failing handler must not stop the receiver for every later frame: report it the
        # way asyncio reports a failing callback and go on.
        try:
            self.on_frame(frame)
        except Exception as exc:
            asyncio.get_running_loop().call_exception_handler(
                {"message": f"MpiTransport rank {self._rank}: on_frame raised", "exception": exc})
