"""What every phalanx HTTP app shares: 422 answers that name the bad field but never echo the
input, and uvicorn configured behind `http_guard` (deadlines, caps) inside an event loop it
does not own. The node's status app and the curation web app are both served this way."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp

from phalanx.apps.http_guard import MAX_HEADER_BYTES, Guard, GuardedH11Protocol
from phalanx.net.logthrottle import throttle_accept_errors, throttle_logger

__all__ = ["EmbeddedServer", "guarded_server", "invalid_handler", "invalid_reason"]


def invalid_reason(errors: Sequence[Any]) -> str:
    """What is wrong with a request, by field: never the value, nor a field name the client
    made up (an unexpected key is input too)."""
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ())]
    if first.get("type") == "extra_forbidden":
        loc, msg = loc[:-1], "has a field it does not take"
    else:
        msg = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    where = ".".join(loc)[:100]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {msg[:200]}{more}" if where else f"{msg[:200]}{more}"


async def invalid_handler(_: Request, exc: Exception) -> JSONResponse:
    """FastAPI's handler for RequestValidationError, without the input its default echoes."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": invalid_reason(exc.errors())}, status_code=422)


class EmbeddedServer(uvicorn.Server):
    """uvicorn inside a loop it does not own: the node handles SIGTERM itself (flushing its
    log and checkpoint), so the server must not take over the signal handlers; the loop's
    reports of failed accepts (out of file descriptors) become one throttled line."""

    def __init__(self, config: uvicorn.Config, guard: Guard) -> None:
        super().__init__(config)
        self.guard = guard

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[Any] | None = None) -> None:
        throttle_accept_errors(asyncio.get_running_loop())
        await super().startup(sockets)


def guarded_server(app: ASGIApp, host: str, port: int, guard: Guard, *,
                   certfile: Path | None = None, keyfile: Path | None = None,
                   backlog: int = 128) -> EmbeddedServer:
    """`app` served by uvicorn behind `guard`, over TLS when a certificate is given.
    `backlog`: the listen queue, and the most connections one turn of the loop accepts
    (each then admitted, or closed at once, by the guard)."""
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="off", access_log=False,
        ws="none", http=functools.partial(GuardedH11Protocol, guard=guard),  # type: ignore[arg-type]
        h11_max_incomplete_event_size=MAX_HEADER_BYTES, backlog=backlog,
        ssl_certfile=str(certfile) if certfile else None,
        ssl_keyfile=str(keyfile) if keyfile else None,
        timeout_graceful_shutdown=5)
    throttle_logger(logging.getLogger("uvicorn.error"))  # e.g. one line per malformed request
    return EmbeddedServer(config, guard)

