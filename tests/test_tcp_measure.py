"""Link measurement by the TCP transport (`TcpTransport.link_conditions`), over real sockets on
127.0.0.1: probes and their PONGs, the receiver-side rate through a throttling relay, which link
a PONG takes, and hostile probe records. Ports come from the OS."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, suppress

import pytest
from tcpkit import FAST as FAST_DEFAULTS
from tcpkit import HOST, IDS, KEYRING, Node, Raw, eventually, run
from tcpkit import cluster as kit_cluster

from phalanx.net.tcp import DATA, PEERS, PING, PONG, PONG_BODY, STAMP, TcpTransport

# measure often; suspect late (a throttled relay holds records for a while)
FAST = {**FAST_DEFAULTS, "suspect_after": 2.0, "handshake_timeout": 3.0,
        "measure_interval": 0.05}


def cluster() -> AbstractAsyncContextManager[Callable[..., Awaitable[Node]]]:
    return kit_cluster(FAST)


class Relay:
    """A TCP relay to `target` that holds each chunk `delay` seconds, then paces each
    direction at `rate` bits/s (4 KiB pieces on an absolute schedule, so sleep overshoot does
    not add up while a backlog drains). `target` may be set after the relay starts: connections wait for it."""

    PIECE = 4096

    def __init__(self, rate: float, delay: float) -> None:
        self.rate, self.delay = rate, delay
        self.ready = asyncio.Event()
        self._target: tuple[str, int] | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[:2]

    @property
    def target(self) -> tuple[str, int] | None:
        return self._target

    @target.setter
    def target(self, address: tuple[str, int]) -> None:
        self._target = address
        self.ready.set()

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._handle, HOST, 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        await self.ready.wait()
        assert self._target is not None
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._writers.append(up_writer)
        pipes = [asyncio.create_task(self._pipe(reader, up_writer)),
                 asyncio.create_task(self._pipe(up_reader, writer))]
        self._tasks.update(pipes)
        with suppress(asyncio.CancelledError):
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        for task in pipes:
            task.cancel()
        writer.close()
        up_writer.close()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def pull() -> None:
            with suppress(OSError):
                while chunk := await src.read(65536):
                    line.put_nowait((loop.time(), chunk))
            line.put_nowait((loop.time(), b""))

        puller = asyncio.create_task(pull())
        try:
            due = 0.0
            while True:
                idle = line.empty()
                stamp, chunk = await line.get()
                if not chunk:
                    return
                await asyncio.sleep(max(0.0, stamp + self.delay - loop.time()))
                if idle:  # the schedule restarts after a pause, and only then
                    due = max(due, loop.time())
                for i in range(0, len(chunk), self.PIECE):
                    piece = chunk[i:i + self.PIECE]
                    dst.write(piece)
                    due += len(piece) * 8 / self.rate
                    await asyncio.sleep(max(0.0, due - loop.time()))
        except OSError:
            return
        finally:
            puller.cancel()


def finite_positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def measured_rate(conditions: tuple[float, float] | None) -> bool:
    return conditions is not None and finite_positive(conditions[0])


async def pongs(node: Node, peer: int, count: int, timeout: float = 5.0) -> None:
    """Wait until `node` has taken `count` more RTT samples from `peer`'s PONGs. Each answered
    probe moves the smoothed RTT (a fresh float sample, gain 1/8), so a new value is a new
    PONG; an unchanged one is at worst a PONG not counted, and the wait goes on."""
    seen = node.t.link_measurements()[peer].rtt
    left = count

    def more() -> bool:
        nonlocal seen, left
        rtt = node.t.link_measurements()[peer].rtt
        if rtt is not None and rtt != seen:
            seen, left = rtt, left - 1
        return left <= 0
    await eventually(more, timeout)


# -- measurement over real links ------------------------------------------------------------


@pytest.mark.parametrize("encrypt", [False, True], ids=["plain", "encrypted"])
def test_loopback_mesh_measures_finite_bandwidth_and_small_latency(encrypt: bool) -> None:
    async def test() -> None:
        async with cluster() as start:
            seed = await start(0, encrypt=encrypt)
            nodes = [seed] + [await start(i, {0: seed.t.address}, encrypt=encrypt)
                              for i in (1, 2)]
            await asyncio.gather(*(n.t.wait_for_peers(5.0, range(3)) for n in nodes))
            frame = bytes(1024 * 1024)
            deadline = time.monotonic() + 10.0
            # Loopback is fast: keep frames flowing until every receiver has pooled enough
            # arrival time for a rate and reported it back (until then a node knows its round
            # trips only, and its bandwidth reads inf).
            while not all(measured_rate(n.t.link_conditions()) for n in nodes):
                assert time.monotonic() < deadline, "no measurement in time"
                for i, node in enumerate(nodes):
                    for j in range(3):
                        if j != i and node.t.queued(j)[0] < 8:
                            node.t.send(j, frame)
                await asyncio.sleep(0.02)
            for node in nodes:
                conditions = node.t.link_conditions()
                assert conditions is not None
                bandwidth, latency = conditions
                assert finite_positive(bandwidth) and bandwidth > 1e6  # loopback: Mbit/s+
                assert math.isfinite(latency) and 0 <= latency < 0.25  # loopback; wide: CI runs it beside the busiest tests
                measured = node.t.link_measurements()
                assert set(measured) == {j for j in range(3) if node.t.id != j}
                for m in measured.values():
                    assert m.rtt is not None and 0 <= m.rtt < 0.5
                assert not node.t.refusals
    run(test)


def test_throttled_relay_rate_and_delay_are_what_the_sender_measures() -> None:
    rate, delay = 4e6, 0.05  # bits/s and one-way seconds, each way on each relay

    async def test() -> None:
        # Both connections of the pair go through a relay: 0 dials 1 through `there` (which
        # carries 0's frames), 1 dials 0 through `back`.
        async with Relay(rate, delay) as there, Relay(rate, delay) as back, \
                cluster() as start:
            sender = await start(0, {1: there.address}, measure_interval=0.1)
            receiver = await start(1, {0: back.address}, measure_interval=0.1)
            there.target, back.target = receiver.t.address, sender.t.address
            await asyncio.gather(sender.t.wait_for_peers(5.0), receiver.t.wait_for_peers(5.0))
            # nothing sent yet: no rate (at most a round trip, the bandwidth not a limit)
            assert (sender.t.link_conditions() or (math.inf, 0))[0] == math.inf
            frames = [bytes([k]) * 200_000 for k in range(5)]  # 0.4 s each at 4 Mbit/s
            for frame in frames:
                sender.t.send(1, frame)
            await eventually(lambda: receiver.inbox == frames, timeout=8.0)
            # the PONGs after the last frame carry the receiver's estimate of all five
            downlink = receiver.t.link_measurements()[0].downlink
            assert downlink is not None
            await eventually(lambda: sender.t.link_measurements()[1].uplink == downlink)
            conditions = sender.t.link_conditions()
            assert conditions is not None
            bandwidth, latency = conditions
            assert 0.65 * rate <= bandwidth <= 1.35 * rate, bandwidth
            # probe and PONG each cross one relay: RTT about 2 * delay
            assert 0.8 * delay <= latency <= delay + 0.05, latency
            # the receiver sent no frames, so it has a latency but no bandwidth to report
            assert receiver.t.link_conditions()[0] == math.inf  # type: ignore[index]
            assert receiver.t.link_measurements()[0].rtt is not None
            assert not sender.t.refusals and not receiver.t.refusals
    run(test)


def test_latency_first_and_bandwidth_unlimited_until_a_rate_is_reported() -> None:
    async def test() -> None:
        async with cluster() as start:
            alone = await start(3)
            assert alone.t.link_conditions() is None
            a = await start(0)
            b = await start(1, {0: a.t.address})
            await asyncio.gather(a.t.wait_for_peers(5.0, [1]), b.t.wait_for_peers(5.0, [0]))
            # probes go out and come back, but no frames flow, so there is no rate yet:
            # latency alone, the bandwidth not a limit
            await eventually(lambda: all(n.t.link_measurements()[p].rtt is not None
                                         for n, p in ((a, 1), (b, 0))))
            # several more probes answered each way (each PONG carries the peer's rate, 0 here)
            await asyncio.gather(pongs(a, 1, 3), pongs(b, 0, 3))
            for node, peer in ((a, 1), (b, 0)):
                conditions = node.t.link_conditions()
                assert conditions is not None and conditions[0] == math.inf
                assert 0 <= conditions[1] < 0.05
                m = node.t.link_measurements()[peer]
                assert m.uplink is None and m.downlink is None
            # small frames are never timed: still no rate
            for _ in range(50):
                a.t.send(1, b"small")
            await eventually(lambda: len(b.inbox) == 50)
            assert b.t.link_measurements()[0].downlink is None  # all 50 read, none timed
            await pongs(a, 1, 2)  # so every PONG b sends reports no rate; a hears some more
            assert a.t.link_conditions()[0] == math.inf  # type: ignore[index]
            assert alone.t.link_conditions() is None and alone.t.link_measurements() == {}
    run(test)


# -- the probe protocol, driven by hand -----------------------------------------------------


def test_probe_answered_by_a_pong_gives_rtt_and_the_reported_rate() -> None:
    async def test() -> None:
        async with cluster() as start:
            node = await start(0, measure_interval=1.0)  # the probe stays outstanding
            raw = await Raw.connect(node.t.address)
            await raw.dial()
            stamp = await raw.next_record(PING, STAMP.size)  # the node probes us
            assert node.t.link_conditions() is None
            # an unsolicited PONG: its rate counts, its made-up timestamp gives no RTT
            raw.send_record(PONG, PONG_BODY.pack(STAMP.pack(-1.0), 5e6))
            await eventually(lambda: node.t.link_measurements()[1].uplink == 5e6)
            assert node.t.link_measurements()[1].rtt is None
            assert node.t.link_conditions() is None
            raw.send_record(PONG, PONG_BODY.pack(stamp, 8e6))
            await eventually(lambda: node.t.link_conditions() is not None)
            conditions = node.t.link_conditions()
            assert conditions is not None and conditions[0] == 8e6
            assert 0 <= conditions[1] < 1.0
            # a rate of 0 means "no measurement yet": it keeps the last report
            raw.send_record(PONG, PONG_BODY.pack(stamp, 0.0))
            raw.send_record(PING, b"")  # a liveness ping: no PONG, no refusal
            # The answer to a later probe is the first PONG back: the node has read both
            # records above (one link, in order), and the liveness ping got no answer.
            raw.send_record(PING, STAMP.pack(2.5))
            echoed, _ = PONG_BODY.unpack(await raw.next_record(PONG))
            assert echoed == STAMP.pack(2.5)
            assert node.t.link_measurements()[1].uplink == 8e6
            assert not node.t.refusals
            raw.close()
    run(test)


def test_pong_echoes_the_probe_and_reports_the_measured_rate_of_our_frames() -> None:
    async def test() -> None:
        async with cluster() as start:
            node = await start(0)
            raw = await Raw.connect(node.t.address)
            await raw.dial()
            probe = STAMP.pack(123.25)
            raw.send_record(PING, probe)
            echoed, reported = PONG_BODY.unpack(await raw.next_record(PONG))
            assert echoed == probe and reported == 0.0  # no frames from us yet
            frame = bytes(1024 * 1024)
            deadline = time.monotonic() + 10.0
            while reported == 0.0:
                assert time.monotonic() < deadline, "no rate reported in time"
                for _ in range(4):
                    raw.send_record(DATA, frame)
                raw.send_record(PING, probe)
                await raw.writer.drain()
                echoed, reported = PONG_BODY.unpack(await raw.next_record(PONG))
            assert echoed == probe and finite_positive(reported)
            assert reported == node.t.link_measurements()[1].downlink
            assert not node.t.refusals
            raw.close()
    run(test)


def test_pong_goes_on_the_link_the_prober_dialed_not_behind_its_own_frames() -> None:
    async def test() -> None:
        accepted: asyncio.Queue[Raw] = asyncio.Queue()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            raw = Raw(reader, writer)
            await raw.accept()
            accepted.put_nowait(raw)

        server = await asyncio.start_server(handle, HOST, 0)
        try:
            async with cluster() as start:
                node = await start(0, {1: server.sockets[0].getsockname()[:2]})
                theirs = await asyncio.wait_for(accepted.get(), 5.0)  # the node dialed us
                ours = await Raw.connect(node.t.address)  # we dial the node
                await ours.dial()
                # the node holds both links: its outbound one, and ours (it greets each new
                # link with its peer list)
                await asyncio.wait_for(ours.next_record(PEERS), 3.0)
                await eventually(lambda: node.t.connected_peers() == {1})
                probe = STAMP.pack(7.5)
                theirs.send_record(PING, probe)  # on the link that carries the node's frames
                echoed, _ = PONG_BODY.unpack(await asyncio.wait_for(
                    ours.next_record(PONG), 3.0))
                assert echoed == probe
                # and not on the probe's own link: a frame the node sends there after
                # answering arrives behind anything the answer could have put on it
                node.t.send(1, b"marker")
                before = await asyncio.wait_for(theirs.kinds_before(DATA, b"marker"), 3.0)
                assert PONG not in before, before
                assert not node.t.refusals
                theirs.close()
                ours.close()
        finally:
            server.close()
    run(test)


# -- hostile probe records ------------------------------------------------------------------


@pytest.mark.parametrize("record", [
    bytes((PING,)) + bytes(3),
    bytes((PING,)) + bytes(9),
    bytes((PONG,)),
    bytes((PONG,)) + bytes(8),
    bytes((PONG,)) + bytes(17),
    bytes((PONG,)) + PONG_BODY.pack(bytes(8), math.nan),
    bytes((PONG,)) + PONG_BODY.pack(bytes(8), math.inf),
    bytes((PONG,)) + PONG_BODY.pack(bytes(8), -1.0),
], ids=["ping-3", "ping-9", "pong-empty", "pong-8", "pong-17", "pong-nan", "pong-inf",
        "pong-negative"])
def test_malformed_probe_records_are_refused_and_the_node_stays_up(record: bytes) -> None:
    async def test() -> None:
        async with cluster() as start:
            node = await start(0)
            raw = await Raw.connect(node.t.address)
            await raw.dial()
            raw.send_record(DATA, b"before")
            assert raw.sealer is not None
            raw.send(raw.sealer.seal(record))
            raw.send_record(DATA, b"after")
            assert await raw.closed_by_peer()
            assert node.t.refusals == {"malformed_record": 1}
            assert node.inbox == [b"before"]
            assert node.t.link_conditions() is None
            m = node.t.link_measurements()[1]
            assert m.uplink is None and m.rtt is None
            raw.close()
            # still serving: the same peer reconnects and is heard, and probes answered
            again = await Raw.connect(node.t.address)
            await again.dial()
            again.send_record(DATA, b"again")
            again.send_record(PING, STAMP.pack(1.0))
            echoed, _ = PONG_BODY.unpack(await asyncio.wait_for(again.next_record(PONG), 3.0))
            assert echoed == STAMP.pack(1.0)
            await eventually(lambda: node.inbox == [b"before", b"again"])
            assert node.t.refusals == {"malformed_record": 1}
            again.close()
    run(test)


def test_measure_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="measure_interval"):
        TcpTransport(0, {0: (HOST, 0)}, lambda _: None, identity=IDS[0], keyring=KEYRING,
                     measure_interval=0.0)
