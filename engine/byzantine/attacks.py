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

Label flipping is a data-poisoning attack and lives with the workloads, not here.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from statistics import NormalDist
from typing import ClassVar, Literal

import numpy as np

__all__ = [
    "ALIE",
    "GRADIENT_ATTACKS",
    "IPM",
    "AttackContext",
    "ColludingSignFlip",
    "Gaussian",
    "GradientAttack",
    "Mimic",
    "Scaled",
    "SignFlip",
    "alie_z",
    "make_attack",
]

_F32_MAX = float(np.finfo(np.float32).max)

ZRule = Literal["paper", "karimireddy"]
Z_RULES: tuple[str, ...] = ("paper", "karimireddy")


@dataclass(frozen=True)
class AttackContext:
    """What a Byzantine node knows about the round besides the gradients."""

    n: int  # members in the round
    f: int  # Byzantine nodes (colluding)
    round: int
    rng: np.random.Generator  # seeded by the driver, per (node, round)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"AttackContext.n must be >= 1, got {self.n}")
        if not 0 <= self.f <= self.n:
            raise ValueError(f"AttackContext.f must be in [0, n={self.n}], got {self.f}")
        if self.round < 0:
            raise ValueError(f"AttackContext.round must be >= 0, got {self.round}")
        if not isinstance(self.rng, np.random.Generator):
            raise ValueError(
                f"AttackContext.rng must be a numpy.random.Generator, got {type(self.rng).__name__}"
            )


class GradientAttack(ABC):
    """A Byzantine gradient: ``attack(own, honest, ctx)`` returns the vector to send."""

    name: ClassVar[str]
    needs_honest: ClassVar[bool]  # True if it uses the honest gradients of the round

    @abstractmethod
    def __call__(
        self, own: np.ndarray, honest: Sequence[np.ndarray], ctx: AttackContext
    ) -> np.ndarray: ...


# --------------------------------------------------------------------------- helpers


def _check_own(own: np.ndarray) -> np.ndarray:
    a = np.asarray(own)
    if a.ndim != 1:
        raise ValueError(f"own gradient must be 1-D, got shape {a.shape}")
    return a


def _check_honest(own: np.ndarray, honest: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The honest vectors as arrays of own's shape, or [own] when none were given."""
    if len(honest) == 0:
        return [own]
    out = []
    for i, h in enumerate(honest):
        a = np.asarray(h)
        if a.shape != own.shape:
            raise ValueError(
                f"honest gradient {i} has shape {a.shape}, expected {own.shape} (own gradient)"
            )
        out.append(a)
    return out


def _finite32(x: np.ndarray) -> np.ndarray:
    """float32 copy of x with NaN -> 0 and everything else clipped into the float32 range."""
    y = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0, posinf=_F32_MAX, neginf=-_F32_MAX)
    np.clip(y, -_F32_MAX, _F32_MAX, out=y)
    return y.astype(np.float32)


