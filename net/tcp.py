"""A minimal asyncio TCP transport: length-prefixed frames between a fixed set of peers.

Each node listens on its own port for inbound frames and dials every peer for outbound ones
(one connection per direction keeps the two roles simple). Frames are opaque bytes here; their
signatures are checked by the node that receives them, so this layer only enforces framing and
the size limit. Outbound frames wait in a bounded per-peer queue until the peer is reachable.
Discovery, authenticated handshakes and reconnection policy belong to the production transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Callable

HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024
QUEUE_FRAMES = 4096  # per peer: a peer that never drains cannot grow our memory without bound


class FrameTooLarge(ValueError):
    pass


async def read_frame(reader: asyncio.StreamReader, max_frame: int = MAX_FRAME) -> bytes:
    (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    if size > max_frame:
        raise FrameTooLarge(f"frame of {size} bytes exceeds the {max_frame}-byte limit")
    return await reader.readexactly(size)


def pack_frame(frame: bytes) -> bytes:
    return HEADER.pack(len(frame)) + frame


class TcpTransport:
    """Sends frames to peers by id and hands every received frame to `on_frame`."""

    def __init__(self, node_id: int, addresses: dict[int, tuple[str, int]],
                 on_frame: Callable[[bytes], None], max_frame: int = MAX_FRAME,
                 dial_retry: float = 0.05) -> None:
        self.id = node_id
        self.addresses = addresses
        self.on_frame = on_frame
        self.max_frame = max_frame
        self.dial_retry = dial_retry
        self.queues: dict[int, asyncio.Queue[bytes]] = {}
        self.dropped_full = 0  # frames refused because a peer's queue was full
        self.refused_large = 0  # inbound connections closed for an oversized frame
        self.bytes_sent = 0
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._reached: set[int] = set()
        self._all_reached = asyncio.Event()

    async def start(self) -> None:
        host, port = self.addresses[self.id]
        self._server = await asyncio.start_server(self._serve, host, port)
        for peer in self.addresses:
            if peer != self.id:
                self.queues[peer] = asyncio.Queue(QUEUE_FRAMES)
                self._tasks.append(asyncio.create_task(self._sender(peer)))

    async def wait_for_peers(self, timeout: float) -> None:
        """Return once every peer has accepted a connection (all are listening): a start barrier
        so no node begins its first round while a peer is still loading."""
        if len(self.addresses) == 1:
            return
        await asyncio.wait_for(self._all_reached.wait(), timeout)

    def send(self, peer: int, frame: bytes) -> None:
        try:
            self.queues[peer].put_nowait(frame)
        except asyncio.QueueFull:
            self.dropped_full += 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                self.on_frame(await read_frame(reader, self.max_frame))
        except FrameTooLarge:
            self.refused_large += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _sender(self, peer: int) -> None:
        host, port = self.addresses[peer]
        queue = self.queues[peer]
        while True:
            try:
                _, writer = await asyncio.open_connection(host, port)
            except OSError:
                await asyncio.sleep(self.dial_retry)  # peer not listening yet: keep dialing
                continue
            self._reached.add(peer)
            if len(self._reached) == len(self.addresses) - 1:
                self._all_reached.set()
            try:
                while True:
                    frame = await queue.get()
                    writer.write(pack_frame(frame))
                    self.bytes_sent += len(frame) + HEADER.size
                    await writer.drain()
            except ConnectionError:
                await asyncio.sleep(self.dial_retry)
            finally:
                writer.close()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
