"""A real node's HTTP status endpoint (FastAPI, served by uvicorn inside the node's own event
loop): what the TUI and monitoring read.

- `GET /status`: round, model hash, peers, reputation, exclusions, rejections, health;
- `GET /health`: the health verdict alone, with 200 while the node makes progress and 503
  when it has stalled (what a load balancer or a liveness probe wants);
- `POST /membership` with `{"change": "join"}` or `{"change": "leave"}`: the node asks the
  members to let it join or leave (202), or says why it cannot (409). It acts for the node's
  own operator, so it answers clients on the node's machine only (403 from anywhere else,
  even when `web_host` exposes the status to the network).

No answer repeats what a client sent: a malformed body gets 422 naming the field and what is
wrong with it, never the value (FastAPI's default echoes the whole input back); slow, oversized
and excess requests are refused by `http_guard` before they reach the app.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from phalanx.apps.http_guard import Guard, HttpLimits
from phalanx.apps.http_serving import EmbeddedServer, guarded_server, invalid_handler

__all__ = ["EmbeddedServer", "health", "make_status_app", "status_router", "status_server"]

StatusFn = Callable[[], dict[str, Any]]
ChangeFn = Callable[[str], str | None]  # "join" | "leave" -> why not, or None once asked


class ChangeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    change: Literal["join", "leave"]


def health(finished: bool, since_commit: float | None, stall_after: float, peers_up: int,
           quorum_peers: int) -> dict[str, Any]:
    """ok: committing with every peer reachable; degraded: committing, or able to, with some
    peers down; stalled: fewer than a quorum reachable, or no commit for `stall_after` s."""
    reasons = []
    if not finished and since_commit is not None and since_commit > stall_after:
        reasons.append(f"no commit for {since_commit:.0f} s")
    if peers_up < quorum_peers:
        reasons.append(f"{peers_up} peers reachable, a quorum needs {quorum_peers}")
    if reasons:
        return {"status": "stalled", "reasons": reasons}
    return {"status": "ok", "reasons": []}


def make_status_app(status: StatusFn, change: ChangeFn | None = None,
                    http_stats: Callable[[], dict[str, Any]] | None = None) -> FastAPI:
    """`http_stats`: the guard's counts, shown under `http` in /status."""
    app = FastAPI(title="phalanx node", docs_url=None, redoc_url=None,
                  exception_handlers={RequestValidationError: invalid_handler})
    app.include_router(status_router(status, change, http_stats))
    return app


def status_router(status: StatusFn, change: ChangeFn | None = None,
                  http_stats: Callable[[], dict[str, Any]] | None = None) -> APIRouter:
    """The status routes, for the status app or beside the curation web app on one port."""
    router = APIRouter(tags=["node"])

    # async routes: they run on the node's own event loop, between two events the node handles,
    # so each answer is a consistent snapshot (a plain `def` would run in a worker thread and
    # read the node's attributes while the loop changes them)
    @router.get("/status")
    async def read_status() -> dict[str, Any]:
        return {**status(), "http": http_stats()} if http_stats else status()

    @router.get("/health")
    async def read_health() -> JSONResponse:
        verdict = status()["health"]
        return JSONResponse(verdict, status_code=503 if verdict["status"] == "stalled" else 200)

    if change is not None:
        ask = change

        @router.post("/membership", status_code=202)
        async def request_change(body: ChangeBody, request: Request) -> JSONResponse:
            if not _local(request):
                return JSONResponse({"detail": "membership changes are accepted from the "
                                               "node's own machine only"}, status_code=403)
            # async: it runs on the node's own loop, where the node may be fed
            problem = ask(body.change)
            if problem is not None:
                return JSONResponse({"detail": f"cannot {body.change}: {problem}"},
                                    status_code=409)
            return JSONResponse({"requested": body.change, "epoch": status()["epoch"]},
                                status_code=202)

    return router


def _local(request: Request) -> bool:
    try:
        return request.client is not None and ipaddress.ip_address(
            request.client.host).is_loopback
    except ValueError:  # not an IP address (e.g. a test client's made-up name)
        return False


def status_server(status: StatusFn, host: str, port: int, change: ChangeFn | None = None,
                  limits: HttpLimits | None = None) -> EmbeddedServer:
    guard = Guard(limits or HttpLimits())
    return guarded_server(make_status_app(status, change, guard.stats), host, port, guard)
