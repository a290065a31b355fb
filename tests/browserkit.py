"""Harness for the browser tests: an ASGI app served by a real uvicorn on loopback (so the
page is a secure context and WebCrypto's Ed25519 works) and headless Chromium through
Playwright, skipped with a reason when either is missing."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

CHROMIUM = Path("/usr/bin/chromium")


Background = Callable[[], Coroutine[Any, Any, None]]
T = TypeVar("T")


@dataclass(frozen=True)
class Served:
    url: str  # http://127.0.0.1:PORT
    loop: asyncio.AbstractEventLoop

    def call(self, read: Callable[[], T], timeout: float = 15) -> T:
        """`read()` run on the server's event loop, between two of its requests (what the
        app's routes see), never beside them from the test's thread."""
        async def run() -> T:
            return read()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)


@contextmanager
def served(app: Any, background: Sequence[Background] = ()) -> Iterator[Served]:
    """`app` on a free loopback port, with `background` coroutines (e.g. a LocalPort's
    commits) running on the server's own event loop; stopped on exit."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                            lifespan="off")
    server = uvicorn.Server(config)
    loops: list[asyncio.AbstractEventLoop] = []

    async def serve() -> None:
        loops.append(asyncio.get_running_loop())
        tasks = [asyncio.create_task(work()) for work in background]
        try:
            await server.serve()
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="web-under-test",
                              daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test web server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Served(f"http://127.0.0.1:{port}", loops[0])
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def chromium_path() -> str:
    """The system Chromium, or a skip naming what to install."""
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed "
                                                      "(pip install playwright)")
    found = str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")
    if not found:
        pytest.skip("no system Chromium (apt-get install -y chromium)")
    return found


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium browser (Playwright's sync API)."""
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()
