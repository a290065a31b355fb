"""Byzantine behaviours a scenario can give to nodes, each active from a round on.

A behaviour wraps an honest node: it sees the actions the honest logic produced and may change
them. This is the hook the consensus issue fills with gradient and protocol attacks; the
behaviours here are the ones a crash-fault round can already exercise.
"""

from __future__ import annotations

from phalanx.engine.events import Action, Broadcast, Send


class Behaviour:
    """Honest: passes every action through."""

    name = "honest"

    def __init__(self, from_round: int = 0) -> None:
        self.from_round = from_round

    def active(self, round: int) -> bool:
        return round >= self.from_round

    def outgoing(self, actions: list[Action], round: int) -> list[Action]:
        return actions


class Silent(Behaviour):
    """Withholds every message once active: alive, computing, but never heard from."""

    name = "silent"

    def outgoing(self, actions: list[Action], round: int) -> list[Action]:
        if not self.active(round):
            return actions
        return [a for a in actions if not isinstance(a, Send | Broadcast)]


BEHAVIOURS: dict[str, type[Behaviour]] = {"honest": Behaviour, "silent": Silent}


def make_behaviour(name: str, from_round: int = 0) -> Behaviour:
    if name not in BEHAVIOURS:
        raise ValueError(f"unknown behaviour {name!r}; known: {', '.join(sorted(BEHAVIOURS))}")
    return BEHAVIOURS[name](from_round)
