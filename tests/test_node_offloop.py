"""A real node computes off its event loop: while its gradient job runs (2 s here, busy on the
CPU the whole time), the node still answers `GET /status` at once and its transport keeps
sending heartbeats, so its peer never goes without hearing from it. (A job that holds the
interpreter lock itself, pure-Python arithmetic, still leaves the loop its turns every 5 ms;
the answers then take longer on a busy machine, so this test uses native work, as a real
gradient step is.)"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path

import numpy as np
from realkit import free_ports, real_nodes

from phalanx.apps.node import RealNode
from phalanx.engine.workloads import GradientResult, Workload
from phalanx.scenario.schema import parse_scenario

JOB_SECONDS = 2.0
HEARTBEAT = 0.1  # both nodes ping an idle link this often


class SlowWorkload(Workload):
    """The run's workload, with each gradient first keeping a CPU busy for JOB_SECONDS with
    matrix products: native code that releases the interpreter lock while it runs, as torch's
    kernels do in a real gradient step."""

    def __init__(self, inner: Workload) -> None:
        self.inner, self.name = inner, inner.name
        self.running = 0  # jobs inside `gradient` right now

    def init_params(self) -> np.ndarray:
        return self.inner.init_params()

    def gradient(self, params: np.ndarray, node: int, round: int,
                 poisoned: bool = False) -> GradientResult:
        self.running += 1
        try:
            end = time.perf_counter() + JOB_SECONDS
            a = np.ones((192, 192))
            while time.perf_counter() < end:
                a = (a @ a) / 192.0
            return self.inner.gradient(params, node, round, poisoned)
        finally:
            self.running -= 1

    def evaluate(self, params: np.ndarray) -> dict[str, float]:
        return self.inner.evaluate(params)


def _get(url: str) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        response.read()
    return time.perf_counter() - start


async def _watch(slow: RealNode, peer: RealNode, workload: SlowWorkload, url: str
                 ) -> tuple[list[float], list[float]]:
    """While the slow node's first job runs: /status latencies, and how long ago its peer last
    heard from it, sampled every 20 ms."""
    latencies: list[float] = []
    silences: list[float] = []
    async with asyncio.timeout(30):
        while not workload.running:
            await asyncio.sleep(0.01)
    started = time.perf_counter()
    while workload.running and time.perf_counter() - started < JOB_SECONDS:
        latencies.append(await asyncio.to_thread(_get, url))
        silences.append(peer.transport.heard_ago().get(slow.node.id, float("inf")))
        await asyncio.sleep(0.02)
    return latencies, silences


async def _run(folder: Path) -> tuple[list[float], list[float], list[bool]]:
    s = parse_scenario({
        "name": "offloop", "seed": 3, "nodes": {"count": 2},
        "workload": {"kind": "linear", "dim": 8},
        "training": {"rounds": 2},
        "real": {"round_timeout": 5.0, "view_timeout": 15.0, "start_wait": 20.0}})
    web = free_ports(1)[0]
    nodes = real_nodes(folder, s, web_port=web)
    slow, peer = nodes
    workload = SlowWorkload(slow.node.workload)
    slow.node.workload = workload  # the jobs the node asks for carry its workload
    for node in nodes:
        node.transport.heartbeat = HEARTBEAT
    runs = [asyncio.create_task(node.run()) for node in nodes]
    latencies, silences = await _watch(slow, peer, workload,
                                       f"http://127.0.0.1:{web}/status")
    async with asyncio.timeout(60):
        await asyncio.gather(*runs)
    return latencies, silences, [node.node.finished for node in nodes]


def test_a_node_answers_status_and_keeps_heartbeats_while_a_2s_job_runs(tmp_path: Path
                                                                         ) -> None:
    latencies, silences, finished = asyncio.run(_run(tmp_path))
    assert finished == [True, True]
    assert len(latencies) >= 10, latencies  # sampled across the job, not once
    assert max(latencies) < 0.1, f"slowest /status: {max(latencies):.3f} s"
    # an idle link is pinged every HEARTBEAT (checked every HEARTBEAT / 2): the peer never
    # waits much longer; a loop blocked by the job would leave it 2 s without a word
    assert max(silences) < 5 * HEARTBEAT, f"peer heard nothing for {max(silences):.2f} s"
