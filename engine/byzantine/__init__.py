"""Byzantine behaviours a scenario can give to nodes, each active from a round on: gradient
attacks (`attacks/`, wrapped by `gradients.py`), data poisoning and protocol attacks
(`protocol.py`)."""

from __future__ import annotations

from typing import Any

from phalanx.engine.byzantine.base import Behaviour, NodeView
from phalanx.engine.byzantine.gradients import LabelFlip, gradient_behaviours
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


def make_behaviour(name: str, from_round: int = 0, colluders: frozenset[int] = frozenset(),
                   seed: int = 0, **params: Any) -> Behaviour:
    if name not in BEHAVIOURS:
        raise ValueError(f"unknown behaviour {name!r}; known: {', '.join(sorted(BEHAVIOURS))}")
    return BEHAVIOURS[name](from_round, colluders, seed, **params)


__all__ = ["BEHAVIOURS", "Behaviour", "NodeView", "make_behaviour"]
