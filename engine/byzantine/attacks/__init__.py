"""Gradient attacks of Byzantine nodes: the vector a Byzantine node sends instead of its gradient.

Every attack is a callable object with one signature,

    attack(own, honest, ctx) -> np.ndarray

where `own` is the attacker's own honestly computed gradient (float32, 1-D), `honest` the honest
nodes' gradients of the round (given to attacks with ``needs_honest = True``: the omniscient,
colluding threat model of the papers; it may be empty for the others) and `ctx` the round's
`AttackContext` (n, f, round and the driver's seeded rng for this node and round). The output is
float32, has the shape of `own` and is always finite: results are computed in float64, NaN
becomes 0 and values beyond the float32 range are clipped to it.

The functions do no I/O and use no global randomness: the only random source is ``ctx.rng``.
All attacks except `Mimic` are pure functions of their inputs; `Mimic` keeps the target it
picked (see its docstring). Reductions over `honest` run left to right in float64, so every
colluding node given the same list in the same order computes bit-identical vectors.

Modules: `base` (context, interface, parameter checks), `vectors` (shared float64 math),
`solo` (attacks from the node's own gradient or noise), `colluding` (attacks from the honest
gradients), `mimic` (the stateful copy attack); this package holds the registry.
Label flipping is a data-poisoning attack and lives with the workloads, not here.
"""

from __future__ import annotations

from dataclasses import fields

from phalanx.engine.byzantine.attacks.base import AttackContext, GradientAttack
from phalanx.engine.byzantine.attacks.colluding import (
    ALIE,
    IPM,
    Z_RULES,
    ColludingSignFlip,
    ZRule,
    alie_z,
)
from phalanx.engine.byzantine.attacks.mimic import Mimic
from phalanx.engine.byzantine.attacks.solo import Gaussian, Scaled, SignFlip

__all__ = [
    "ALIE",
    "GRADIENT_ATTACKS",
    "IPM",
    "Z_RULES",
    "AttackContext",
    "ColludingSignFlip",
    "Gaussian",
    "GradientAttack",
    "Mimic",
    "Scaled",
    "SignFlip",
    "ZRule",
    "alie_z",
    "attack_class",
    "make_attack",
]

GRADIENT_ATTACKS: dict[str, type[GradientAttack]] = {
    cls.name: cls for cls in (SignFlip, ColludingSignFlip, Scaled, Gaussian, ALIE, IPM, Mimic)
}


def attack_class(name: str) -> type[GradientAttack]:
    """The attack called `name`: a built-in, or a user's (engine/plugins.py: an entry point
    in `phalanx.attacks`, or `module:Class`). ValueError naming the known ones otherwise."""
    from phalanx.engine.plugins import resolve

    return resolve("attacks", name, GRADIENT_ATTACKS, GradientAttack,  # type: ignore[return-value]
                   "gradient attack")


def make_attack(name: str, **params: object) -> GradientAttack:
    """Build the attack registered as `name` (a built-in or a user's) with its parameters.

    Raises ValueError naming the unknown attack (and listing the known ones), an unknown
    parameter (and listing the attack's parameters), or a bad parameter value.
    """
    cls = attack_class(name)
    known = [f.name for f in fields(cls) if f.init]  # type: ignore[arg-type]
    for p in params:
        if p not in known:
            allowed = ", ".join(known) if known else "none"
            raise ValueError(
                f"unknown parameter {p!r} for gradient attack {name!r}; known: {allowed}"
            )
    return cls(**params)
