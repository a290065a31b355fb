"""A real web server (uvicorn in a process of its own, a desk over SQLite) under concurrent
annotators: nothing acknowledged is lost, whether the server stops or is killed with
SIGKILL mid-load, and after a restart every acknowledged record is there and the clients'
chains go on from where the store says they are."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from phalanx.apps.web.client import WebClient
from phalanx.apps.web.load import (
    PASSWORD,
    UNLIMITED,
    LoadResult,
    ServerProcess,
    run_load,
    stored_digests,
    synthetic_tasks,
)
from phalanx.apps.web.settings import WebSettings
from phalanx.net.crypto import Identity

CLIENTS = 50


def _settings() -> WebSettings:
    """The server's hashing made cheap (50 sign-ups must not take the test's time), and no
    rate limit (the load comes from one address)."""
    return WebSettings(argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1,
                       rate=UNLIMITED)


def _acked(result: LoadResult) -> set[bytes]:
    return {bytes.fromhex(d) for d in result.acknowledged}


def test_fifty_clients_for_three_seconds_lose_nothing(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, synthetic_tasks(300), settings=_settings(),
                           redundancy=CLIENTS)
    url = server.start()
    try:
        result = asyncio.run(run_load(url, CLIENTS, 3.0))
    finally:
        server.stop()
    acked = _acked(result)
    assert len(acked) == len(result.acknowledged) > CLIENTS  # each client got some in
    assert not result.errors
    assert acked <= stored_digests(tmp_path)
    summary = result.summary()
    assert summary["latency_ms_p95"] is not None and summary["submissions_per_second"] > 0


def test_sigkill_mid_load_loses_no_acknowledged_record(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, synthetic_tasks(300), settings=_settings(),
                           redundancy=10)
    url = server.start()

    def kill_soon() -> None:  # kill -9 a second into the load, submissions in flight
        threading.Timer(1.0, server.kill).start()

    result = asyncio.run(run_load(url, 10, 30.0, on_start=kill_soon))
    assert result.seconds < 10  # the clients stopped when the server died
    acked = _acked(result)
    assert acked and acked <= stored_digests(tmp_path)
    # restarted on the same folder: every acknowledged record is served, and an annotator
    # continues their chain from what the store holds
    again = ServerProcess(tmp_path, settings=_settings(), redundancy=11)
    url = again.start()
    try:
        async def resume() -> dict:  # type: ignore[type-arg]
            async with WebClient(url, Identity.generate()) as late:
                await late.signup("late", PASSWORD)
                tasks = await late.tasks(1)
                await late.answer(tasks[0], "a")
                await asyncio.sleep(1.5)  # a commit or two of the restarted desk
                return await late.stats()
        stats = asyncio.run(resume())
    finally:
        again.stop()
    assert stats["platform"]["records"] + stats["platform"]["pending"] >= len(acked) + 1
    assert acked <= stored_digests(tmp_path)
