"""One real node process: the same sans-IO Node, driven by asyncio, TCP and the wall clock.

Started by `phalanx run --real` (apps.real) as `python -m phalanx.apps.real_node ...`. Its disk
is a SQLite node log (`apps/node_log.py`: committed rounds with their certificates, evidence,
checkpoint, votes); its results are a JSON file of commit rows and an .npz of the models it
committed, read back by the launcher.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from phalanx.apps.node_log import NodeLog
from phalanx.apps.runner import commit_row
from phalanx.engine.events import (
    Action,
    Broadcast,
    CancelTimer,
    Compute,
    ComputeDone,
    Emit,
    Event,
    Finished,
    Metric,
    Persist,
    Received,
    Send,
    SetTimer,
    Started,
    TimerFired,
)
from phalanx.engine.metrics import MetricLog
from phalanx.engine.node import Node
from phalanx.engine.rng import RngStreams
from phalanx.net.crypto import Identity
from phalanx.net.envelope import open_frame
from phalanx.net.tcp import TcpTransport
from phalanx.sim.scenario import load_scenario
from phalanx.sim.world import node_config, workload_for


class AsyncHost:
    def __init__(self, node: Node, transport: TcpTransport, disk: NodeLog,
                 peers: list[int]) -> None:
        self.node, self.transport, self.disk, self.peers = node, transport, disk, peers
        self.loop = asyncio.get_running_loop()
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.metrics = MetricLog()
        self.bytes_sent: dict[int, int] = {}
        self.finished = asyncio.Event()

    def feed(self, event: Event) -> None:
        self.execute(self.node.handle(event, time.time()))

    def execute(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case Broadcast(frame, _, rnd):
                    for peer in self.peers:
                        self.transport.send(peer, frame)
                    self.bytes_sent[rnd] = self.bytes_sent.get(rnd, 0) + len(frame) * len(
                        self.peers)
                case Send(peer, frame, _, rnd):
                    self.transport.send(peer, frame)
                    self.bytes_sent[rnd] = self.bytes_sent.get(rnd, 0) + len(frame)
                case SetTimer(name, delay):
                    if name in self.timers:
                        self.timers[name].cancel()
                    self.timers[name] = self.loop.call_later(delay, self._fire, name)
                case CancelTimer(name):
                    handle = self.timers.pop(name, None)
                    if handle:
                        handle.cancel()
                case Compute(job):
                    result = job.run()  # small jobs: run inline, deliver on the next loop turn
                    self.loop.call_soon(self.feed, ComputeDone(job, result))
                case Persist(key, value):
                    self.disk.write(key, value)
                case Emit(metric):
                    self._metric(metric)

    def _fire(self, name: str) -> None:
        self.timers.pop(name, None)
        self.feed(TimerFired(name))

    def _metric(self, metric: Metric) -> None:
        self.metrics.record(metric, time.time())
        if isinstance(metric, Finished):
            self.finished.set()

    def results(self) -> dict[str, Any]:
        commits = [commit_row(m, t, order, self.bytes_sent.get(m.round, 0), False)
                   for m, t, order in self.metrics.commits]
        return {"commits": commits, "rejections": dict(self.metrics.rejections)}


async def serve(args: argparse.Namespace) -> None:
    scenario = load_scenario(args.scenario)
    node_id, out = args.node, Path(args.out)
    ports = [int(p) for p in args.ports.split(",")]
    addresses = {i: (scenario.real.host, p) for i, p in enumerate(ports)}
    rngs = RngStreams(scenario.seed)
    keyring = {i: Identity.derive(scenario.seed, i).public_key for i in addresses}

    def opener(frame: bytes) -> Any:
        return open_frame(frame, keyring)

    config = node_config(scenario, node_id, scenario.real.round_timeout,
                         scenario.real.view_timeout)
    node = Node(config, Identity.derive(scenario.seed, node_id), workload_for(scenario, rngs),
                opener)
    disk = NodeLog(out / "nodes" / f"{node_id}.sqlite")
    early: list[bytes] | None = []  # frames that arrive before this node has started

    def on_frame(frame: bytes) -> None:
        if early is not None:
            early.append(frame)
        else:
            host.feed(Received(frame))

    transport = TcpTransport(node_id, addresses, on_frame)
    host = AsyncHost(node, transport, disk, [i for i in addresses if i != node_id])
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await transport.start()
    await transport.wait_for_peers(scenario.real.deadline)
    host.feed(Started(disk.read_all()))
    backlog, early = early, None
    for frame in backlog:
        host.feed(Received(frame))
    await host.finished.wait()
    np.savez(out / f"params-{node_id}.npz", **{h.hex(): p for h, p in host.metrics.params.items()})
    result = {"node": node_id, **host.results(),
              "transport_bytes_sent": transport.bytes_sent,
              "queue_drops": transport.dropped_full}
    tmp = out / f"result-{node_id}.tmp"
    tmp.write_text(json.dumps(result))
    os.replace(tmp, out / f"result-{node_id}.json")  # the launcher never sees half a file
    await stop.wait()  # keep serving sync requests until the launcher says everyone is done
    await transport.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="one phalanx node over TCP (launched by "
                                     "`phalanx run --real`)")
    parser.add_argument("--scenario", required=True)
    parser.add_argument("--node", type=int, required=True)
    parser.add_argument("--ports", required=True, help="comma-separated port per node id")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
