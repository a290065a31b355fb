"""Helpers for the tests that drive real node processes (`test_cluster.py`,
`test_partition_real.py`): waiting on a condition, reading every node's status, and a
node's console on a pseudo terminal."""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from phalanx.apps.cluster import cluster_status

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """`check()`'s first truthy value, polled; AssertionError after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if value := check():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def statuses(folder: Path) -> dict[int, dict[str, Any]]:
    """Node id -> its /status, for the nodes that answer."""
    return {r["node"]: r["status"] for r in cluster_status(folder) if r["status"]}


def all_finished(folder: Path, n: int) -> bool:
    s = statuses(folder)
    return len(s) == n and all(v["finished"] for v in s.values())


class Terminal:
    """A process attached to a pseudo terminal (a node's console): type lines, read until a
    reply shows."""

    def __init__(self, cmd: list[str]) -> None:
        import pty

        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave,
                                     start_new_session=True)
        os.close(slave)
        self.seen = b""

    def read_until(self, text: bytes, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while text not in self.seen:
            assert time.time() < deadline, f"no {text!r} in {self.seen.decode(errors='replace')}"
            if select.select([self.master], [], [], 0.2)[0]:
                self.seen += os.read(self.master, 65536)

    def type(self, line: bytes, reply: bytes) -> None:
        self.seen = b""
        os.write(self.master, line + b"\n")
        self.read_until(reply)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
