"""What a Byzantine behaviour sees of its node, and the honest behaviour every other extends.

A behaviour wraps an honest node: the node's logic runs as usual and the behaviour rewrites the
actions it returns (drops, alters, re-signs, duplicates them) from `from_round` on. It signs
with the node's own key, so everything it sends is attributable to that node, as a real
attacker's messages would be.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

import numpy as np

from phalanx.engine.events import Action
from phalanx.net.envelope import Envelope
from phalanx.net.messages import Gradient, Message


class NodeView(Protocol):
    """The parts of a Node a behaviour uses."""

    id: int
    round: int
    n: int
    f: int
    now: float
    members: tuple[int, ...]

    def sign(self, message: Message) -> bytes: ...

    def dense(self, env: Envelope) -> np.ndarray: ...

    def with_values(self, g: Gradient, values: np.ndarray) -> Gradient: ...

    def open(self, frame: bytes) -> Envelope: ...

    def gradients(self, round: int) -> Mapping[int, Envelope]: ...

    def adopt_gradient(self, env: Envelope) -> None: ...


class Behaviour:
    """Honest: passes every action through."""

    name: ClassVar[str] = "honest"
    params: ClassVar[tuple[str, ...]] = ()  # the scenario parameters it accepts

    def __init__(self, from_round: int = 0, colluders: frozenset[int] = frozenset(),
                 seed: int = 0, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            allowed = ", ".join(self.params) or "none"
            raise ValueError(f"behaviour {self.name!r}: unknown parameter {unknown[0]!r} "
                             f"(allowed: {allowed})")
        self.from_round = from_round
        self.colluders = colluders  # every Byzantine node of the scenario, this one included
        self.seed = seed

    def active(self, round: int) -> bool:
        return round >= self.from_round

    def outgoing(self, actions: list[Action], node: NodeView) -> list[Action]:
        if not self.active(node.round):
            return actions
        return self.rewrite(actions, node)

    def rewrite(self, actions: list[Action], node: NodeView) -> list[Action]:
        return actions
