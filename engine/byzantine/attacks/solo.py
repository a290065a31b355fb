"""Attacks a Byzantine node mounts alone, from its own gradient or from noise
(``needs_honest = False``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from phalanx.engine.byzantine.attacks.base import AttackContext, GradientAttack, check_real
from phalanx.engine.byzantine.attacks.vectors import check_own, finite32


@dataclass(frozen=True)
class SignFlip(GradientAttack):
    """Sign flipping: send ``−scale · own``.

    The classic "bit/sign flipping" Byzantine worker, e.g. Allen-Zhu, Ebrahimianghazani, Li,
    Alistarh, "Byzantine-Resilient Non-Convex Stochastic Gradient Descent", ICLR 2021, and the
    "BF" attack of Karimireddy, He, Jaggi, "Learning from History for Byzantine Robust
    Optimization", ICML 2021. ``scale`` defaults to 1. Uses only the node's own gradient; the
    colluding variant that flips the honest mean is `ColludingSignFlip` ("sign_flip_colluding").
    """

    name: ClassVar[str] = "sign_flip"
    needs_honest: ClassVar[bool] = False
    scale: float = 1.0

    def __post_init__(self) -> None:
        check_real(type(self).__name__, "scale", self.scale, positive=True)

    def __call__(
        self, own: np.ndarray, honest: Sequence[np.ndarray], ctx: AttackContext
    ) -> np.ndarray:
        own = check_own(own)
        return finite32(-float(self.scale) * np.asarray(own, dtype=np.float64))


@dataclass(frozen=True)
class Scaled(GradientAttack):
    """Large-norm attack: send ``λ · own`` with λ = ``scale`` (default 100).

    The gradient-scaling / "omniscient large-norm" attack used against plain averaging, e.g.
    the scaled gradients of Xie, Koyejo, Gupta, "Generalized Byzantine-tolerant SGD",
    arXiv:1802.10116 (2018), and model-replacement boosting in Bagdasaryan et al., "How To
    Backdoor Federated Learning", AISTATS 2020. Uses only the node's own gradient.
    """

    name: ClassVar[str] = "scaled"
    needs_honest: ClassVar[bool] = False
    scale: float = 100.0

    def __post_init__(self) -> None:
        check_real(type(self).__name__, "scale", self.scale)

    def __call__(
        self, own: np.ndarray, honest: Sequence[np.ndarray], ctx: AttackContext
    ) -> np.ndarray:
        own = check_own(own)
        return finite32(float(self.scale) * np.asarray(own, dtype=np.float64))


@dataclass(frozen=True)
class Gaussian(GradientAttack):
    """Pure noise: send a vector drawn from N(0, σ² I), σ = ``sigma`` (default 200).

    Xie, Koyejo, Gupta, "Generalized Byzantine-tolerant SGD", arXiv:1802.10116 (2018) replace
    Byzantine gradients by Gaussian vectors with zero mean and isotropic covariance of standard
    deviation 200; that is the default here. (Some libraries default to σ = 1, which is a much
    weaker, easily filtered attack.) Draws only from ``ctx.rng``, so it is reproducible from the
    driver's seed; the own gradient is used only for its shape.
    """

    name: ClassVar[str] = "gaussian"
    needs_honest: ClassVar[bool] = False
    sigma: float = 200.0

    def __post_init__(self) -> None:
        check_real(type(self).__name__, "sigma", self.sigma, nonnegative=True)

    def __call__(
        self, own: np.ndarray, honest: Sequence[np.ndarray], ctx: AttackContext
    ) -> np.ndarray:
        own = check_own(own)
        return finite32(ctx.rng.normal(0.0, float(self.sigma), size=own.shape))
