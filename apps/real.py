"""`phalanx run --real`: the scenario's nodes as separate OS processes over TCP on loopback.

The launcher picks free ports, starts one `apps.real_node` process per node, waits until every
node has written its results (or the scenario's wall-clock deadline passes), stops them with
SIGTERM and builds the same result tables as the simulator. Faults are injected by the
simulator only; real fault tests come with the production transport.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from phalanx.apps.results import RunResult, rounds_table, summarize
from phalanx.engine.rng import RngStreams
from phalanx.sim.scenario import Scenario, ScenarioError
from phalanx.sim.world import workload_for


class RealRunError(RuntimeError):
    """A real run that could not complete; the message is one line."""


def free_ports(count: int, host: str) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def check_runnable(scenario: Scenario) -> None:
    if scenario.faults or scenario.nemesis or scenario.byzantine:
        raise ScenarioError(f"{scenario.name}: --real runs fault-free scenarios only (faults, "
                            "nemesis and byzantine roles are injected by the simulator)")


def run_real(scenario: Scenario, printer: Any) -> RunResult:
    check_runnable(scenario)
    n, host = scenario.nodes.count, scenario.real.host
    ports = ([scenario.real.base_port + i for i in range(n)] if scenario.real.base_port
             else free_ports(n, host))
    with tempfile.TemporaryDirectory(prefix="phalanx-real-") as tmp:
        work = Path(tmp)
        spec = work / "scenario.yaml"
        spec.write_text(scenario.resolved_yaml())
        logs = [open(work / f"node-{i}.log", "wb") for i in range(n)]  # noqa: SIM115
        cmd = [sys.executable, "-m", "phalanx.apps.real_node", "--scenario", str(spec),
               "--ports", ",".join(map(str, ports)), "--out", str(work)]
        start = time.time()
        procs = [subprocess.Popen([*cmd, "--node", str(i)], stdout=logs[i], stderr=logs[i],
                                  stdin=subprocess.DEVNULL) for i in range(n)]
        try:
            results = _wait(procs, work, n, start + scenario.real.deadline)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
            for log in logs:
                log.close()
        wall = time.time() - start
        params: dict[str, np.ndarray] = {}
        for i in range(n):
            with np.load(work / f"params-{i}.npz") as archive:
                params.update({k: archive[k] for k in archive.files})
    rows = [{**row, "time": row["time"] - start, "byzantine": False}
            for r in results for row in r["commits"]]
    for row in sorted(rows, key=lambda r: (r["round"], r["node"])):
        printer.commit(_Commit(row), row["time"])
    printer.flush(final=True)
    workload = workload_for(scenario, RngStreams(scenario.seed))
    rounds = rounds_table(rows, workload, params, scenario.training.eval_every,
                          scenario.training.rounds - 1)
    rejections: dict[str, int] = {}
    for r in results:
        for reason, count in r["rejections"].items():
            rejections[reason] = rejections.get(reason, 0) + count
    extra = {"mode": "real-tcp", "wall_seconds": wall,
             "rounds_per_second": rounds["round"].n_unique() / wall,
             "bytes_sent": sum(r["transport_bytes_sent"] for r in results),
             "rejected_by_reason": rejections}
    return RunResult(scenario, rounds, pl.DataFrame(), summarize(scenario, rounds, extra))


class _Commit:
    """Adapter so the live round printer can show rows read back from the node processes."""

    def __init__(self, row: dict[str, Any]) -> None:
        self.round, self.train_loss = row["round"], row["train_loss"]
        self.model_hash = bytes.fromhex(row["model_hash"])


def _wait(procs: list[subprocess.Popen[bytes]], work: Path, n: int,
          deadline: float) -> list[dict[str, Any]]:
    files = [work / f"result-{i}.json" for i in range(n)]
    while not all(f.exists() for f in files):
        for i, p in enumerate(procs):
            if p.poll() is not None and not files[i].exists():
                lines = (work / f"node-{i}.log").read_text(errors="replace").strip().splitlines()
                last = lines[-1] if lines else "no output"
                raise RealRunError(f"node {i} exited with code {p.returncode}: {last}")
        if time.time() > deadline:
            done = [i for i, f in enumerate(files) if f.exists()]
            raise RealRunError(f"not finished within real.deadline; finished nodes: {done}")
        time.sleep(0.05)
    return [json.loads(f.read_text()) for f in files]