def _mean(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """Coordinate-wise mean in float64, summed left to right (bit-exact across nodes)."""
    total = np.zeros(vectors[0].shape, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # inf inputs: NaN, cleaned by _finite32
        for v in vectors:
            total += v
    return total / len(vectors)


def _std(vectors: Sequence[np.ndarray], mean: np.ndarray) -> np.ndarray:
    """Coordinate-wise sample standard deviation (ddof = 1, as torch.std in the reference
    implementations); zero when there is a single vector."""
    k = len(vectors)
    if k < 2:
        return np.zeros(mean.shape, dtype=np.float64)
    acc = np.zeros(mean.shape, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # inf inputs: NaN, cleaned by _finite32
        for v in vectors:
            d = np.asarray(v, dtype=np.float64) - mean
            acc += d * d
        return np.sqrt(acc / (k - 1))


def _check_real(
    owner: str, name: str, value: object, *, positive: bool = False, nonnegative: bool = False
) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{owner}.{name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{owner}.{name} must be > 0, got {value!r}")
    if nonnegative and value < 0:
        raise ValueError(f"{owner}.{name} must be >= 0, got {value!r}")


def _check_int(owner: str, name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}.{name} must be an integer >= {minimum}, got {value!r}")


# --------------------------------------------------------------------------- attacks


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
        _check_real(type(self).__name__, "scale", self.scale, positive=True)

    def __call__(
        self, own: np.ndarray, honest: Sequence[np.ndarray], ctx: AttackContext
    ) -> np.ndarray:
        own = _check_own(own)
        return _finite32(-float(self.scale) * np.asarray(own, dtype=np.float64))


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
        own = _check_own(own)
        return _finite32(-float(self.scale) * _mean(_check_honest(own, honest)))


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
        _check_real(type(self).__name__, "scale", self.scale)

    def __call__(
        self, own: np.ndarray, honest: Sequence[np.ndarray], ctx: AttackContext
    ) -> np.ndarray:
        own = _check_own(own)
        return _finite32(float(self.scale) * np.asarray(own, dtype=np.float64))


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
        _check_real(type(self).__name__, "sigma", self.sigma, nonnegative=True)

    def __call__(
        self, own: np.ndarray, honest: Sequence[np.ndarray], ctx: AttackContext
    ) -> np.ndarray:
        own = _check_own(own)
        return _finite32(ctx.rng.normal(0.0, float(self.sigma), size=own.shape))


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
            _check_real(type(self).__name__, "z", self.z)
        if self.z_rule not in Z_RULES:
            raise ValueError(
                f"ALIE.z_rule must be one of {', '.join(Z_RULES)}, got {self.z_rule!r}"
            )

    def z_for(self, ctx: AttackContext) -> float:
        return float(self.z) if self.z is not None else alie_z(ctx.n, ctx.f, self.z_rule)

    def __call__(
        self, own: np.ndarray, honest: Sequence[np.ndarray], ctx: AttackContext
    ) -> np.ndarray:
        own = _check_own(own)
        vectors = _check_honest(own, honest)
        mu = _mean(vectors)
        return _finite32(mu - self.z_for(ctx) * _std(vectors, mu))


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
        _check_real(type(self).__name__, "epsilon", self.epsilon, positive=True)

    def __call__(
        self, own: np.ndarray, honest: Sequence[np.ndarray], ctx: AttackContext
    ) -> np.ndarray:
        own = _check_own(own)
        return _finite32(-float(self.epsilon) * _mean(_check_honest(own, honest)))


@dataclass
class Mimic(GradientAttack):
    """Mimic: every Byzantine node sends a copy of one chosen honest node's gradient.

    Karimireddy, He, Jaggi, "Byzantine-Robust Learning on Heterogeneous Datasets via
    Bucketing", ICLR 2022. Copying a real honest gradient cannot be filtered out, yet on
    non-IID data it over-weights one node's data and biases training.

    Target rule (the paper's, as in its code, epfml/byzantine-robust-noniid-optimizer,
    codes/attacks/mimic.py, ``MimicVariantAttacker``): during the first ``warmup`` rounds
    (default 1, the code's default) the attackers estimate the top principal direction z of the
    honest gradients and copy the honest node with the largest ⟨x_i, z⟩ — the one furthest from
    the honest mean along the direction of largest variance; after the warm-up that target is
    fixed. Differences from the reference code, which starts power iteration from a random
    vector: the first round uses the exact top eigenvector (from the k×k Gram matrix of the
    centred honest gradients), oriented so that the most extreme node along it lies on the
    positive side (ties: lowest index); later warm-up rounds take one averaged power step each,
    as in the code. No randomness is used, so every colluder given the same ``honest`` list in
    the same order picks the same target. The target is an index into ``honest``: the driver
    must order it consistently across rounds (e.g. by node id). If the list has become shorter
    than the frozen index, the target is re-picked with the current direction.

    With ``target=i`` it always copies ``honest[i % len(honest)]`` (the plain ``MimicAttacker``
    of the code, and ByzFL's ``Mimic(epsilon=i)``).

    This is the one stateful attack: it keeps (first round, running mean, direction, target)
    and updates them at most once per round. Without honest gradients it falls back to ``[own]``
    (sends ``own``) and leaves its state untouched.
    """

    name: ClassVar[str] = "mimic"
    needs_honest: ClassVar[bool] = True
    target: int | None = None
    warmup: int = 1
    _first_round: int | None = field(default=None, init=False, repr=False, compare=False)
    _last_round: int | None = field(default=None, init=False, repr=False, compare=False)
    _mu: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    _z: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    _steps: int = field(default=0, init=False, repr=False, compare=False)
    _target: int | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.target is not None:
            _check_int(type(self).__name__, "target", self.target, minimum=0)
        _check_int(type(self).__name__, "warmup", self.warmup, minimum=1)

    @property
    def chosen(self) -> int | None:
        """The honest index currently mimicked (None before the first call)."""
        return self.target if self.target is not None else self._target

    @staticmethod
    def _top_direction(vectors: Sequence[np.ndarray], mu: np.ndarray) -> np.ndarray | None:
        """Unit top principal direction of the centred vectors, oriented so that the most
        extreme vector along it is on the positive side; None if they are all equal."""
        with np.errstate(invalid="ignore", over="ignore"):
            centred = [np.asarray(v, dtype=np.float64) - mu for v in vectors]
            k = len(centred)
            gram = np.empty((k, k), dtype=np.float64)
            for i in range(k):
                for j in range(i, k):
                    gram[i, j] = gram[j, i] = float(np.dot(centred[i], centred[j]))
        if not np.all(np.isfinite(gram)):
            return None
        eigvals, eigvecs = np.linalg.eigh(gram)
        if not eigvals[-1] > 0.0:
            return None
        a = eigvecs[:, -1]
        z = np.zeros(mu.shape, dtype=np.float64)
        for ai, c in zip(a, centred, strict=True):
            z += ai * c
        norm = float(np.linalg.norm(z))
        if not (norm > 0.0 and math.isfinite(norm)):
            return None
        z /= norm
        proj = np.array([float(np.dot(c, z)) for c in centred])
        if proj.max() < -proj.min():
            z = -z
        return z

    @staticmethod
    def _argmax_along(vectors: Sequence[np.ndarray], z: np.ndarray | None) -> int:
        if z is None:
            return 0
        with np.errstate(invalid="ignore", over="ignore"):
            scores = [float(np.dot(np.asarray(v, dtype=np.float64), z)) for v in vectors]
        return int(
            np.argmax(np.nan_to_num(scores, nan=-np.inf))
        )  # first maximum: ties go to the lowest index

    def _warm(self, vectors: Sequence[np.ndarray]) -> None:
        cur = _mean(vectors)
        if not np.all(np.isfinite(cur)):  # a non-finite round teaches nothing: keep the state
            self._target = self._argmax_along(vectors, self._z)
            return
        if self._mu is None or self._steps == 0:
            self._mu = cur
            self._z = self._top_direction(vectors, cur)
        else:
            t = self._steps
            self._mu = t / (t + 1) * self._mu + cur / (t + 1)
            if self._z is None:
                self._z = self._top_direction(vectors, self._mu)
            else:
                step = np.zeros(cur.shape, dtype=np.float64)
                for v in vectors:
                    c = np.asarray(v, dtype=np.float64) - self._mu
                    step += float(np.dot(c, self._z)) * c
                snorm = float(np.linalg.norm(step))
                if snorm > 0.0 and math.isfinite(snorm):
                    z = t / (t + 1) * self._z + step / snorm / (t + 1)
                    znorm = float(np.linalg.norm(z))
                    if znorm > 0.0 and math.isfinite(znorm):
                        self._z = z / znorm
        self._steps += 1
        self._target = self._argmax_along(vectors, self._z)

    def __call__(
        self, own: np.ndarray, honest: Sequence[np.ndarray], ctx: AttackContext
    ) -> np.ndarray:
        own = _check_own(own)
        if len(honest) == 0:
            return _finite32(own)
        vectors = _check_honest(own, honest)
        if self.target is not None:
            return _finite32(vectors[self.target % len(vectors)])
        if self._first_round is None:
            self._first_round = ctx.round
        if ctx.round != self._last_round:
            self._last_round = ctx.round
            if ctx.round < self._first_round + self.warmup:
                self._warm(vectors)
        if self._target is None or self._target >= len(vectors):
            self._target = self._argmax_along(vectors, self._z)
        return _finite32(vectors[self._target])


# --------------------------------------------------------------------------- registry

GRADIENT_ATTACKS: dict[str, type[GradientAttack]] = {
    cls.name: cls for cls in (SignFlip, ColludingSignFlip, Scaled, Gaussian, ALIE, IPM, Mimic)
}


def make_attack(name: str, **params: object) -> GradientAttack:
    """Build the attack registered as `name` with its parameters.

    Raises ValueError naming the unknown attack (and listing the known ones), an unknown
    parameter (and listing the attack's parameters), or a bad parameter value.
    """
    if name not in GRADIENT_ATTACKS:
        raise ValueError(
            f"unknown gradient attack {name!r}; known: {', '.join(sorted(GRADIENT_ATTACKS))}"
        )
    cls = GRADIENT_ATTACKS[name]
    known = [f.name for f in fields(cls) if f.init]  # type: ignore[arg-type]
    for p in params:
        if p not in known:
            allowed = ", ".join(known) if known else "none"
            raise ValueError(
                f"unknown parameter {p!r} for gradient attack {name!r}; known: {allowed}"
            )
    return cls(**params)
