"""`phalanx bench web`: N concurrent annotator clients submitting signed records for D seconds
to a real server (uvicorn on loopback, in a process of its own) over one desk with a SQLite
store; reports submissions per second, p50/p95 latency from send to acknowledgement, and
whether every acknowledged record is in the store afterwards (it must be: `lost` is 0)."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from phalanx.apps.bench_report import results_table, save_report, stamp
from phalanx.apps.web.load import ServerProcess, run_load, stored_digests, synthetic_tasks

TASKS_PER_CLIENT = 4  # every client may answer every task: the load never runs dry


class BenchWebError(RuntimeError):
    """The benchmark could not run; one line saying why."""


def run_bench(clients: int, seconds: float, out_file: Path, console: Console) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="phalanx-bench-web-") as tmp:
        data = Path(tmp)
        tasks = synthetic_tasks(max(500, int(seconds * 40)))
        server = ServerProcess(data, tasks, redundancy=clients)
        try:
            url = server.start()
        except Exception as e:  # the queue's Empty, or the child's failure
            server.stop()
            raise BenchWebError(f"bench web: the server did not start ({type(e).__name__})") \
                from None
        console.print(f"bench web: {clients} clients sign up, then submit for {seconds:g} s "
                      f"to {url}")
        try:
            result = asyncio.run(run_load(url, clients, seconds))
        finally:
            server.stop()
        stored = stored_digests(data)
    acked = {bytes.fromhex(d) for d in result.acknowledged if d}
    summary = result.summary()
    summary.update(found_in_store=len(acked & stored), lost=len(acked - stored),
                   store_records=len(stored))
    report = {"benchmark": "web", **stamp(),
              "store": "sqlite (WAL, synchronous=FULL, group commit)",
              "tasks": len(tasks), **summary}
    save_report(report, out_file)
    console.print(results_table(
        "web submissions: acknowledged only once durable",
        ("clients", "seconds", "acknowledged", "per second", "p50 ms", "p95 ms",
         "found in store", "lost", "errors"),
        [(str(clients), f"{summary['seconds']:.1f}", str(summary["acknowledged"]),
          f"{summary['submissions_per_second']:.1f}", str(summary["latency_ms_p50"]),
          str(summary["latency_ms_p95"]), str(summary["found_in_store"]),
          str(summary["lost"]), str(sum(summary["errors"].values())))]))
    console.print(f"written to {out_file}")
    if summary["lost"]:
        raise BenchWebError(f"bench web: {summary['lost']} acknowledged records are not in "
                            f"the store")
    return report
