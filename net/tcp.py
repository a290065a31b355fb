"""The production asyncio TCP transport: authenticated (optionally encrypted) links between the
nodes of a keyring, with discovery, heartbeats, reconnection, backpressure and rate limits.

Links. A node listens on its own address and dials every peer it knows an address for; the
dialed link carries our frames to that peer, the accepted one carries the peer's frames to us,
so each pair of nodes holds two connections and each has one writer of data. Every connection
starts with the mutual handshake of `handshake.py`; until it completes, nothing read from the
socket reaches `on_frame`. After it, each record is `u32 length | body`, the body sealed by
`linkcrypto` when the link is encrypted, and its first byte names the record: DATA (a frame for
`on_frame`), PING (liveness; with an 8-byte timestamp, a probe), PONG (the answer to a probe) or
PEERS (the sender's address book, as hints).

Failure handling. Anything a peer can do wrong closes its connection and adds one reason to
`refusals`, except sending faster than its rate limit, which only drops (and counts) records.
A dialer that loses its link redials with capped, jittered exponential backoff; frames still in
its queue are sent on the next link (a frame already handed to a socket that then broke may be
lost, as with any TCP sender without acknowledgements). Both ends ping a link that has been
idle for `heartbeat`. A peer with neither link left (its process died: both closed at once) is
marked down at once; silence beyond `suspect_after` marks a peer down but leaves its links
alone: a peer busy in a long compute step is slow, not gone. The one exception is an outbound
link that stays silent while the same peer is heard on its other link: that socket is dead
(say, half-open after the peer's host restarted), so it is closed and redialed.

Measurement (`link_conditions`, for the adaptive compression controller). Every
`measure_interval` a node probes each peer with a PING whose body is an 8-byte timestamp (`>d`,
our monotonic loop clock; the peer just echoes the bytes) and the peer answers with a PONG,
`echoed timestamp (8 bytes) | rate (>d, bits/s; 0: none yet)`; a PONG is never answered. RTT
is now - timestamp, taken only for a probe we sent and that is younger than PROBES_KEPT
intervals (a peer cannot feed us made-up samples, and a PONG stuck behind a stall is no link
figure), smoothed per peer like TCP's SRTT (RFC 6298, gain 1/8); latency is the median over
peers of RTT / 2. Neither leg waits behind bulk data: the probe goes only on the link the peer
dialed, and the PONG only on the link the prober dialed, the two directions that carry nothing
but control records (no such link: no probe, no answer; the pair cannot exchange frames both
ways then anyway). Bandwidth is measured where it is honest, at the receiver: a record of at
least MIN_SAMPLE bytes is timed from the first chunk of its body we read to its last, and the
bytes after that first chunk over that time make a DATA sample (what sat in a buffer before the
clock started does not count). Samples are pooled until SAMPLE_SECONDS of arrival time add up,
so a fast link whose records land in a fraction of a millisecond still gives a finite figure,
never inf or NaN; the pooled rates are smoothed per peer (gain 1/4). The receiver puts its
estimate of the sender's rate into each PONG to that sender; the sender's uplink bandwidth is
the median over peers of those reports, so a lying minority moves it little. Caveats: a rate is
what one link achieved while frames flowed, so over an uplink shared by concurrent sends it is
that link's share, not the sum; a receiver whose event loop stalls mid-record under-reports
(one that then drains a backlog from the kernel's buffer over-reports); a link that needs
several round trips to open its congestion window reports less for small records than for
large ones; latency assumes symmetric paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import random
import statistics
import struct
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

from .crypto import Identity
from .handshake import (
    MAX_HANDSHAKE_RECORD,
    AcceptorHandshake,
    DialerHandshake,
    HandshakeError,
    Session,
)
from .linkcrypto import DecryptError, RecordCodec, record_codecs
from .logthrottle import throttle_accept_errors
from .ratelimit import Backoff, InboundLimiter, RateLimit

log = logging.getLogger(__name__)

HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024
QUEUE_FRAMES = 4096  # per peer: a peer that never drains cannot grow our memory without bound
QUEUE_BYTES = 256 * 1024 * 1024
MAX_PENDING_HANDSHAKES = 64  # unauthenticated connections held at once; the oldest yields
MAX_PEER_LIST = 4096
# Generous enough that an honest node never hits it, tight enough to bound a flood.
DEFAULT_RATE_LIMIT = RateLimit(frames_per_s=5000, bytes_per_s=512 * 1024 * 1024, burst_s=2.0)

DATA, PING, PEERS, PONG = 0, 1, 2, 3  # first byte of every record body after the handshake
STAMP = struct.Struct(">d")  # a probe's body: the prober's clock, opaque to the peer
PONG_BODY = struct.Struct(">8sd")  # the echoed probe body, the rate we measured of its DATA
MIN_SAMPLE = 4 * 1024  # DATA records at least this large are timed as they arrive
SAMPLE_SECONDS = 0.002  # arrival time pooled into one rate sample: far above timer noise
RTT_GAIN, RATE_GAIN = 1 / 8, 1 / 4  # EWMA gains of the smoothed RTT and of the rate
PROBES_KEPT = 4  # per peer, probes awaiting a PONG; also their lifetime, in measure intervals

Address = tuple[str, int]


class FrameTooLarge(ValueError):
    pass


class MalformedRecord(ValueError):
    pass


async def read_frame(reader: asyncio.StreamReader, max_frame: int = MAX_FRAME) -> bytes:
    (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    if size > max_frame:
        raise FrameTooLarge(f"frame of {size} bytes exceeds the {max_frame}-byte limit")
    return await reader.readexactly(size)


def pack_frame(frame: bytes) -> bytes:
    return HEADER.pack(len(frame)) + frame


def encode_peers(addresses: Mapping[int, Address]) -> bytes:
    return msgpack.packb([[peer, host, port] for peer, (host, port) in addresses.items()])


def _valid_entry(entry: object) -> bool:
    if type(entry) is not list or len(entry) != 3:
        return False
    peer, host, port = entry
    return (type(peer) is int and -(2**63) <= peer < 2**63 and type(host) is str
            and 0 < len(host) <= 255 and type(port) is int and 0 < port < 65536)


def decode_peers(body: bytes) -> dict[int, Address]:
    """Parse a PEERS body; MalformedRecord unless it is a list of [id, host, port]."""
    try:
        entries = msgpack.unpackb(body, raw=False, max_array_len=MAX_PEER_LIST,
                                  max_str_len=255, max_bin_len=0, max_map_len=0, max_ext_len=0)
    except Exception as e:  # msgpack raises a zoo of types on hostile input
        raise MalformedRecord(f"peer list is not msgpack: {type(e).__name__}") from None
    if type(entries) is not list or not all(_valid_entry(e) for e in entries):
        raise MalformedRecord("peer list must hold [id, host, port] entries")
    return {peer: (host, port) for peer, host, port in entries}


def reachable(announced: Address, peername: Any) -> Address:
    """A peer listening on a wildcard host is reached at the address its connection came from."""
    host, port = announced
    try:
        wildcard = ipaddress.ip_address(host).is_unspecified
    except ValueError:  # a host name, not an IP literal
        wildcard = False
    if wildcard and isinstance(peername, tuple) and peername:
        return str(peername[0]), port
    return announced


def handshake_reason(exc: BaseException) -> str:
    """The refusal reason for an exception raised while a connection was authenticating."""
    if isinstance(exc, HandshakeError):
        return exc.reason
    if isinstance(exc, FrameTooLarge):
        return "oversized_frame"
    if isinstance(exc, TimeoutError):  # before OSError: TimeoutError is one
        return "handshake_timeout"
    return "unauthenticated"  # closed or reset before proving who it is


class FrameQueue:
    """Outbound FIFO bounded in frames and bytes; when full, the newest frame is refused."""

    def __init__(self, max_frames: int, max_bytes: int) -> None:
        self.max_frames, self.max_bytes = max_frames, max_bytes
        self.bytes = 0
        self._items: deque[bytes] = deque()
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, frame: bytes) -> bool:
        if len(self._items) >= self.max_frames or self.bytes + len(frame) > self.max_bytes:
            return False
        self._items.append(frame)
        self.bytes += len(frame)
        self._ready.set()
        return True

    async def wait(self) -> None:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()

    def pop(self) -> bytes:
        frame = self._items.popleft()
        self.bytes -= len(frame)
        return frame

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0


@dataclass(eq=False)
class Link:
    """One authenticated connection."""

    peer: int
    outbound: bool
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    sealer: RecordCodec
    opener: RecordCodec
    last_sent: float
    last_heard: float


@dataclass(frozen=True, slots=True)
class LinkMeasurement:
    """What this node measured of its links with one peer; None where nothing is measured."""

    rtt: float | None  # smoothed round-trip time, s
    uplink: float | None  # our frames to the peer, bits/s, as the peer measured them
    downlink: float | None  # the peer's frames to us, bits/s, as we measured them


@dataclass(eq=False)
class PeerState:
    queue: FrameQueue
    backoff: Backoff
    wake: asyncio.Event  # set to cut a redial wait short
    limiter: InboundLimiter | None = None  # made on the first record (send() may run first)
    outbound: Link | None = None
    inbound: Link | None = None
    dialer: asyncio.Task[None] | None = None
    last_heard: float = -math.inf
    up: bool = False
    # measurement (see the module docstring); bounded: nothing here grows with traffic
    probes: deque[bytes] = field(default_factory=lambda: deque(maxlen=PROBES_KEPT))
    last_probe: float = -math.inf
    srtt: float | None = None  # smoothed round-trip time, s
    uplink: float | None = None  # our DATA's rate to the peer, as it last reported, bits/s
    downlink: float | None = None  # the peer's DATA's rate to us, as we measure it, bits/s
    rx_bits: float = 0.0  # timed arrivals not yet folded into `downlink`
    rx_seconds: float = 0.0

    def links(self) -> list[Link]:
        return [link for link in (self.outbound, self.inbound) if link is not None]


class TcpTransport:
    """Sends frames to peers by id and hands every frame from an authenticated peer to
    `on_frame`. `addresses` holds our listen address (port 0: any free port) and the bootstrap
    peers; `keyring` (node id -> Ed25519 public key) is who may connect at all."""

    def __init__(self, node_id: int, addresses: Mapping[int, Address],
                 on_frame: Callable[[bytes], None], *, identity: Identity,
                 keyring: Mapping[int, bytes], encrypt: bool = False,
                 max_frame: int = MAX_FRAME, queue_frames: int = QUEUE_FRAMES,
                 queue_bytes: int = QUEUE_BYTES,
                 rate_limit: RateLimit | None = DEFAULT_RATE_LIMIT,
                 heartbeat: float = 1.0, suspect_after: float = 10.0,
                 handshake_timeout: float = 10.0, backoff_base: float = 0.05,
                 backoff_cap: float = 5.0, rng: random.Random | None = None,
                 banned: Iterable[int] = (),
                 on_peer_state: Callable[[int, bool], None] | None = None,
                 max_pending_handshakes: int = MAX_PENDING_HANDSHAKES,
                 measure_interval: float = 2.0) -> None:
        if node_id not in addresses:
            raise ValueError(f"addresses must include node {node_id}'s own listen address")
        if keyring.get(node_id) != identity.public_key:
            raise ValueError(f"keyring entry for node {node_id} is not this identity's key")
        if not 0 < max_frame <= queue_bytes:
            raise ValueError("need 0 < max_frame <= queue_bytes, or a large frame never fits")
        if not min(queue_frames, heartbeat, suspect_after, handshake_timeout,
                   measure_interval) > 0:
            raise ValueError("queue_frames, heartbeat, suspect_after, handshake_timeout and "
                             "measure_interval must be > 0")
        self.id = node_id
        self.identity = identity
        self.keyring = dict(keyring)
        self.on_frame = on_frame
        self.on_peer_state = on_peer_state
        self.encrypt = encrypt
        self.max_frame = max_frame
        self.queue_frames, self.queue_bytes = queue_frames, queue_bytes
        self.rate_limit = rate_limit
        self.heartbeat, self.suspect_after = heartbeat, suspect_after
        self.measure_interval = measure_interval
        self.handshake_timeout = handshake_timeout
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.rng = rng if rng is not None else random.Random()
        Backoff(backoff_base, backoff_cap, self.rng)  # raises now on a bad pair, not in a task
        self.max_pending_handshakes = max_pending_handshakes
        self._bootstrap = frozenset(addresses) - {node_id}
        self._addresses: dict[int, Address] = dict(addresses)
        self._verified: set[int] = set()  # peers whose current address passed a handshake
        self._banned: set[int] = set(banned)
        self._peers: dict[int, PeerState] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._pending: dict[asyncio.Task[Any], None] = {}  # handshakes in progress, oldest first
        self._closing = False
        self._changed = asyncio.Event()
        # metrics
        self.refusals: Counter[str] = Counter()
        self.bytes_sent = self.bytes_received = 0
        self.frames_sent = self.frames_received = 0
        self.dropped_full = 0  # frames refused by send() because the peer's queue was full
        self.dropped_banned = 0  # frames sent to a banned peer, discarded
        self.dial_failures = 0  # dials that did not end in an authenticated link
        self.connects = 0  # outbound links established, first connections and reconnections
        self.dead_links = 0  # outbound links closed for silence while the peer was heard
        self.handler_errors = 0  # exceptions raised by on_frame / on_peer_state

    # -- public API -------------------------------------------------------------------------

    @property
    def address(self) -> Address:
        return self._addresses[self.id]

    @property
    def refused_large(self) -> int:
        return self.refusals["oversized_frame"]

    @property
    def rate_limited(self) -> int:
        return self.refusals["rate_limited"]

    async def start(self) -> None:
        host, port = self._addresses[self.id]
        # out of file descriptors, asyncio pauses the listener 1 s per failed accept() and
        # reports each: one throttled line, not a traceback per attempt
        throttle_accept_errors(asyncio.get_running_loop())
        self._server = await asyncio.start_server(self._accept, host, port)
        bound = self._server.sockets[0].getsockname()
        self._addresses[self.id] = (host, bound[1])
        for peer in list(self._addresses):
            if peer != self.id and peer in self.keyring:
                self._ensure_dialer(peer)
        self._spawn(self._contained(self._watch))

    async def wait_for_peers(self, timeout: float, peers: Iterable[int] | None = None) -> None:
        """Return once we hold an authenticated outbound link to each of `peers` (default: the
        bootstrap peers): a start barrier, so no node begins while a peer is still loading.
        Raises TimeoutError after `timeout` seconds."""
        targets = set(self._bootstrap if peers is None else peers) - {self.id}
        async with asyncio.timeout(timeout):
            while not targets <= self.connected_peers():
                await self._changed.wait()

    def send(self, peer: int, frame: bytes) -> None:
        """Queue `frame` for `peer` (KeyError if not in the keyring). A full queue drops it."""
        if len(frame) > self.max_frame:
            raise FrameTooLarge(f"frame of {len(frame)} bytes exceeds the "
                                f"{self.max_frame}-byte limit")
        if peer in self._banned:
            self.dropped_banned += 1
            return
        if not self._peer(peer).queue.put(frame):
            self.dropped_full += 1

    def add_peer(self, peer: int, public_key: bytes, address: Address) -> bool:
        """Admit an identity the operator listed while we run (a new node that may join):
        it may connect from now on, and we dial it. False if it was known already; ValueError
        if the id is ours or already holds another key (keys are not replaced at run time)."""
        if peer == self.id:
            raise ValueError(f"node {peer} is this node")
        known = self.keyring.get(peer)
        if known is not None:
            if known != public_key:
                raise ValueError(f"node {peer} already has another public key")
            return False
        self.keyring[peer] = public_key
        self._addresses.setdefault(peer, address)
        self._ensure_dialer(peer)
        self._notify()
        return True

    def ban(self, peer: int) -> None:
        """Close `peer`'s links, drop its queue and refuse its handshakes from now on."""
        self._banned.add(peer)
        state = self._peers.get(peer)
        if state is None:
            return
        if state.dialer is not None:
            state.dialer.cancel()
        for link in state.links():
            link.writer.close()
        state.queue.clear()
        self._set_up(peer, state, False)

    def banned_peers(self) -> frozenset[int]:
        return frozenset(self._banned)

    def connected_peers(self) -> set[int]:
        """Peers we hold an authenticated outbound link to, i.e. can send to right now."""
        return {peer for peer, state in self._peers.items() if state.outbound is not None}

    def known_peers(self) -> dict[int, Address]:
        """Every peer we hold an address for (bootstrap or learned hint), not ourselves."""
        return {p: a for p, a in self._addresses.items() if p != self.id}

    def peer_states(self) -> dict[int, bool]:
        """Peer id -> up (heard from within `suspect_after`), for every peer we track."""
        return {peer: state.up for peer, state in self._peers.items()}

    def heard_ago(self) -> dict[int, float]:
        """Peer id -> seconds since any record (a frame, a ping, a pong) came from it, for
        every peer heard from at all: what shows a peer alive while it has nothing to say."""
        now = self._now()
        return {peer: now - state.last_heard for peer, state in self._peers.items()
                if state.last_heard > -math.inf}

    def link_conditions(self) -> tuple[float, float] | None:
        """(uplink bandwidth in bits/s, one-way latency in s) as measured on this node's links;
        None until a round trip was measured, and bandwidth ``math.inf`` until a peer reported
        a rate (on a link too fast to time a record, none ever does: then only latency limits).

        Bandwidth is the median over peers of the rate each peer measured of our frames to it
        (the rate of one link while frames flow, not the sum over concurrent sends); latency
        is the median over peers of half the smoothed round-trip time. See the module
        docstring for the method and its caveats."""
        live = [state for peer, state in self._peers.items() if peer not in self._banned]
        rates = [state.uplink for state in live if state.uplink is not None]
        rtts = [state.srtt for state in live if state.srtt is not None]
        if not rtts:
            return None
        return (statistics.median(rates) if rates else math.inf), statistics.median(rtts) / 2

    def link_measurements(self) -> dict[int, LinkMeasurement]:
        """Peer id -> what we measured of our links with it, for every peer we track."""
        return {peer: LinkMeasurement(state.srtt, state.uplink, state.downlink)
                for peer, state in self._peers.items()}

    def queued(self, peer: int) -> tuple[int, int]:
        """(frames, bytes) waiting in `peer`'s outbound queue."""
        state = self._peers.get(peer)
        return (len(state.queue), state.queue.bytes) if state else (0, 0)

    def write_buffer(self, peer: int) -> int:
        """Bytes handed to `peer`'s outbound connection that the OS has not taken yet."""
        state = self._peers.get(peer)
        link = state.outbound if state else None
        return link.writer.transport.get_write_buffer_size() if link else 0

    async def close(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        for state in self._peers.values():
            for link in state.links():
                link.writer.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # -- peers and tasks --------------------------------------------------------------------

    def _peer(self, peer: int) -> PeerState:
        state = self._peers.get(peer)
        if state is None:
            if peer == self.id or peer not in self.keyring:
                raise KeyError(f"node {peer} is not a peer in the keyring")
            state = PeerState(FrameQueue(self.queue_frames, self.queue_bytes),
                              Backoff(self.backoff_base, self.backoff_cap, self.rng),
                              asyncio.Event())
            self._peers[peer] = state
        return state

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._track(task)
        return task

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _ensure_dialer(self, peer: int) -> None:
        if self._closing or self._server is None or peer in self._banned:
            return
        state = self._peer(peer)
        if state.dialer is None or state.dialer.done():
            state.dialer = self._spawn(self._contained(lambda: self._dial_loop(peer)))

    async def _contained(self, body: Callable[[], Coroutine[Any, Any, None]],
                         writer: asyncio.StreamWriter | None = None) -> None:
        """Run a task's body so that a bug in it is logged and counted, never raised into the
        event loop; the connection it served, if any, is closed however it ends (cancelled
        mid-handshake included, or the peer would never learn that we are gone). The body's
        coroutine is made here, so a task cancelled before it ever ran leaves none behind
        unawaited."""
        try:
            await body()
        except Exception:
            log.exception("tcp transport: unexpected error")
            self.refusals["internal_error"] += 1
        finally:
            if writer is not None:
                writer.close()

    def _set_up(self, peer: int, state: PeerState, up: bool) -> None:
        if state.up == up:
            return
        state.up = up
        if self.on_peer_state is not None:
            try:
                self.on_peer_state(peer, up)
            except Exception:
                self.handler_errors += 1
                log.exception("tcp transport: on_peer_state raised")

    def _heard(self, peer: int, state: PeerState, now: float) -> None:
        state.last_heard = now
        self._set_up(peer, state, True)

    # -- wire -------------------------------------------------------------------------------

    async def _read(self, reader: asyncio.StreamReader, limit: int) -> bytes:
        record = await read_frame(reader, limit)
        self.bytes_received += HEADER.size + len(record)
        return record

    async def _read_timed(self, reader: asyncio.StreamReader,
                          limit: int) -> tuple[bytes, tuple[int, float] | None]:
        """A record and, for a large one, (bytes, seconds): the part of it that arrived after
        the first chunk of its body was read, and how long that took. Bytes already buffered
        when the clock starts are left out, so a backlog does not pass for a fast link."""
        (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
        if size > limit:
            raise FrameTooLarge(f"frame of {size} bytes exceeds the {limit}-byte limit")
        timed = None
        if size < MIN_SAMPLE:
            record = await reader.readexactly(size)
        else:
            record = await reader.read(size)  # what is buffered, or the first chunk to come
            if not record:
                raise asyncio.IncompleteReadError(record, size)
            if len(record) < size:
                start, rest = self._now(), size - len(record)
                record += await reader.readexactly(rest)
                timed = (rest, self._now() - start)
        self.bytes_received += HEADER.size + size
        return record, timed

    def _write(self, writer: asyncio.StreamWriter, record: bytes) -> None:
        writer.write(pack_frame(record))
        self.bytes_sent += HEADER.size + len(record)

    def _send_record(self, link: Link, kind: int, body: bytes) -> None:
        # Sealing and writing happen together, so records leave in counter-nonce order.
        self._write(link.writer, link.sealer.seal(bytes((kind,)) + body))
        link.last_sent = self._now()

    def _refuse(self, reason: str, writer: asyncio.StreamWriter) -> None:
        self.refusals[reason] += 1
        log.debug("tcp transport %s: refused %s", self.id, reason)
        writer.close()

    # -- handshakes -------------------------------------------------------------------------

    async def _authenticate(self, run: Coroutine[Any, Any, Session],
                            writer: asyncio.StreamWriter) -> Session | None:
        """A handshake under the timeout; any failure is counted and closes the connection."""
        try:
            async with asyncio.timeout(self.handshake_timeout):
                return await run
        except (HandshakeError, FrameTooLarge, TimeoutError, EOFError, OSError) as exc:
            self._refuse(handshake_reason(exc), writer)
            return None

    async def _dialer_handshake(self, peer: int, reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> Session:
        hs = DialerHandshake(self.identity, self.id, self.keyring, expect=peer,
                             encrypt=self.encrypt, banned=self._banned)
        self._write(writer, hs.hello)
        hello = await self._read(reader, MAX_HANDSHAKE_RECORD)
        signature = await self._read(reader, MAX_HANDSHAKE_RECORD)
        our_signature, session = hs.on_reply(hello, signature)
        self._write(writer, our_signature)
        return session

    async def _acceptor_handshake(self, reader: asyncio.StreamReader,
                                  writer: asyncio.StreamWriter) -> Session:
        hs = AcceptorHandshake(self.identity, self.id, self.keyring, encrypt=self.encrypt,
                               banned=self._banned)
        hello, signature = hs.on_hello(await self._read(reader, MAX_HANDSHAKE_RECORD))
        self._write(writer, hello)
        self._write(writer, signature)
        return hs.on_auth(await self._read(reader, MAX_HANDSHAKE_RECORD))

    # -- connections ------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing:
            writer.close()
            return
        # Served in a task of our own, which close() can cancel: asyncio reports a cancelled
        # connection-callback task as an unhandled error, so that one must end normally.
        await asyncio.wait([self._spawn(self._contained(
            lambda: self._serve_inbound(reader, writer), writer))])

    async def _serve_inbound(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._make_room()
        self._pending[task] = None
        try:
            session = await self._authenticate(self._acceptor_handshake(reader, writer), writer)
        finally:
            self._pending.pop(task, None)
        if session is not None:
            await self._run_link(session, reader, writer, outbound=False)

    def _make_room(self) -> None:
        """Cancel the oldest handshakes beyond the limit. An honest handshake takes a round
        trip, so connections held open by a slow or silent client are the ones that go, and
        such clients cannot lock honest peers out the way refusing newcomers would."""
        while len(self._pending) >= self.max_pending_handshakes:
            oldest = next(iter(self._pending))
            del self._pending[oldest]
            oldest.cancel()  # its task closes the connection on the way out
            self.refusals["too_many_pending"] += 1

    async def _dial_loop(self, peer: int) -> None:
        state = self._peers[peer]
        while True:
            state.wake.clear()  # a peer that dials us while we are dialing it cuts the wait
            if await self._dial(peer):
                state.backoff.reset()
            else:
                self.dial_failures += 1
                self._verified.discard(peer)  # let the peer's own announcement replace it
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(state.backoff.next_delay()):
                    await state.wake.wait()

    async def _dial(self, peer: int) -> bool:
        """One connection attempt; True if it was authenticated (the link has ended since)."""
        host, port = address = self._addresses[peer]
        try:
            async with asyncio.timeout(self.handshake_timeout):
                reader, writer = await asyncio.open_connection(host, port)
        except OSError:  # refused, unreachable or timed out: nobody to refuse
            return False
        try:
            session = await self._authenticate(self._dialer_handshake(peer, reader, writer),
                                               writer)
            if session is None:
                return False
            if self._addresses.get(peer) == address:
                self._verified.add(peer)
            await self._run_link(session, reader, writer, outbound=True)
            return True
        finally:
            writer.close()

    async def _run_link(self, session: Session, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter, outbound: bool) -> None:
        """Serve an authenticated connection until either side ends it."""
        peer = session.peer
        if self._closing or peer in self._banned:  # banned while it was authenticating
            writer.close()
            return
        sealer, opener = record_codecs(session.send_key, session.recv_key)
        now = self._now()
        link = Link(peer, outbound, reader, writer, sealer, opener, now, now)
        state = self._peer(peer)
        self._attach(state, link)
        tasks = [self._spawn(self._contained(lambda: self._read_loop(link, state)))]
        if outbound:
            tasks.append(self._spawn(self._contained(lambda: self._pump(link, state.queue))))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._detach(state, link)

    def _attach(self, state: PeerState, link: Link) -> None:
        old = state.outbound if link.outbound else state.inbound
        if old is not None:  # a newer connection from a restarted peer replaces the stale one
            old.writer.close()
        if link.outbound:
            state.outbound = link
            self.connects += 1
        else:
            state.inbound = link
            state.wake.set()  # the peer is evidently up: redial it now, not after a backoff
        self._heard(link.peer, state, self._now())
        self._send_record(link, PEERS, encode_peers(self._addresses))
        self._notify()

    def _detach(self, state: PeerState, link: Link) -> None:
        if state.outbound is link:
            state.outbound = None
        if state.inbound is link:
            state.inbound = None
        link.writer.close()
        if state.outbound is None and state.inbound is None:
            # no connection either way: a peer whose process died closed both at once (a
            # hint for the failure detector; a redial that succeeds marks it up again)
            self._set_up(link.peer, state, False)
        self._notify()

    async def _pump(self, link: Link, queue: FrameQueue) -> None:
        """Move queued frames onto the link, at most one write ahead of the OS (drain)."""
        with contextlib.suppress(OSError):
            while True:
                await queue.wait()
                if link.writer.is_closing():
                    return  # leave the frame queued for the next link
                self._send_record(link, DATA, queue.pop())
                self.frames_sent += 1
                await link.writer.drain()

    async def _read_loop(self, link: Link, state: PeerState) -> None:
        limit = self.max_frame + 1 + link.opener.overhead
        try:
            while True:
                record, timed = await self._read_timed(link.reader, limit)
                self._on_record(link, state, link.opener.open(record), timed)
        except FrameTooLarge:
            self._refuse("oversized_frame", link.writer)
        except DecryptError:
            self._refuse("decrypt_failed", link.writer)
        except MalformedRecord:
            self._refuse("malformed_record", link.writer)
        except (EOFError, OSError):
            pass  # closed by the peer or by us

    def _on_record(self, link: Link, state: PeerState, body: bytes,
                   timed: tuple[int, float] | None = None) -> None:
        if not body:
            raise MalformedRecord("empty record")
        now = link.last_heard = self._now()
        self._heard(link.peer, state, now)
        if not self._within_rate(state, len(body), now):
            self.refusals["rate_limited"] += 1
            return
        kind = body[0]
        if kind == DATA:
            self.frames_received += 1
            if timed is not None:
                self._rate_sample(state, *timed)
            self._deliver(body[1:])
        elif kind == PEERS:
            self._learn(link, decode_peers(body[1:]))
        elif kind == PING:
            self._on_ping(link, state, body[1:])
        elif kind == PONG:
            self._on_pong(state, body[1:], now)
        else:
            raise MalformedRecord(f"unknown record kind {kind}")

    def _within_rate(self, state: PeerState, size: int, now: float) -> bool:
        if self.rate_limit is None:
            return True
        if state.limiter is None:
            state.limiter = InboundLimiter(self.rate_limit, now)
        return state.limiter.allow(size, now)

    def _deliver(self, frame: bytes) -> None:
        try:
            self.on_frame(frame)
        except Exception:  # the application's bug must not cost the peer its link
            self.handler_errors += 1
            log.exception("tcp transport: on_frame raised")

    # -- measurement ------------------------------------------------------------------------

    def _probe(self, state: PeerState, now: float) -> None:
        """Send a timestamped PING every `measure_interval` on the link the peer dialed: from
        us it carries only control records, so the probe waits behind none of our frames (on
        our outbound link it could sit behind megabytes of them, in our buffers or the
        network's, and time those instead). A peer that cannot dial us cannot get our frames'
        rate to us either, nor can we receive from it: nothing to measure there."""
        if now - state.last_probe < self.measure_interval:
            return
        link = state.inbound
        if link is None or not self._has_room(link):
            return  # no link yet, or a busy buffer: try again on the next tick
        stamp = STAMP.pack(now)
        state.probes.append(stamp)
        state.last_probe = now
        self._send_record(link, PING, stamp)

    def _on_ping(self, link: Link, state: PeerState, body: bytes) -> None:
        if not body:
            return  # a liveness ping
        if len(body) != STAMP.size:
            raise MalformedRecord(f"ping body of {len(body)} bytes, not 0 or {STAMP.size}")
        # Answer on the link the peer dialed: from us it carries only control records (not
        # the probe's link, which carries our frames), and it is the one whose DATA the rate
        # is about. None: the peer cannot send to us, so has nothing to learn from a PONG.
        # A peer that floods probes and never reads gets no more than the buffer holds now.
        reply = state.inbound
        if reply is not None and self._has_room(reply):
            self._send_record(reply, PONG, PONG_BODY.pack(body, state.downlink or 0.0))

    def _on_pong(self, state: PeerState, body: bytes, now: float) -> None:
        if len(body) != PONG_BODY.size:
            raise MalformedRecord(f"pong body of {len(body)} bytes, not {PONG_BODY.size}")
        stamp, rate = PONG_BODY.unpack(body)
        if not (math.isfinite(rate) and rate >= 0):
            raise MalformedRecord(f"pong rate {rate} is not a finite number >= 0")
        if rate > 0:
            state.uplink = rate
        if stamp in state.probes:  # else answered, pushed out, or never ours: no RTT sample
            state.probes.remove(stamp)
            rtt = now - STAMP.unpack(stamp)[0]
            # A probe unanswered for PROBES_KEPT intervals is given up: the wait of a PONG
            # held up that long says more about a stall than about the link.
            if 0 <= rtt <= PROBES_KEPT * self.measure_interval:
                state.srtt = rtt if state.srtt is None else state.srtt + RTT_GAIN * (
                    rtt - state.srtt)

    @staticmethod
    def _rate_sample(state: PeerState, size: int, seconds: float) -> None:
        state.rx_bits += 8.0 * size
        state.rx_seconds += seconds
        if state.rx_seconds < SAMPLE_SECONDS:
            return
        sample = state.rx_bits / state.rx_seconds
        state.rx_bits = state.rx_seconds = 0.0
        state.downlink = sample if state.downlink is None else state.downlink + RATE_GAIN * (
            sample - state.downlink)

    # -- discovery --------------------------------------------------------------------------

    def _learn(self, link: Link, hints: Mapping[int, Address]) -> None:
        """Merge a peer's address book. A peer's word about itself may replace an address that
        has not worked yet; its word about others only fills gaps. All of it is a hint: a wrong
        address just fails its handshake."""
        new_peers = False
        for peer, announced in hints.items():
            if peer == self.id or peer not in self.keyring or peer in self._banned:
                continue
            current = self._addresses.get(peer)
            if peer == link.peer:
                address = reachable(announced, link.writer.get_extra_info("peername"))
                replace = current != address and peer not in self._verified
            else:
                address, replace = announced, current is None
            if replace:
                new_peers |= current is None
                self._addresses[peer] = address
                self._ensure_dialer(peer)
        # Pass news of new peers on, so a mesh grown from one bootstrap node closes up. Only
        # new ids count: there are at most as many as keyring members, so a peer that keeps
        # changing its own address cannot make us broadcast without end.
        if new_peers:
            body = encode_peers(self._addresses)
            for state in self._peers.values():
                for other in state.links():
                    if not other.writer.is_closing():
                        self._send_record(other, PEERS, body)

    # -- liveness ---------------------------------------------------------------------------

    async def _watch(self) -> None:
        interval = min(self.heartbeat, self.suspect_after, self.measure_interval) / 2
        last = self._now()
        while True:
            await asyncio.sleep(interval)
            now = self._now()
            # A tick this late means our own loop was blocked; peers' records may be sitting
            # unread in socket buffers, so judging their silence now would be unfair.
            stalled = now - last > interval + self.suspect_after / 2
            last = now
            for peer, state in list(self._peers.items()):  # callbacks may add peers
                self._ping_idle(state, now)
                self._probe(state, now)
                if stalled:
                    continue
                if state.up and now - state.last_heard > self.suspect_after:
                    self._set_up(peer, state, False)
                self._close_if_dead(state, now)

    def _close_if_dead(self, state: PeerState, now: float) -> None:
        # Only the outbound link is judged: the acceptor end writes nothing but small control
        # records, so its pings are never stuck behind a large frame, and silence there while
        # the peer talks on its other link can only mean a dead socket.
        link = state.outbound
        if (link is not None and now - link.last_heard > self.suspect_after
                and now - state.last_heard <= self.suspect_after):
            self.dead_links += 1
            link.writer.close()

    def _ping_idle(self, state: PeerState, now: float) -> None:
        for link in state.links():
            if now - link.last_sent >= self.heartbeat and self._has_room(link):
                self._send_record(link, PING, b"")

    @staticmethod
    def _has_room(link: Link) -> bool:
        # A non-empty write buffer means the link is busy, not idle; adding control records
        # (pings, pongs) to it would grow memory behind a peer that stopped reading.
        return (not link.writer.is_closing()
                and link.writer.transport.get_write_buffer_size() == 0)
