"""`phalanx serve SCENARIO`: a scenario's simulated cluster running in real time beside the
curation web app, so a person annotates next to simulated annotators, Byzantine nodes and
the scenario's faults.

The simulated world is the one `phalanx run` builds (sim/world.py); an asyncio task moves its
SimPy clock along with the wall clock (`speed` simulated seconds per second), a slice at a
time, so the web app answers between slices. The app talks to one simulated curation node
through `SimPort`: a submission goes into that node's intake at the current simulated time,
exactly as a simulated annotator's does. Nothing here is a real network: the output says so.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import HTTPException

from phalanx.apps.http_guard import HttpLimits
from phalanx.apps.node_curation import ACCOUNTS_FILE
from phalanx.apps.web.app import create_app
from phalanx.apps.web.serve import listening_url, web_server
from phalanx.apps.web.settings import WebSettings
from phalanx.apps.web.tls import TlsFiles
from phalanx.engine.curation.desk import CurationDesk
from phalanx.engine.curation.messages import encode_import
from phalanx.engine.curation.records import REFUSALS, RecordRefused
from phalanx.engine.curation.tasks import TaskError, TaskSet
from phalanx.engine.events import LocalAnswer, LocalRequest, RoundCommitted
from phalanx.scenario.schema import Scenario, ScenarioError
from phalanx.sim.world import SimWorld

__all__ = ["LiveWorld", "ServeOptions", "SimPort", "serve_simulation"]

SLICE = 0.05  # most simulated seconds advanced before the web app gets the loop back


class LiveWorld:
    """A SimWorld whose clock follows the wall clock (its simulated annotators, if the
    scenario has a crowd, at work in it), and the web app's door into its curation nodes."""

    def __init__(self, scenario: Scenario, speed: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if scenario.curation is None:
            raise ScenarioError(f"{scenario.name}: phalanx serve needs a scenario with a "
                                f"curation: section (tasks, annotation nodes)")
        if not speed > 0:
            raise ScenarioError(f"--speed must be > 0 (got {speed})")
        self.scenario, self.speed, self.clock = scenario, speed, clock
        self.world = SimWorld(scenario, on_commit=self._committed)
        self.last_commit: float | None = None  # simulated time of the latest commit
        self._tokens = itertools.count(1)

    # --- what the web app calls --------------------------------------------------------------

    @property
    def now(self) -> float:
        return self.world.now

    def desk(self, node: int) -> CurationDesk | None:
        return self.world.desk(node)

    def ask(self, node: int, op: str, data: bytes) -> LocalAnswer | None:
        """`node`'s curation service handles a request now; its answer (None: node down)."""
        return self.world.ask(node, LocalRequest("curation", op, data, next(self._tokens)))

    # --- the clock ---------------------------------------------------------------------------

    def start(self) -> None:
        """Faults scheduled, nodes started, the scenario's simulated annotators at work."""
        self.world.start()

    async def run(self) -> None:
        """Advance the simulated clock with the wall clock until cancelled. When the machine
        cannot keep up, the simulation runs behind (never skips events)."""
        wall0, sim0 = self.clock(), self.world.now
        while True:
            target = sim0 + (self.clock() - wall0) * self.speed
            while self.world.now < target:
                self.world.env.run(until=min(target, self.world.now + SLICE))
                await asyncio.sleep(0)  # the web app's requests between slices
            await asyncio.sleep(SLICE / self.speed)

    def _committed(self, metric: RoundCommitted, now: float) -> None:
        self.last_commit = now


class SimPort:
    """The web app's way into one simulated curation node (apps/web/port.py's CurationPort)."""

    def __init__(self, live: LiveWorld, node: int) -> None:
        self.live, self.node = live, node

    @property
    def desk(self) -> CurationDesk:
        desk = self.live.desk(self.node)
        if desk is None:
            raise HTTPException(503, "the simulated node is down (a fault of the scenario); "
                                     "try again shortly")
        return desk

    def _ask(self, op: str, data: bytes) -> LocalAnswer:
        answer = self.live.ask(self.node, op, data)
        if answer is None:
            raise HTTPException(503, "the simulated node is down (a fault of the scenario); "
                                     "try again shortly")
        return answer

    async def submit(self, record: bytes) -> bytes:
        answer = self._ask("submit", record)
        if answer.ok:
            return answer.result
        if answer.reason in REFUSALS:
            raise RecordRefused(answer.reason, answer.detail)
        raise RuntimeError(f"the curation service refused a submission: {answer.reason}")

    def import_tasks(self, tasks: TaskSet) -> int:
        answer = self._ask("import", encode_import(tasks))
        if answer.ok:
            return int.from_bytes(answer.result, "big")
        if answer.reason == "invalid_import":
            raise TaskError(answer.detail)
        raise RuntimeError(f"the curation service refused an import: {answer.reason}")

    def health(self) -> dict[str, Any]:
        live = self.live
        node = live.world.hosts[self.node].node
        since = None if live.last_commit is None else (live.now - live.last_commit) / live.speed
        if node is None:
            status, detail = "stalled", "the simulated node is down (a fault of the scenario)"
        elif node.finished:
            status, detail = "stalled", "the simulation has run all its rounds: nothing more " \
                                        "commits"
        else:
            status, detail = "ok", (f"a SIMULATION of scenario {live.scenario.name!r} (seed "
                                    f"{live.scenario.seed}) in real time: no real network")
        return {"status": status, "mode": "simulation", "detail": detail,
                "seconds_since_commit": None if since is None else round(since, 3)}


@dataclass(frozen=True)
class ServeOptions:
    node: int | None  # the simulated curation node the web app serves (None: the first)
    host: str
    port: int
    data: Path  # the web app's accounts (and a self-signed certificate)
    speed: float
    tls: TlsFiles | None
    settings: WebSettings


def chosen_node(scenario: Scenario, node: int | None) -> int:
    """The curation node the web app serves: the one asked for, else the first annotation
    node (else member 0). ScenarioError when it is not a curation node of the scenario."""
    curating = [*scenario.annotation_nodes, *scenario.members]
    if node is None:
        return curating[0]
    if node not in curating:
        raise ScenarioError(f"--node {node}: not a curation node of {scenario.name} (its "
                            f"annotation nodes are {list(scenario.annotation_nodes)}, its "
                            f"members {list(scenario.members)})")
    return node


async def serve_simulation(live: LiveWorld, options: ServeOptions,
                           ready: Callable[[str], None], stop: asyncio.Event) -> None:
    """Serve the web app over `live`'s node until `stop`; `ready(url)` once listening."""
    options.data.mkdir(parents=True, exist_ok=True)
    port = SimPort(live, chosen_node(live.scenario, options.node))
    app = create_app(port, accounts_path=options.data / ACCOUNTS_FILE,
                     settings=options.settings)
    server = web_server(app, options.host, options.port, options.settings, options.tls,
                        HttpLimits(max_body_bytes=options.settings.max_import_bytes))
    live.start()
    clock = asyncio.create_task(live.run())
    serving = asyncio.create_task(server.serve())
    try:
        url = await listening_url(server, serving, options.host, options.tls)
        if url is not None:
            ready(url + "/")
            await asyncio.wait([serving, asyncio.create_task(stop.wait())],
                               return_when=asyncio.FIRST_COMPLETED)
            server.should_exit = True
        await serving
    finally:
        clock.cancel()
        app.state.web.accounts.close()
