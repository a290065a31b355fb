"""Omniscient, colluding attacks (``needs_honest = True``): the vector is computed from the
honest gradients of the round, and every colluder given the same list in the same order sends
the same bits. `Mimic`, which also keeps state across rounds, lives in `mimic.py`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import ClassVar, Literal

import numpy as np

from phalanx.engine.byzantine.attacks.base import AttackContext, GradientAttack, check_real
from phalanx.engine.byzantine.attacks.solo import SignFlip
from phalanx.engine.byzantine.attacks.vectors import check_honest, check_own, finite32, mean, std

ZRule = Literal["paper", "karimireddy"]
Z_RULES: tuple[str, ...] = ("paper", "karimireddy")


@dataclass(frozen=True)
class ColludingSignFlip(SignFlip):
    """Colluding sign flipping: send ``−scale · mean(honest)``.

    The omniscient form of `SignFlip`, as ByzFL's ``SignFlipping`` (which cites Allen-Zhu et al.,
    ICLR 2021) computes it. Without honest gradients it falls back to ``[own]``, i.e. to
    ``−scale · own``.
    """

    name: ClassVar[str] = "sign_flip_colluding"
    needs_honest: ClassVar[bool] = True

    def __call__(
        self, own: np.ndarray, honest: Sequence[np.ndarray], ctx: AttackContext
    ) -> np.ndarray:
        own = check_own(own)
        return finite32(-float(self.scale) * mean(check_honest(own, honest)))


def alie_z(n: int, f: int, rule: ZRule = "paper") -> float:
    """The ALIE factor z_max for n members of which f are Byzantine.

    Baruch, Baruch, Goldberg, "A Little Is Enough: Circumventing Defenses For Distributed
    Learning", NeurIPS 2019, Algorithm 3: the attackers need s = ⌊n/2 + 1⌋ − f honest
    "supporters" on their side, and take the largest z with φ(z) < (n − s)/n, where φ is the
    standard normal CDF, i.e.

        rule="paper":        z = Φ⁻¹((n − s) / n)

    The authors' follow-up experiments (Karimireddy, He, Jaggi, ICML 2021, code
    github.com/epfml/byzantine-robust-optimizer, codes/attacks/alittle.py; the same line is in
    epfml/byzantine-robust-noniid-optimizer) count the fraction among the n − f honest nodes
    instead:

        rule="karimireddy":  z = Φ⁻¹((n − f − s) / (n − f))

    For n = 25, f = 5 (s = 8): paper 0.468, karimireddy 0.253 (the "about 0.25" quoted for their
    CIFAR-10 runs). ByzFL (LPD-EPFL/byzfl, ``ALittleIsEnough``) uses a fixed factor
    (tau = 1.5) instead; pass ``z=`` to `ALIE` for that.

    Raises ValueError when z is undefined: the CDF value must lie strictly between 0 and 1,
    which needs f < ⌊n/2 + 1⌋ (Byzantine nodes short of a majority) and n large enough.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"alie_z: n must be an integer >= 1, got {n!r}")
    if isinstance(f, bool) or not isinstance(f, int | np.integer) or not 0 <= f < n:
        raise ValueError(f"alie_z: f must be an integer in [0, n={n}), got {f!r}")
    if rule not in Z_RULES:
        raise ValueError(f"alie_z: unknown rule {rule!r}; known: {', '.join(Z_RULES)}")
    s = math.floor(n / 2 + 1) - f
    p = (n - s) / n if rule == "paper" else (n - f - s) / (n - f)
    if not 0.0 < p < 1.0:
        raise ValueError(
            f"alie_z: undefined for n={n}, f={f} (rule {rule!r}): s = ⌊n/2+1⌋ − f = {s} gives "
            f"CDF value {p:.4g}, which must be strictly between 0 and 1"
        )
    return float(NormalDist().inv_cdf(p))


@dataclass(frozen=True)
class ALIE(GradientAttack):
    """A Little Is Enough: send ``mean(honest) − z · std(honest)``, coordinate-wise.

    Baruch, Baruch, Goldberg, "A Little Is Enough: Circumventing Defenses For Distributed
    Learning", NeurIPS 2019. z is `alie_z` (ctx.n, ctx.f, rule=``z_rule``) unless a fixed ``z`` is
    given. std is the sample standard deviation (ddof = 1, as torch.std in the authors'
    follow-up code and numpy var(ddof=1) in ByzFL). All colluders send the same vector, which
    lies within z standard deviations of the honest mean in every coordinate, so it passes
    coordinate-wise and distance-based filters.

    Without honest gradients it falls back to ``[own]`` (std 0), i.e. sends ``own``; the
    paper's non-omniscient attackers estimate the statistics from the Byzantine nodes' own
    gradients, which the driver can model by passing those as ``honest``.
    """

    name: ClassVar[str] = "alie"
    needs_honest: ClassVar[bool] = True
    z: float | None = None
    z_rule: ZRule = "paper"

    def __post_init__(self) -> None:
        if self.z is not None:
            check_real(type(self).__name__, "z", self.z)
        if self.z_rule not in Z_RULES:
            raise ValueError(
                f"ALIE.z_rule must be one of {', '.join(Z_RULES)}, got {self.z_rule!r}"
            )

    def z_for(self, ctx: AttackContext) -> float:
        return float(self.z) if self.z is not None else alie_z(ctx.n, ctx.f, self.z_rule)

    def __call__(
        self, own: np.ndarray, honest: Sequence[np.ndarray], ctx: AttackContext
    ) -> np.ndarray:
        own = check_own(own)
        vectors = check_honest(own, honest)
        mu = mean(vectors)
        return finite32(mu - self.z_for(ctx) * std(vectors, mu))


@dataclass(frozen=True)
class IPM(GradientAttack):
    """Inner-product manipulation: send ``−ε · mean(honest)``.

    Xie, Koyejo, Gupta, "Fall of Empires: Breaking Byzantine-tolerant SGD by Inner Product
    Manipulation", UAI 2020. ε = ``epsilon`` defaults to 0.1 (small ε slips past median/Krum-type
    rules while making the aggregate's inner product with the true gradient negative); ε = 100
    is the other standard setting (it wrecks the mean). Without honest gradients it falls back
    to ``[own]``, i.e. ``−ε · own``.
    """

    name: ClassVar[str] = "ipm"
    needs_honest: ClassVar[bool] = True
    epsilon: float = 0.1

    def __post_init__(self) -> None:
        check_real(type(self).__name__, "epsilon", self.epsilon, positive=True)

    def __call__(
        self, own: np.ndarray, honest: Sequence[np.ndarray], ctx: AttackContext
    ) -> np.ndarray:
        own = check_own(own)
        return finite32(-float(self.epsilon) * mean(check_honest(own, honest)))
