"""Serving the web app: the uvicorn server behind the HTTP guard (for a node to run inside
its own loop), and `phalanx web serve`: one desk with no cluster, in a data folder.

A data folder holds `records.sqlite` (the desk's records), `tasks.jsonl` (its tasks, kept
across restarts), `web.sqlite` (accounts) and, with --tls-self-signed, the certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from phalanx.apps.http_guard import Guard, HttpLimits
from phalanx.apps.http_serving import EmbeddedServer, guarded_server
from phalanx.engine.curation.assignment import AssignmentPolicy
from phalanx.engine.curation.desk import CurationDesk, merge_tasks
from phalanx.engine.curation.io import tasks_from_csv, tasks_from_jsonl
from phalanx.engine.curation.reputation import ReputationPolicy
from phalanx.engine.curation.store import SqliteStore
from phalanx.engine.curation.tasks import TaskSet

from .app import create_app
from .durable import GroupCommit
from .port import LocalPort
from .settings import WebSettings
from .taskfile import load_tasks, save_tasks
from .tls import TlsFiles

__all__ = ["LocalServe", "open_local", "serve_local", "web_server"]

RECORDS, TASKS, ACCOUNTS = "records.sqlite", "tasks.jsonl", "web.sqlite"


def web_server(app: object, host: str, port: int, settings: WebSettings,
               tls: TlsFiles | None, limits: HttpLimits | None = None) -> EmbeddedServer:
    """The app behind the guard; its body cap is the largest the app takes (a task import):
    the app itself caps every other route lower."""
    limits = limits or HttpLimits(max_body_bytes=settings.max_import_bytes)
    return guarded_server(app, host, port, Guard(limits),  # type: ignore[arg-type]
                          certfile=tls.cert if tls else None, keyfile=tls.key if tls else None)


async def listening_url(server: EmbeddedServer, serving: asyncio.Task[None], host: str,
                        tls: TlsFiles | None) -> str | None:
    """The URL `server` answers at once it listens (with the port bound when 0 was asked);
    None when it stopped first (`serving` is its `serve()` task)."""
    while not server.started and not serving.done():
        await asyncio.sleep(0.02)
    if not server.started:
        return None
    bound = server.servers[0].sockets[0].getsockname()[1]
    shown = "localhost" if host in ("127.0.0.1", "::1") else host
    return f"{'https' if tls else 'http'}://{shown}:{bound}"


def read_task_file(path: Path) -> TaskSet:
    """A JSONL or CSV task file by its suffix (TaskImportError, OSError)."""
    data = path.read_bytes()
    return tasks_from_csv(data) if path.suffix.lower() == ".csv" else tasks_from_jsonl(data)


def open_local(data: Path, tasks_file: Path | None, commit_seconds: float,
               policy: AssignmentPolicy | None = None) -> LocalPort:
    """The folder's desk with the tasks it kept, grown by `tasks_file` (kept from then on)."""
    data.mkdir(parents=True, exist_ok=True)
    kept = data / TASKS
    tasks = load_tasks(kept)
    if tasks_file is not None:
        tasks, added = merge_tasks(tasks, read_task_file(tasks_file))
        if added:
            save_tasks(tasks, kept)
    group = GroupCommit(SqliteStore(data / RECORDS, any_thread=True))
    # reputation on, as on a node: the dashboard's weight, rewards and rank mean something
    desk = CurationDesk(tasks, store=group, policy=policy or AssignmentPolicy(),
                        reputation=ReputationPolicy())
    return LocalPort(desk, commit_seconds, tasks_file=kept, group=group)


@dataclass(frozen=True, slots=True)
class LocalServe:
    data: Path
    host: str
    port: int
    tls: TlsFiles | None
    settings: WebSettings
    commit_seconds: float = 1.0
    tasks_file: Path | None = None


async def serve_local(options: LocalServe, ready: Callable[[str], None],
                      policy: AssignmentPolicy | None = None) -> None:
    """Serve until SIGINT or SIGTERM; `ready(url)` once listening (with the bound port when
    0 was asked). The pending records are committed one last time on the way out."""
    local = open_local(options.data, options.tasks_file, options.commit_seconds, policy)
    app = create_app(local, accounts_path=options.data / ACCOUNTS, settings=options.settings)
    server = web_server(app, options.host, options.port, options.settings, options.tls)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    committer = asyncio.create_task(local.run())
    serving = asyncio.create_task(server.serve())
    try:
        url = await listening_url(server, serving, options.host, options.tls)
        if url is not None:
            ready(url)
        await serving
    finally:
        committer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await committer
        local.commit_now()
        local.desk.close()
        app.state.web.accounts.close()
