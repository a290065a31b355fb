"""Load on a real web server: a `phalanx web serve` desk in a process of its own (so it can
be killed like any node), N annotator clients submitting over loopback for D seconds, and a
count of what the store holds afterwards. Used by `phalanx bench web` and the tests.

Each client signs up with its own key (WebClient, the product's client), then over a lean
keep-alive connection of its own (wire.py: httpx's client-side cost would be what the
benchmark measures) fetches tasks and submits one signed record at a time, timing each
submission from send to acknowledgement; an acknowledged digest is one the server said was
durable (202). Clients that hit a dead server stop and keep what they had.
"""

from __future__ import annotations

import asyncio
import base64
import multiprocessing
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx

from phalanx.engine.curation.assignment import AssignmentPolicy
from phalanx.engine.curation.store import SqliteStore
from phalanx.engine.curation.tasks import Task, TaskSet
from phalanx.net.crypto import Identity

from .client import ApiError, WebClient
from .limits import RateLimits
from .serve import RECORDS, LocalServe, serve_local
from .settings import WebSettings
from .taskfile import save_tasks
from .wire import WireConnection, WireError

__all__ = ["LoadResult", "ServerProcess", "run_load", "stored_digests", "synthetic_tasks"]

PASSWORD = "load-test-password"
# the load comes from one address, and measures the server, not the limits
UNLIMITED = RateLimits(account_rate=1e6, account_burst=1e6, address_rate=1e6,
                       address_burst=1e6)


def synthetic_tasks(n: int) -> TaskSet:
    return TaskSet([Task.make(id=f"load-{i:06d}", kind="single_choice",
                              text=f"Which class is item {i}?", options=("a", "b", "c"))
                    for i in range(n)])


def _serve(options: LocalServe, policy: AssignmentPolicy, urls: Any) -> None:
    asyncio.run(serve_local(options, urls.put, policy))


class ServerProcess:
    """`serve_local` in a spawned process over `data` (its tasks written there first)."""

    def __init__(self, data: Path, tasks: TaskSet | None = None, *,
                 settings: WebSettings | None = None, commit_seconds: float = 1.0,
                 redundancy: int = 3) -> None:
        data.mkdir(parents=True, exist_ok=True)
        if tasks is not None:
            save_tasks(tasks, data / "tasks.jsonl")
        self.data = data
        self.settings = settings or WebSettings(rate=UNLIMITED)
        self.options = LocalServe(data, "127.0.0.1", 0, None, self.settings, commit_seconds)
        self.policy = AssignmentPolicy(redundancy=redundancy)
        self.process: Any = None
        self.url = ""

    def start(self, timeout: float = 60.0) -> str:
        context = multiprocessing.get_context("spawn")  # no fork of a threaded parent
        urls = context.Queue()
        self.process = context.Process(target=_serve, args=(self.options, self.policy, urls),
                                       daemon=True)
        self.process.start()
        self.url = urls.get(timeout=timeout)
        return self.url

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last commit, no flush beyond what was acknowledged."""
        self.process.kill()
        self.process.join(10)

    def stop(self) -> None:
        self.process.terminate()  # SIGTERM: the server's graceful stop
        self.process.join(30)
        if self.process.is_alive():
            self.kill()


def stored_digests(data: Path) -> set[bytes]:
    """The digests of every record in the folder's store (opened after the server is gone)."""
    from phalanx.engine.curation.records import decode_annotation

    store = SqliteStore(data / RECORDS)
    try:
        return {decode_annotation(r).digest for r in store.records()}
    finally:
        store.close()


@dataclass
class LoadResult:
    clients: int
    seconds: float
    acknowledged: list[str] = field(default_factory=list)  # digests (hex)
    latencies: list[float] = field(default_factory=list)  # seconds, per acknowledged one
    errors: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(q: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 2) if lat else None
        return {"clients": self.clients, "seconds": round(self.seconds, 2),
                "acknowledged": len(self.acknowledged),
                "submissions_per_second": round(len(self.acknowledged) / self.seconds, 1)
                if self.seconds else 0.0,
                "latency_ms_p50": pct(0.5), "latency_ms_p95": pct(0.95),
                "latency_ms_mean": round(statistics.fmean(lat) * 1000, 2) if lat else None,
                "errors": dict(self.errors)}


@dataclass
class _Window:
    """When the clients submit: after `go` (all signed up), until `deadline`."""

    go: asyncio.Event
    deadline: float = float("inf")
    waiting: int = 0

    def signed_up(self) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            self.go.set()


def _count(result: LoadResult, key: str) -> None:
    result.errors[key] = result.errors.get(key, 0) + 1


async def _one_client(url: str, n: int, window: _Window, result: LoadResult) -> None:
    client = WebClient(url, Identity.generate(), timeout=60.0)
    try:
        await client.signup(f"load{n:05d}", PASSWORD)
        token = await client.issue_token()
    except (ApiError, httpx.HTTPError) as e:
        _count(result, f"signup: {type(e).__name__}")
        return
    finally:
        await client.close()
        window.signed_up()
    await window.go.wait()  # everyone starts submitting together
    async with WireConnection(url, {"Authorization": f"Bearer {token}"}) as wire:
        while time.monotonic() < window.deadline:
            try:
                status, body = await wire.request("GET", "/api/tasks?count=20")
                if status != 200:
                    _count(result, f"{status} tasks")
                    await asyncio.sleep(0.2)
                    continue
                tasks = client.take_tasks(body)
                if not tasks:
                    await asyncio.sleep(0.2)
                    continue
                for task in tasks:
                    if time.monotonic() >= window.deadline:
                        return
                    record = client.sign(task, task.options[n % len(task.options)])
                    data = {"record": base64.b64encode(record.encode()).decode()}
                    sent = time.monotonic()
                    status, body = await wire.request("POST", "/api/submit", data)
                    if status != 202:
                        _count(result, f"{status} {(body or {}).get('reason') or ''}".strip())
                        break  # fetch again: the head tells where the chain stands
                    result.latencies.append(time.monotonic() - sent)
                    result.acknowledged.append(body["digest"])
            except WireError as e:  # the server went away (killed): stop here
                _count(result, type(e).__name__)
                return


async def run_load(url: str, clients: int, seconds: float,
                   on_start: Callable[[], None] | None = None) -> LoadResult:
    """`clients` annotators sign up, then submit together for `seconds`; `on_start` runs
    once all have signed up (a test kills the server from there)."""
    result = LoadResult(clients, 0.0)
    window = _Window(asyncio.Event(), waiting=clients)
    runners = [asyncio.create_task(_one_client(url, n, window, result))
               for n in range(clients)]
    await window.go.wait()
    start = time.monotonic()
    window.deadline = start + seconds
    if on_start is not None:
        on_start()
    await asyncio.gather(*runners)
    result.seconds = min(time.monotonic(), window.deadline) - start
    return result
