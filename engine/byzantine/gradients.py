"""Gradient attacks as behaviours: the node sends a crafted vector instead of its gradient.

The node computes its honest gradient as usual; the behaviour holds it back and, once the honest
gradients of the round have arrived (for attacks that use them: the omniscient, colluding
threat model of the papers) or `wait` simulated seconds have passed, broadcasts the attack's
vector in its place, signed. The crafted gradient is kept per round, so re-sends (after a view
change) repeat it rather than equivocate. Label flipping poisons the node's data instead.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from phalanx.engine.byzantine.attacks import (
    GRADIENT_ATTACKS,
    AttackContext,
    attack_class,
    make_attack,
)
from phalanx.engine.byzantine.base import Behaviour, NodeView
from phalanx.engine.events import Action, Broadcast, Compute
from phalanx.engine.workloads import GradientJob
from phalanx.net.messages import Gradient


class GradientAttackBehaviour(Behaviour):
    """Send `attack(own, honest, ctx)` instead of the honest gradient."""

    attack_name = ""
    params = ("wait",)

    def __init__(self, from_round: int = 0, colluders: frozenset[int] = frozenset(),
                 seed: int = 0, **params: Any) -> None:
        wait = float(params.pop("wait", 1.0))
        attack_params = {k: params.pop(k) for k in list(params)
                         if k in _attack_fields(self.attack_name)}
        super().__init__(from_round, colluders, seed, **params)
        if not wait >= 0:
            raise ValueError(f"behaviour {self.name!r}: wait must be >= 0 seconds (got {wait})")
        self.wait = wait
        self.attack = make_attack(self.attack_name, **attack_params)
        # round -> (honest gradient, its dense values, since when it is held)
        self._held: dict[int, tuple[Gradient, np.ndarray, float]] = {}
        self._crafted: dict[int, Gradient] = {}

    def rewrite(self, actions: list[Action], node: NodeView) -> list[Action]:
        out: list[Action] = []
        for action in actions:
            if isinstance(action, Broadcast) and action.kind == Gradient.KIND:
                env = node.open(action.frame)
                g: Gradient = env.message  # type: ignore[assignment]
                if g.round in self._crafted:
                    out.append(self._send(node, self._crafted[g.round]))
                else:
                    self._held.setdefault(g.round, (g, node.dense(env), node.now))
                continue
            out.append(action)
        for rnd, (g, own, since) in list(self._held.items()):
            honest = [node.dense(e) for s, e in sorted(node.gradients(rnd).items())
                      if s not in self.colluders]
            complete = len(honest) >= node.n - len(self.colluders)
            if self.attack.needs_honest and not complete and node.now < since + self.wait:
                continue
            del self._held[rnd]
            rng = np.random.default_rng([self.seed, node.id, rnd])
            ctx = AttackContext(node.n, len(self.colluders), rnd, rng)
            crafted = node.with_values(g, self.attack(own, honest, ctx))
            self._crafted[rnd] = crafted
            sent = self._send(node, crafted)
            node.adopt_gradient(node.open(sent.frame))  # so its own proposals name this one
            out.append(sent)
        return out

    @staticmethod
    def _send(node: NodeView, g: Gradient) -> Broadcast:
        return Broadcast(node.sign(g), Gradient.KIND, g.round)


def _attack_fields(name: str) -> set[str]:
    from dataclasses import fields, is_dataclass

    cls = attack_class(name)
    if not is_dataclass(cls):
        return set()
    return {f.name for f in fields(cls) if f.init and not f.name.startswith("_")}


def attack_behaviour(name: str) -> type[Behaviour]:
    """The behaviour that sends gradient attack `name` (a built-in or a user's)."""
    fields_ = tuple(sorted(_attack_fields(name)))
    return type(f"Attack_{name}", (GradientAttackBehaviour,),
                {"name": name, "attack_name": name, "params": ("wait", *fields_)})


def gradient_behaviours() -> dict[str, type[Behaviour]]:
    """One behaviour class per built-in gradient attack, named after it."""
    return {name: attack_behaviour(name) for name in GRADIENT_ATTACKS}


class LabelFlip(Behaviour):
    """Data poisoning: the node trains on flipped labels (Fang et al. 2020 and earlier work
    use it as the weakest, data-level attack) and sends that gradient honestly."""

    name = "label_flip"

    def rewrite(self, actions: list[Action], node: NodeView) -> list[Action]:
        return [Compute(replace(a.job, poisoned=True))
                if isinstance(a, Compute) and isinstance(a.job, GradientJob) else a
                for a in actions]
