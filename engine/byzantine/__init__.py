"""Byzantine behaviours a scenario can give to nodes, each active from a round on: gradient
attacks (`attacks/`, wrapped by `gradients.py`), data poisoning and protocol attacks
(`protocol.py`)."""

from __future__ import annotations

from typing import Any

from phalanx.engine.byzantine.attacks import GradientAttack
from phalanx.engine.byzantine.base import Behaviour, NodeView
from phalanx.engine.byzantine.gradients import LabelFlip, attack_behaviour, gradient_behaviours
from phalanx.engine.byzantine.protocol import (
    BadSignature,
    BogusChange,
    CensorChanges,
    DoubleVote,
    Equivocate,
    FakeDigests,
    Late,
    OmitHonest,
    Replay,
    Silent,
)

BEHAVIOURS: dict[str, type[Behaviour]] = {
    "honest": Behaviour,
    **gradient_behaviours(),
    "label_flip": LabelFlip,
    **{cls.name: cls for cls in (Silent, Equivocate, DoubleVote, Late, BadSignature, Replay,
                                 OmitHonest, FakeDigests, CensorChanges, BogusChange)},
}


def behaviour_class(name: str) -> type[Behaviour]:
    """The behaviour called `name`: a built-in, or a user's from engine/plugins.py (an entry
    point in `phalanx.attacks` or `module:Class`): a `Behaviour` subclass as it is, a
    `GradientAttack` sent in place of the node's gradient as the built-in attacks are."""
    from phalanx.engine.plugins import resolve

    cls = resolve("attacks", name, BEHAVIOURS, (Behaviour, GradientAttack), "behaviour")
    return attack_behaviour(name) if issubclass(cls, GradientAttack) else cls  # type: ignore[arg-type,return-value]


def make_behaviour(name: str, from_round: int = 0, colluders: frozenset[int] = frozenset(),
                   seed: int = 0, **params: Any) -> Behaviour:
    return behaviour_class(name)(from_round, colluders, seed, **params)


__all__ = ["BEHAVIOURS", "Behaviour", "NodeView", "behaviour_class", "make_behaviour"]
