"""A real node's curation web app: the `CurationPort` of a running node, and the one HTTP
server that serves the web app and the node's status routes on `web_port`.

- **Writes go through the node.** A submission or a task import becomes a `LocalRequest`
  the sans-IO node handles on its own event loop; the host carries out what it returns
  (the record's write to the node's SQLite store first, then its forwarding to the members),
  so an annotator's 202 means the record is on disk, and only the node decides what it takes.
- **Reads are the desk's committed snapshot**, read between two events on the same loop.
- **Health** is the node's own verdict (`/status`'s `health`).
- **TLS**: off loopback the app is served over HTTPS (browsers sign annotations with
  WebCrypto only in a secure context): the operator's certificate, or a self-signed one the
  node keeps in its data folder (apps/web/tls.py).
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException

from phalanx.apps.http_guard import Guard, HttpLimits
from phalanx.apps.http_serving import EmbeddedServer, guarded_server
from phalanx.apps.node_host import AsyncHost
from phalanx.apps.status import ChangeFn, StatusFn, status_router
from phalanx.apps.web.app import create_app
from phalanx.apps.web.settings import WebSettings
from phalanx.apps.web.tls import TlsFiles, is_loopback, tls_files
from phalanx.engine.curation.desk import CurationDesk
from phalanx.engine.curation.messages import encode_import
from phalanx.engine.curation.records import REFUSALS, RecordRefused
from phalanx.engine.curation.service import CurationService
from phalanx.engine.curation.tasks import TaskError, TaskSet
from phalanx.engine.events import LocalRequest

__all__ = ["NodePort", "WebServer", "serve_curation", "web_tls"]

ACCOUNTS_FILE = "web.sqlite"


class NodePort:
    """The web app's way into a running node (apps/web/port.py's CurationPort)."""

    def __init__(self, host: AsyncHost, service: CurationService,
                 verdict: Callable[[], dict[str, Any]], ready: Callable[[], bool]) -> None:
        """`verdict`: the node's health (status, reasons); `ready`: whether the node has
        started on its store (before that it takes nothing: its desk is not restored yet)."""
        self.host, self.service = host, service
        self.verdict, self.ready = verdict, ready
        self._tokens = itertools.count(1)

    @property
    def desk(self) -> CurationDesk:
        return self.service.desk  # a restart's restore replaces the desk: never cache it

    def _ask(self, op: str, data: bytes) -> tuple[bool, bytes, str, str]:
        if not self.ready():
            raise HTTPException(503, "the node is starting; try again in a few seconds")
        answer = self.host.ask(LocalRequest("curation", op, data, next(self._tokens)))
        return answer.ok, answer.result, answer.reason, answer.detail

    async def submit(self, record: bytes) -> bytes:
        ok, digest, reason, detail = self._ask("submit", record)
        if ok:
            return digest
        if reason in REFUSALS:
            raise RecordRefused(reason, detail)
        raise RuntimeError(f"the curation service refused a submission: {reason}")

    def import_tasks(self, tasks: TaskSet) -> int:
        """How many tasks are new: held until a round commits them (then every curation node
        has them), offered to the members meanwhile."""
        ok, added, reason, detail = self._ask("import", encode_import(tasks))
        if ok:
            return int.from_bytes(added, "big")
        if reason == "invalid_import":
            raise TaskError(detail)
        raise RuntimeError(f"the curation service refused an import: {reason}")

    def health(self) -> dict[str, Any]:
        verdict = self.verdict()
        since = verdict.get("seconds_since_commit")
        reasons = verdict.get("reasons", [])
        return {"status": verdict["status"], "mode": "node",
                "detail": "; ".join(reasons) if reasons else
                "committing rounds with its peers: records are replicated and certified",
                "seconds_since_commit": None if since is None else round(since, 3)}


@dataclass(frozen=True)
class WebServer:
    server: EmbeddedServer
    app: FastAPI
    host: str
    tls: TlsFiles | None

    def close(self) -> None:
        """Stop serving (at the loop's next turn) and close the accounts file."""
        self.server.should_exit = True
        self.app.state.web.accounts.close()

    @property
    def port(self) -> int:
        """The port it listens on (the one asked for, or the one the OS picked for 0)."""
        for listener in getattr(self.server, "servers", []):
            for sock in listener.sockets:
                return int(sock.getsockname()[1])
        return int(self.server.config.port)

    @property
    def url(self) -> str:
        """What a browser opens (a wildcard host: this machine's name)."""
        host = socket.gethostname() if self.host in ("0.0.0.0", "::", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/"


def web_tls(host: str, data_dir: Path, cert: Path | None, key: Path | None) -> TlsFiles | None:
    """The web app's TLS files: the operator's, a self-signed pair kept in `data_dir` off
    loopback, or None (plain http on loopback). TlsError (one line) when they cannot be."""
    return tls_files(cert, key, host=host, self_signed_in=None if is_loopback(host) else data_dir)


def serve_curation(port: NodePort, status: StatusFn, change: ChangeFn | None, *, host: str,
                   web_port: int, data_dir: Path, limits: HttpLimits, tls: TlsFiles | None,
                   settings: WebSettings | None = None) -> WebServer:
    """The curation web app with the status routes (`/status`, `/health`, `/membership`) on
    one server, over TLS when `tls` is given."""
    settings = settings or WebSettings(https=tls is not None)
    app = create_app(port, accounts_path=data_dir / ACCOUNTS_FILE, settings=settings)
    guard = Guard(limits)
    app.include_router(status_router(status, change, guard.stats))
    server = guarded_server(app, host, web_port, guard,
                            certfile=tls.cert if tls else None, keyfile=tls.key if tls else None)
    return WebServer(server, app, host, tls)
