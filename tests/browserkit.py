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
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")


Background = Callable[[], Coroutine[Any, Any, None]]


@contextmanager
def served(app: Any, background: Sequence[Background] = ()) -> Iterator[str]:
    """`app` on a free loopback port, with `background` coroutines (e.g. a LocalPort's
    commits) running on the server's own event loop; yields the base URL, stops it after."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                            lifespan="off")
    server = uvicorn.Server(config)

    async def serve() -> None:
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
        yield f"http://127.0.0.1:{port}"
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
