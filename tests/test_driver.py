"""One action dispatcher for every driver (engine/driver.py): each action reaches the driver
method of its kind, in order, and something that is not an action fails loudly in every
driver (the SimPy host, Twins, the real host, the test pump) instead of being dropped."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from nodekit import Kit, Pump

from phalanx.apps.node_host import AsyncHost
from phalanx.apps.node_log import NodeLog
from phalanx.engine.driver import UnknownAction, dispatch
from phalanx.engine.events import (
    Broadcast,
    CancelTimer,
    Compute,
    Emit,
    Finished,
    Load,
    Persist,
    Send,
    SetTimer,
)
from phalanx.scenario.schema import parse_scenario
from phalanx.sim.twins import TwinsRun, TwinsScenario
from phalanx.sim.world import SimWorld


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.calls.append((name, *args))


class Job:
    round, cost = 0, 1.0

    def run(self) -> int:
        return 1


def test_each_action_reaches_its_method_in_order() -> None:
    job, metric = Job(), Finished(0, 1, b"h")
    driver = Recorder()
    dispatch([Broadcast(b"f", 6, 1), Send(2, b"g", 3, 1), SetTimer("round/gather:1", 0.5),
              CancelTimer("round/gather:1"), Compute(job), Persist("votes", b"v"),
              Emit(metric)], driver)
    assert driver.calls == [("broadcast", b"f", 6, 1), ("send", 2, b"g", 3, 1),
                            ("set_timer", "round/gather:1", 0.5),
                            ("cancel_timer", "round/gather:1"), ("compute", job),
                            ("persist", "votes", b"v"), ("emit", metric)]


def test_every_driver_fails_on_something_that_is_not_an_action(tmp_path: Path) -> None:
    bogus = [SetTimer("round/gather:0", 1.0), "not an action"]
    with pytest.raises(UnknownAction, match="str"):
        dispatch(bogus, Recorder())
    kit = Kit(1)
    pump = Pump({0: kit.node(0)})
    with pytest.raises(UnknownAction):
        pump.execute(0, bogus)  # type: ignore[arg-type]
    world = SimWorld(parse_scenario({"name": "d", "nodes": {"count": 4},
                                     "workload": {"kind": "linear"},
                                     "training": {"rounds": 1}}))
    with pytest.raises(UnknownAction):
        world.hosts[0].execute(bogus)  # type: ignore[arg-type]
    twins = TwinsRun(TwinsScenario(4, ()))
    with pytest.raises(UnknownAction):  # an instance's driver, as `TwinsRun.feed` uses it
        dispatch(bogus, twins._drivers["0"])

    async def real() -> None:
        host = AsyncHost(kit.node(0), Recorder(), NodeLog(tmp_path / "n.sqlite"))
        try:
            with pytest.raises(UnknownAction):
                host.execute(bogus)  # type: ignore[arg-type]
        finally:
            host.close()

    asyncio.run(real())


def test_every_driver_answers_a_load_at_once_from_its_disk(tmp_path: Path) -> None:
    """`Load` -> `Loaded` with what the disk holds (None where nothing), fed to the node before
    the next action of the batch: the simulated worlds stay deterministic."""
    got: list[tuple[Any, ...]] = []

    def ask(node: Any, execute: Any) -> None:
        node.out = []
        node.load(("votes", "log/7"), got.append)
        (load,) = node.out
        assert isinstance(load, Load)
        execute([load, Emit(Finished(0, 1, b"h"))])

    kit = Kit(1)
    pump = Pump({0: kit.node(0)})
    pump.disks[0]["votes"] = b"v"
    ask(pump.nodes[0], lambda actions: pump.execute(0, actions))
    world = SimWorld(parse_scenario({"name": "d", "nodes": {"count": 4},
                                     "workload": {"kind": "linear"},
                                     "training": {"rounds": 1}}))
    host = world.hosts[0]
    host.start()
    host.disk["votes"] = b"v"
    ask(host.node, host.execute)
    twins = TwinsRun(TwinsScenario(4, ()))
    twins.disks["0"]["votes"] = b"v"
    ask(twins.nodes["0"], lambda actions: dispatch(actions, twins._drivers["0"]))

    async def real() -> None:
        log = NodeLog(tmp_path / "n.sqlite")
        log.write("votes", b"v")
        real_host = AsyncHost(kit.node(0), Recorder(), log)
        try:
            ask(real_host.node, real_host.execute)
        finally:
            real_host.close()

    asyncio.run(real())
    assert got == [(b"v", None)] * 4
