"""Mimic: the colluders copy one honest node's gradient, the one attack that keeps state
(its target) across rounds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from phalanx.engine.byzantine.attacks.base import AttackContext, GradientAttack, check_int
from phalanx.engine.byzantine.attacks.vectors import check_honest, check_own, finite32, mean


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
            check_int(type(self).__name__, "target", self.target, minimum=0)
        check_int(type(self).__name__, "warmup", self.warmup, minimum=1)

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
        cur = mean(vectors)
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
        own = check_own(own)
        if len(honest) == 0:
            return finite32(own)
        vectors = check_honest(own, honest)
        if self.target is not None:
            return finite32(vectors[self.target % len(vectors)])
        if self._first_round is None:
            self._first_round = ctx.round
        if ctx.round != self._last_round:
            self._last_round = ctx.round
            if ctx.round < self._first_round + self.warmup:
                self._warm(vectors)
        if self._target is None or self._target >= len(vectors):
            self._target = self._argmax_along(vectors, self._z)
        return finite32(vectors[self._target])
