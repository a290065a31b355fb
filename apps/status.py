"""A real node's HTTP status endpoint (FastAPI, served by uvicorn inside the node's own event
loop): what the TUI and monitoring read.

- `GET /status`: round, model hash, peers, reputation, exclusions, rejections, health;
- `GET /health`: the health verdict alone, with 200 while the node makes progress and 503
  when it has stalled (what a load balancer or a liveness probe wants).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

StatusFn = Callable[[], dict[str, Any]]


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


def make_status_app(status: StatusFn) -> FastAPI:
    app = FastAPI(title="phalanx node", docs_url=None, redoc_url=None)

    @app.get("/status")
    def read_status() -> dict[str, Any]:
        return status()

    @app.get("/health")
    def read_health() -> JSONResponse:
        verdict = status()["health"]
        return JSONResponse(verdict, status_code=503 if verdict["status"] == "stalled" else 200)

    return app


class EmbeddedServer(uvicorn.Server):
    """uvicorn inside a loop it does not own: the node handles SIGTERM itself (flushing its
    log and checkpoint), so the server must not take over the signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def status_server(status: StatusFn, host: str, port: int) -> EmbeddedServer:
    config = uvicorn.Config(make_status_app(status), host=host, port=port, log_level="warning",
                            lifespan="off", access_log=False)
    return EmbeddedServer(config)
