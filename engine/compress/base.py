"""The uniform compression API: one class per method, all called the same way.

``enc = comp.encode(x, rng)`` turns a 1-D float32 gradient into an :class:`Encoded` (what goes
on the wire); ``comp.decode(enc)`` turns any :class:`Encoded`, honest or not, back into a dense
float32 vector or raises :class:`CompressError`. Decoding is the receiving side of a Byzantine
link, so it validates every part before it computes anything, bounds what it allocates by
``max_size`` and uses elementwise numpy only (no BLAS): every honest node decodes the agreed
payloads itself and the aggregate must come out bit for bit the same everywhere.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from phalanx.engine.aggregate.base import is_int, is_real

MAX_SIZE = 1 << 28
"""Default bound on a payload's claimed length (1 GiB of float32 once decoded)."""

_INDEX_LIMIT = 1 << 32  # sparse payloads' gaps are at most 32 bits wide


class CompressError(ValueError):
    """A malformed encoded payload; `reason` is a short snake_case word counted in metrics."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True, eq=False)
class Encoded:
    """A compressed vector as it travels: built by the wire decoder from untrusted bytes, so it
    checks nothing itself (:meth:`Compressor.decode` does). ``eq=False``: it holds arrays."""

    method: str
    size: int
    parts: tuple[np.ndarray, ...]

    def nbytes(self) -> int:
        """The payload size on the wire (the parts' bytes; method and size are framing)."""
        return sum(int(p.nbytes) for p in self.parts)


COMPRESSORS: dict[str, type[Compressor]] = {}


class Compressor(ABC):
    """Base class of every method. Subclasses set ``name``, ``biased`` and ``n_parts`` and
    implement :meth:`_encode`, :meth:`_decode` and :meth:`_encoded_bytes`; defining ``name``
    registers the class in :data:`COMPRESSORS`.

    ``biased`` is True when E[decode(encode(x))] != x: the sparsifiers that drop entries by
    magnitude, sign, PowerSGD, and also the round-to-nearest casts (fp16, bf16, int8), whose bias
    is at most half a step per entry. Biased methods are meant to run under error feedback.
    """

    name: ClassVar[str]
    biased: ClassVar[bool]
    n_parts: ClassVar[int]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            if cls.name in COMPRESSORS:
                raise TypeError(f"two compressors named {cls.name!r}")
            COMPRESSORS[cls.name] = cls

    def __init__(self, *, max_size: int = MAX_SIZE) -> None:
        self.require(
            is_int(max_size) and 1 <= max_size <= _INDEX_LIMIT,
            f"max_size must be an integer in [1, 2**32]; got {max_size!r}",
        )
        self.max_size = int(max_size)

    # ---- the API -----------------------------------------------------------------------------

    def encode(self, x: np.ndarray, rng: np.random.Generator) -> Encoded:
        """Compress ``x`` (1-D, float, finite, 1..max_size entries; cast to float32).

        Deterministic given ``x`` and the state of ``rng`` (and, for PowerSGD, its warm start).
        Raises ``ValueError`` on a bad ``x`` or when the encoding would overflow float32.
        """
        self.require(
            isinstance(x, np.ndarray) and x.ndim == 1 and x.dtype.kind == "f",
            f"x must be a 1-D float array; got {type(x).__name__} {getattr(x, 'shape', '')}",
        )
        with np.errstate(over="ignore"):  # float64 beyond float32's range: inf, refused below
            x = x.astype(np.float32, copy=False)
        self.require(0 < x.size <= self.max_size, f"x has {x.size} entries, max {self.max_size}")
        self.require(bool(np.isfinite(x).all()), "x contains NaN or infinite values")
        parts = tuple(self._encode(x, rng))
        # A payload that overflowed would be refused by every receiver (and by error feedback's
        # own decode); say so here, where the cause is known.
        for p in parts:
            self.require(p.dtype.kind != "f" or bool(np.isfinite(p).all()),
                         "the encoding overflows float32 (|x| too large)")
        return Encoded(self.name, int(x.size), parts)

    def decode(self, enc: Encoded) -> np.ndarray:
        """A new 1-D float32 array of length ``enc.size``; raises only :class:`CompressError`."""
        if not isinstance(enc, Encoded):
            raise CompressError("not_encoded", type(enc).__name__)
        # Details never format what the sender chose freely: str() of a huge int raises.
        if not isinstance(enc.method, str) or enc.method != self.name:
            raise CompressError("wrong_method", f"a payload for another method sent to {self.name}")
        size = enc.size
        if not is_int(size):
            raise CompressError("bad_size", f"size is a {type(size).__name__}, not an integer")
        if size <= 0:
            raise CompressError("bad_size", "size <= 0")
        if size > self.max_size:
            raise CompressError("too_large", f"size > {self.max_size}")
        parts = enc.parts
        if not isinstance(parts, tuple) or len(parts) != self.n_parts:
            raise CompressError("wrong_parts", f"{self.name} takes {self.n_parts} parts")
        if not all(isinstance(p, np.ndarray) for p in parts):
            raise CompressError("wrong_type", "parts must be numpy arrays")
        # Overflow (a huge scale times a big quantum, say) shows up as inf and is refused below.
        with np.errstate(all="ignore"):
            out = self._decode(int(size), parts)
        if not np.isfinite(out).all():
            raise CompressError("non_finite", "the decoded vector has NaN or infinite values")
        return out

    def ratio(self, size: int) -> float:
        """Dense bytes (4 * size) over the expected encoded bytes, for reports."""
        self.require(is_int(size) and size > 0, f"size must be an integer > 0; got {size!r}")
        return 4.0 * size / self._encoded_bytes(int(size))

    # ---- what a method implements -----------------------------------------------------------

    @abstractmethod
    def _encode(self, x: np.ndarray, rng: np.random.Generator) -> Sequence[np.ndarray]:
        """The parts for a validated 1-D float32 ``x``."""

    @abstractmethod
    def _decode(self, size: int, parts: tuple[np.ndarray, ...]) -> np.ndarray:
        """Check ``parts`` (right count of ndarrays, ``0 < size <= max_size``, already checked)
        with :func:`part` and friends, then return the float32 vector; finiteness is checked by
        the caller."""

    @abstractmethod
    def _encoded_bytes(self, size: int) -> float:
        """The payload bytes :meth:`encode` produces for ``size`` entries."""

    def require(self, ok: bool, message: str) -> None:
        """Raise ``ValueError("<name>: <message>")`` unless ``ok``."""
        if not ok:
            raise ValueError(f"{getattr(self, 'name', type(self).__name__)}: {message}")

    def require_real(self, param: str, value: float, low: float, high: float) -> float:
        """``value`` as a finite float in (low, high], or ``ValueError`` naming ``param``."""
        self.require(
            is_real(value) and math.isfinite(value) and low < value <= high,
            f"{param} must be a finite number in ({low:g}, {high:g}]; got {value!r}",
        )
        return float(value)

    def require_int(self, param: str, value: int, low: int) -> int:
        """``value`` as an int >= low, or ``ValueError`` naming ``param``."""
        self.require(is_int(value) and value >= low,
                     f"{param} must be an integer >= {low}; got {value!r}")
        return int(value)


def part(parts: tuple[np.ndarray, ...], i: int, dtype: type, shape: tuple[int | None, ...]
         ) -> np.ndarray:
    """``parts[i]`` if it has exactly ``dtype`` (native byte order) and ``shape`` (``None``
    matches any length), else :class:`CompressError` ``wrong_dtype`` / ``wrong_shape``."""
    a = parts[i]
    if a.dtype != np.dtype(dtype):
        raise CompressError("wrong_dtype", f"part {i} is {a.dtype}, expected {np.dtype(dtype)}")
    if a.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, a.shape,
                                                                            strict=True)):
        raise CompressError("wrong_shape", f"part {i} has shape {a.shape}, expected {shape}")
    return a


def make_compressor(name: str, **params: Any) -> Compressor:
    """Build the method ``name`` with ``params``; ``ValueError`` names an unknown method, an
    unknown or missing parameter, or a bad value."""
    if not isinstance(name, str) or name not in COMPRESSORS:
        names = ", ".join(sorted(COMPRESSORS))
        raise ValueError(f"unknown compressor {name!r}; choose one of: {names}")
    cls = COMPRESSORS[name]
    signature = inspect.signature(cls).parameters
    for key in params:
        if key not in signature:
            raise ValueError(
                f"{name} has no parameter {key!r}; its parameters: {', '.join(signature)}"
            )
    for key, p in signature.items():
        if p.default is inspect.Parameter.empty and key not in params:
            raise ValueError(f"{name} needs the parameter {key!r}")
    return cls(**params)
