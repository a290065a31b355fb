"""Helpers for the tests that drive real node processes (`test_cluster.py`,
`test_partition_real.py`): waiting on a condition, and reading every node's status."""

from __future__ import annotations

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
