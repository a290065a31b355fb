"""A lean HTTP/1.1 keep-alive connection for the load generator (apps/web/load.py).

httpx spends about a millisecond of CPU per request on the client side; with 200 clients in
one process that is the bottleneck, and the benchmark would measure the client. This speaks
just what the web app's JSON API needs (Content-Length bodies, keep-alive, one request at a
time) over asyncio streams. Not a general client: the product's is `WebClient`.
"""

from __future__ import annotations

import asyncio
import json
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

__all__ = ["WireConnection", "WireError"]

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 4 * 1024 * 1024


class WireError(ConnectionError):
    """The server closed the connection or answered something that is not HTTP/1.1 with a
    Content-Length body."""


class WireConnection:
    def __init__(self, base_url: str, headers: dict[str, str], timeout: float = 60.0) -> None:
        """`base_url`: http://host:port (the benchmark's loopback server); `headers`: sent
        with every request (the bearer token)."""
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError("WireConnection needs an http://host:port URL")
        self.host, self.port = parts.hostname, parts.port
        self.timeout = timeout
        self._fixed = "".join(f"{k}: {v}\r\n" for k, v in
                              {"Host": f"{self.host}:{self.port}", **headers}.items())
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def __aenter__(self) -> WireConnection:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None

    async def request(self, method: str, target: str, body: Any = None
                      ) -> tuple[int, Any]:
        """(status, decoded JSON body or None when empty)."""
        data = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {target} HTTP/1.1\r\n{self._fixed}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        try:
            async with asyncio.timeout(self.timeout):
                if self._streams is None:
                    self._streams = await asyncio.open_connection(self.host, self.port)
                reader, writer = self._streams
                writer.write(head.encode() + b"\r\n" + data)
                status, length, close = _parse_head(await reader.readuntil(b"\r\n\r\n"))
                payload = await reader.readexactly(length)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError) as e:
            self.close()
            raise WireError(f"connection lost ({type(e).__name__})") from None
        if close:
            self.close()
        return status, json.loads(payload) if payload else None


def _parse_head(head: bytes) -> tuple[int, int, bool]:
    """(status, content length, whether the server closes the connection)."""
    if len(head) > MAX_HEAD_BYTES:
        raise WireError("response head too large")
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if version != "HTTP/1.1" or not rest[:3].isdigit():
        raise WireError("not an HTTP/1.1 response")
    length, close = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            if not value.strip().isdigit():
                raise WireError("bad Content-Length")
            length = int(value)
        elif name == "transfer-encoding":
            raise WireError("chunked responses are not supported")
        elif name == "connection" and value.strip().lower() == "close":
            close = True
    if not 0 <= length <= MAX_BODY_BYTES:
        raise WireError("response body too large")
    return int(rest[:3]), length, close
