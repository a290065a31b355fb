"""Shared harness for the TCP transport tests (`test_net_tcp.py`, `test_tcp_measure.py`): keys,
quick timings, a bounded asyncio runner, started transports with an inbox (`Node`, `cluster`),
and `Raw`, one connection driven by hand from the test: the protocol, or anything but."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from typing import Any

from phalanx.net.crypto import Identity
from phalanx.net.handshake import AcceptorHandshake, DialerHandshake, Session
from phalanx.net.linkcrypto import RecordCodec, record_codecs
from phalanx.net.tcp import TcpTransport, pack_frame, read_frame

HOST = "127.0.0.1"
IDS = {i: Identity.derive(11, i) for i in range(5)}
KEYRING = {i: ident.public_key for i, ident in IDS.items()}
# Quick timings so every test ends in well under a second or two of waiting.
FAST: dict[str, Any] = {"heartbeat": 0.05, "suspect_after": 0.4, "handshake_timeout": 1.0,
                        "backoff_base": 0.02, "backoff_cap": 0.2}


def run(test: Callable[[], Coroutine[Any, Any, None]], limit: float = 15.0) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(limit):
            await test()
    asyncio.run(bounded())


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


class Node:
    """A started transport with an inbox and a log of the peer states it reported."""

    def __init__(self, node_id: int, bootstrap: dict[int, tuple[str, int]], port: int = 0,
                 defaults: dict[str, Any] | None = None, **options: Any) -> None:
        self.inbox: list[bytes] = []
        self.states: list[tuple[int, bool]] = []
        self.t = TcpTransport(node_id, {**bootstrap, node_id: (HOST, port)}, self.inbox.append,
                              identity=IDS[node_id], keyring=KEYRING,
                              rng=random.Random(node_id),
                              on_peer_state=lambda p, up: self.states.append((p, up)),
                              **{**(FAST if defaults is None else defaults), **options})


@asynccontextmanager
async def cluster(defaults: dict[str, Any] | None = None
                  ) -> AsyncIterator[Callable[..., Awaitable[Node]]]:
    """Yields `start(node_id, bootstrap, **options)`; every node started is closed at the end."""
    async with AsyncExitStack() as stack:
        async def start(node_id: int, bootstrap: dict[int, tuple[str, int]] | None = None,
                        **options: Any) -> Node:
            node = Node(node_id, bootstrap or {}, defaults=defaults, **options)
            await node.t.start()
            stack.push_async_callback(node.t.close)
            return node
        yield start


class Raw:
    """One connection driven by hand from the test: the protocol, or anything but."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.sent: list[bytes] = []
        self.sealer: RecordCodec | None = None
        self.opener: RecordCodec | None = None

    @classmethod
    async def connect(cls, address: tuple[str, int]) -> Raw:
        return cls(*await asyncio.open_connection(*address))

    def send(self, record: bytes) -> None:
        self.sent.append(record)
        self.writer.write(pack_frame(record))

    async def recv(self) -> bytes:
        return await read_frame(self.reader)

    def _keys(self, session: Session) -> Session:
        self.sealer, self.opener = record_codecs(session.send_key, session.recv_key)
        return session

    async def dial(self, node: int = 1, expect: int = 0, encrypt: bool = False) -> Session:
        hs = DialerHandshake(IDS[node], node, KEYRING, expect=expect, encrypt=encrypt)
        self.send(hs.hello)
        signature, session = hs.on_reply(await self.recv(), await self.recv())
        self.send(signature)
        return self._keys(session)

    async def accept(self, node: int = 1) -> Session:
        hs = AcceptorHandshake(IDS[node], node, KEYRING, encrypt=False)
        for record in hs.on_hello(await self.recv()):
            self.send(record)
        return self._keys(hs.on_auth(await self.recv()))

    def send_record(self, kind: int, body: bytes) -> None:
        assert self.sealer is not None, "handshake first"
        self.send(self.sealer.seal(bytes((kind,)) + body))

    async def next_record(self, kind: int, size: int | None = None) -> bytes:
        """The body (kind byte dropped) of the next record of `kind` (and body size)."""
        assert self.opener is not None, "handshake first"
        while True:
            body = self.opener.open(await self.recv())
            if body[0] == kind and (size is None or len(body) - 1 == size):
                return body[1:]

    async def kinds_before(self, kind: int, body: bytes) -> list[int]:
        """Read records up to the first of `kind` whose body (kind byte dropped) is `body`;
        the kinds of those read before it, in order. One link keeps its records in order, so
        a marker the node sent after some event bounds what that event could have sent."""
        assert self.opener is not None, "handshake first"
        kinds: list[int] = []
        while (record := self.opener.open(await self.recv())) != bytes((kind,)) + body:
            kinds.append(record[0])
        return kinds

    async def closed_by_peer(self, timeout: float = 3.0) -> bool:
        async with asyncio.timeout(timeout):
            with suppress(ConnectionResetError):  # our bytes unread: a reset, not a FIN
                while await self.reader.read(65536):
                    pass
        return True

    def close(self) -> None:
        self.writer.close()
