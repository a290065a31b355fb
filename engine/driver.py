"""The one place where a node's actions are told apart: `dispatch(actions, driver)`.

Every driver (the SimPy world, Twins, the real asyncio host, the tests' pump) implements the
eight methods of `Driver` and hands each batch a node returns to `dispatch`, so adding an
action means one case here and one method per driver, and an action a driver does not know
fails at once (`UnknownAction`) instead of being dropped on the floor.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from phalanx.engine.events import (
    Action,
    Broadcast,
    CancelTimer,
    Compute,
    Emit,
    Job,
    Load,
    Metric,
    Persist,
    Send,
    SetTimer,
    Stored,
)


class UnknownAction(TypeError):
    """A node returned something that is not an action this module knows."""


class Driver(Protocol):
    """What carries out a node's actions in one world."""

    def broadcast(self, frame: bytes, kind: int, round: int) -> None: ...

    def send(self, peer: int, frame: bytes, kind: int, round: int) -> None: ...

    def set_timer(self, name: str, delay: float) -> None: ...

    def cancel_timer(self, name: str) -> None: ...

    def compute(self, job: Job) -> None: ...

    def persist(self, key: str, value: Stored) -> None: ...

    def emit(self, metric: Metric) -> None: ...

    def load(self, token: int, keys: tuple[str, ...]) -> None:
        """Answer with `Loaded(token, values)` fed to the node: at once (a simulated world,
        so a run stays a pure function of its seed) or as soon as the read is done."""


def dispatch(actions: Iterable[Action | Any], driver: Driver) -> None:
    """Carry out `actions` in order on `driver`."""
    for action in actions:
        match action:
            case Broadcast(frame, kind, rnd):
                driver.broadcast(frame, kind, rnd)
            case Send(peer, frame, kind, rnd):
                driver.send(peer, frame, kind, rnd)
            case SetTimer(name, delay):
                driver.set_timer(name, delay)
            case CancelTimer(name):
                driver.cancel_timer(name)
            case Compute(job):
                driver.compute(job)
            case Persist(key, value):
                driver.persist(key, value)
            case Emit(metric):
                driver.emit(metric)
            case Load(token, keys):
                driver.load(token, keys)
            case _:
                raise UnknownAction(f"not an action: {type(action).__name__}")
