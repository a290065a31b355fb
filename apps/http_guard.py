"""What keeps a node's HTTP endpoint from being held open by slow or hostile clients
(slowloris): uvicorn's h11 protocol with deadlines and caps, which uvicorn itself lacks (it
times out idle keep-alive connections only, never a request that is slow to arrive).

- A connection cap (`max_connections`), decided when a connection is accepted: at the cap, the
  oldest connection still sending its request headers is closed to make room (a client that
  has sent its request in the milliseconds an honest one takes is never the one cut, so
  `/status` answers during a flood); when none is, the newcomer is closed at once. The cap,
  far below the process's file-descriptor limit, is what leaves the p2p listener its headroom.
- A header deadline: a request's headers must arrive within `header_timeout` of the
  connection's start or the previous response (408, or a silent close if nothing came).
- A body deadline: its body within `body_timeout` of its headers (408); the same time bounds a
  client that does not read its responses.
- A body cap: a Content-Length over `max_body_bytes` gets 413 before any of the body is read
  (the app never runs); a chunked body is counted as it streams and cut off the same way.

Every refusal is a fixed short answer that never echoes the request, followed by a half-close
and a brief drain of what the client still sends (so it reads the answer rather than a reset),
and a count in `Guard.counts`; each kind is logged at most once per 10 s, with the repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol
from uvicorn.server import ServerState

from phalanx.net.logthrottle import Throttle

log = logging.getLogger("phalanx.http")
LINGER = 2.0  # seconds a refused client may go on sending (discarded) before the reset
MAX_HEADER_BYTES = 16 * 1024  # request line and headers, held per connection until complete


@dataclass(frozen=True)
class HttpLimits:
    max_connections: int = 256
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_body_bytes: int = 64 * 1024


class Guard:
    """One server's connections: those open, those still sending their request headers
    (oldest first: the ones to cut at the cap), and what was refused, by kind."""

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self.open: set[GuardedH11Protocol] = set()
        self.waiting: dict[GuardedH11Protocol, None] = {}
        self.counts: Counter[str] = Counter()
        self.throttle = Throttle(summarize=self._summary)

    def admit(self, conn: GuardedH11Protocol) -> bool:
        if len(self.open) >= self.limits.max_connections:
            if not self.waiting:
                self.note("refused")
                return False
            oldest = next(iter(self.waiting))
            self.note("evicted")
            oldest.cut()
        self.open.add(conn)
        self.waiting[conn] = None
        return True

    def release(self, conn: GuardedH11Protocol) -> None:
        self.open.discard(conn)
        self.waiting.pop(conn, None)

    def note(self, kind: str) -> None:
        """Count a refusal; log it unless its kind was logged in the last 10 s (checked before
        a log record is made: this runs once per connection of a flood)."""
        self.counts[kind] += 1
        held = self.throttle.admit(kind)
        if held is not None:
            log.warning(self._message(kind) + self.throttle.held_note(held))

    def _summary(self, kind: Hashable, held: int, _: Any) -> None:
        log.warning(self._message(str(kind)) + self.throttle.summary_note(held))

    def _message(self, kind: str) -> str:
        lim = self.limits
        return {
            "refused": f"http: closed a new connection: {lim.max_connections} open is the cap "
                       f"(http_max_connections), none of them still sending its headers",
            "evicted": f"http: closed the oldest connection still sending its request headers, "
                       f"to admit a new one (http_max_connections {lim.max_connections})",
            "header_timeout": f"http: closed a connection whose request headers took over "
                              f"{lim.header_timeout:g} s (http_header_timeout)",
            "body_timeout": f"http: closed a connection whose request body took over "
                            f"{lim.body_timeout:g} s, or that read no response for as long "
                            f"(http_body_timeout)",
            "body_too_large": f"http: refused a request body over {lim.max_body_bytes} bytes "
                              f"with 413 (http_max_body_bytes)",
        }[kind]

    def stats(self) -> dict[str, Any]:
        return {"open": len(self.open), "max_connections": self.limits.max_connections,
                "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                **{k: self.counts[k] for k in ("refused", "evicted", "header_timeout",
                                                "body_timeout", "body_too_large")}}


class _WatchedConnection(h11.Connection):
    """h11's server side, showing each parsed event to the protocol first, which may swallow
    it (NEED_DATA: the parser's "nothing more now") when it has refused the request."""

    def __init__(self, on_event: Any) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self.on_event = on_event

    def next_event(self) -> Any:
        return self.on_event(super().next_event())


class GuardedH11Protocol(H11Protocol):
    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None, *, guard: Guard) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.conn = _WatchedConnection(self._watch)
        self.guard = guard
        self.admitted = self.draining = False
        self.body_bytes = 0
        self.deadline: asyncio.TimerHandle | None = None  # for the headers, then the body
        self.stall: asyncio.TimerHandle | None = None  # for a client that stopped reading

    # ---- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if not self.guard.admit(self):
            transport.abort()  # before anything is read or allocated for it
            return
        self.admitted = True
        super().connection_made(transport)
        self._arm(self.guard.limits.header_timeout, "header_timeout")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.admitted:
            return
        self.guard.release(self)
        for timer in (self.deadline, self.stall):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self.draining:  # a refused client's bytes are dropped unread
            super().data_received(data)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.stall is None:
            self.stall = self.loop.call_later(self.guard.limits.body_timeout, self._expire,
                                              "body_timeout")

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.stall is not None:
            self.stall.cancel()
            self.stall = None

    # ---- uvicorn's hooks --------------------------------------------------------------------

    def on_response_complete(self) -> None:
        # the next request's headers are due (before uvicorn goes on to a pipelined one); a
        # body still arriving after an early answer keeps its own deadline
        if not self.transport.is_closing() and self.conn.their_state is not h11.SEND_BODY:
            self._arm(self.guard.limits.header_timeout, "header_timeout")
            self.guard.waiting[self] = None
        super().on_response_complete()

    # ---- the guard --------------------------------------------------------------------------

    def _watch(self, event: Any) -> Any:
        limits = self.guard.limits
        if isinstance(event, h11.Request):
            self.guard.waiting.pop(self, None)
            self.body_bytes = 0
            if _content_length(event.headers) > limits.max_body_bytes:
                self._refuse(413, f"request body too large (the limit is "
                                  f"{limits.max_body_bytes} bytes)", "body_too_large")
                return h11.NEED_DATA
            self._arm(limits.body_timeout, "body_timeout")
        elif isinstance(event, h11.Data):
            self.body_bytes += len(event.data)
            if self.body_bytes > limits.max_body_bytes:
                self._refuse(413, f"request body too large (the limit is "
                                  f"{limits.max_body_bytes} bytes)", "body_too_large")
                return h11.NEED_DATA
        elif isinstance(event, h11.EndOfMessage) and self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        return event

    def _arm(self, seconds: float, kind: str) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        self.deadline = self.loop.call_later(seconds, self._expire, kind)

    def _expire(self, kind: str) -> None:
        if kind == "header_timeout" and not self.conn.trailing_data[0] \
                and self.conn.their_state is h11.IDLE:
            self.guard.note(kind)  # nothing of a request came: no answer to give
            self.cut()
            return
        what = "headers" if kind == "header_timeout" else "body"
        seconds = self.guard.limits.header_timeout if what == "headers" else \
            self.guard.limits.body_timeout
        self._refuse(408, f"request {what} not received within {seconds:g} s", kind)

    def cut(self) -> None:
        """Close now, without an answer (a reset if the client's bytes are still unread)."""
        self.guard.release(self)
        if not self.transport.is_closing():
            self.transport.abort()

    def _refuse(self, status: int, detail: str, kind: str) -> None:
        """Answer `status` (unless this request's response has begun), stop reading the
        request, and close once the client has read the answer, or after LINGER seconds."""
        self.guard.note(kind)
        self.guard.waiting.pop(self, None)  # still open (it holds a descriptor) until closed
        if self.transport.is_closing() or self.draining:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app, if it runs, gets http.disconnect
            self.cycle.message_event.set()
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):  # no response begun
            self.transport.write(_answer(status, detail))
        self.draining = True
        self.flow.resume_reading()  # keep reading (and dropping) so the client is not reset
        with contextlib.suppress(OSError):
            self.transport.write_eof()
        self.loop.call_later(LINGER, self.transport.abort)


def _content_length(headers: list[tuple[bytes, bytes]]) -> int:
    for name, value in headers:  # h11 has already checked it is one valid number
        if name == b"content-length":
            return int(value)
    return 0


def _answer(status: int, detail: str) -> bytes:
    body = json.dumps({"detail": detail}).encode()
    head = (f"HTTP/1.1 {status} {STATUS_PHRASES[status].decode()}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"connection: close\r\n\r\n")
    return head.encode("ascii") + body


def raise_fd_limit() -> tuple[int, int]:
    """Raise this process's soft limit on open files to its hard limit (what p2p links, the
    store and the HTTP cap share); (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):  # a platform that refuses: keep soft
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0]

