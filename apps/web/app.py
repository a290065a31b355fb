"""The curation web app of a node: REST API (accounts, tasks, submissions, stats, admin),
OpenAPI docs at /docs, and the pages when apps/web/pages.py is there.

    app = create_app(port, accounts_path=data / "web.sqlite", settings=WebSettings())

`port` is the node's (apps/web/port.py): the app reads its desk on the event loop that
serves it. Every bad request gets a 4xx whose `detail` says what was wrong and never repeats
what was sent; bodies are capped before they are read (the pages' and API's at
`settings.max_body_bytes`, a task import at `max_import_bytes`); each client address and
each account has a request rate (429 with Retry-After past it).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from phalanx.apps.http_serving import invalid_handler

from . import routes_admin, routes_auth, routes_curation
from .accounts import Accounts
from .context import WebContext
from .limits import LoginThrottle, RateLimiter
from .port import CurationPort
from .settings import WebSettings

__all__ = ["create_app"]

IMPORT_PATH = "/api/admin/tasks"


async def _answer(send: Send, status: int, detail: str,
                  headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


class Gate:
    """In front of the app: the address's rate limit, then the body cap (by Content-Length
    before anything is read, and by counting a body that streams without one), then
    headers that keep API answers out of caches and sniffers."""

    def __init__(self, app: ASGIApp, context: WebContext) -> None:
        self.app = app
        self.context = context

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        wait = self.context.limiter.check_address(client[0] if client else "unknown")
        if wait:
            await _answer(send, 429, "too many requests from this address; slow down",
                          ((b"retry-after", str(max(1, round(wait + 0.5))).encode()),))
            return
        settings = self.context.settings
        cap = settings.max_import_bytes if scope["path"] == IMPORT_PATH else \
            settings.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > cap):
            await _answer(send, 413, f"request body too large (the limit is {cap} bytes)")
            return
        seen = 0
        started = answered = False

        async def counted() -> Message:
            # past the cap: answer 413 here, and tell the app the client went away (it stops
            # reading; whatever it then tries to send is dropped below)
            nonlocal seen, answered
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap and not answered:
                    answered = True
                    if not started:
                        await _answer(send, 413, f"request body too large (the limit is "
                                                 f"{cap} bytes)")
                    return {"type": "http.disconnect"}
            return message

        async def marked(message: Message) -> None:
            nonlocal started
            if answered:
                return
            if message["type"] == "http.response.start":
                started = True
                if scope["path"].startswith("/api/"):
                    message["headers"] = [*message.get("headers", []),
                                          (b"cache-control", b"no-store"),
                                          (b"x-content-type-options", b"nosniff")]
            await send(message)

        await self.app(scope, counted, marked)


async def _http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's answer, but a 405 lists every method the path takes (Starlette's names only
    those of the first route that matched the path)."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code != 405:
        return await http_exception_handler(request, exc)
    allowed = sorted({method for route in request.app.router.routes
                      if isinstance(route, APIRoute)
                      and route.matches(request.scope)[0] is not Match.NONE
                      for method in route.methods})
    return JSONResponse({"detail": "method not allowed"}, status_code=405,
                        headers={"Allow": ", ".join(allowed)})


def create_app(port: CurationPort, *, accounts_path: str | Path,
               settings: WebSettings | None = None) -> FastAPI:
    settings = settings or WebSettings()
    context = WebContext(
        port=port, settings=settings,
        accounts=Accounts(accounts_path, hasher=settings.hasher(),
                          session_seconds=settings.session_seconds),
        limiter=RateLimiter(settings.rate), logins=LoginThrottle(settings.rate.max_keys))
    app = FastAPI(title="phalanx curation", version="1",
                  description="Annotate, curate and audit crowdsourced labels on a phalanx "
                              "node. Records are signed by the annotator's own Ed25519 key.",
                  exception_handlers={RequestValidationError: invalid_handler,
                                      StarletteHTTPException: _http_error},
                  redoc_url=None)
    app.state.web = context
    for module in (routes_auth, routes_curation, routes_admin):
        app.include_router(module.router)
    if importlib.util.find_spec("phalanx.apps.web.pages") is not None:
        from phalanx.apps.web import pages  # the UI's routes (templates, static files)

        app.include_router(pages.router)
    app.add_middleware(Gate, context=context)
    return app
