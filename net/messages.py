"""Message types on the wire.

Each message is a frozen dataclass whose first field is `round` and whose class variable KIND is
its wire tag. The codec is driven by the field annotations, so adding a message is one dataclass
here plus one entry in `_TOP_LEVEL` and in `Message`. Supported annotations: bool, int, float,
str, bytes, `Hash32` (bytes of exactly 32), np.ndarray, `tuple[T, ...]` and nested dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Annotated, ClassVar, TypeAlias, get_args

import numpy as np


@dataclass(frozen=True, slots=True)
class FixedLen:
    """Annotation marker: a bytes field that must be exactly `n` bytes long."""

    n: int


Hash32: TypeAlias = Annotated[bytes, FixedLen(32)]


# eq=False: numpy arrays have no boolean equality (and NaN != NaN), so gradients compare by
# identity; compare digests or `values.tobytes()` when content equality is meant.
@dataclass(frozen=True, slots=True, eq=False)
class Gradient:
    KIND: ClassVar[int] = 1
    round: int
    base_hash: Hash32  # model hash the gradient was computed on
    loss: float
    samples: int
    values: np.ndarray


@dataclass(frozen=True, slots=True)
class Proposal:
    KIND: ClassVar[int] = 2
    round: int
    view: int
    senders: tuple[int, ...]
    digests: tuple[Hash32, ...]


@dataclass(frozen=True, slots=True)
class SyncRequest:
    KIND: ClassVar[int] = 3
    round: int
    from_round: int
    count: int


@dataclass(frozen=True, slots=True)
class RoundRecord:
    """One committed round inside a SyncResponse; never sent on its own (no KIND). The frames
    are the original signed envelopes, so the receiver re-verifies them instead of trusting
    the responder."""

    round: int
    proposal: bytes
    gradients: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class SyncResponse:
    KIND: ClassVar[int] = 4
    round: int
    records: tuple[RoundRecord, ...]


@dataclass(frozen=True, slots=True)
class Head:
    """A node's last committed round, announced when it finishes: the view of the proposal it
    applied, a digest of the gradient set and the model it ended on, so that a peer on another
    fork can tell."""

    KIND: ClassVar[int] = 5
    round: int
    view: int
    set_digest: Hash32
    model_hash: Hash32


Message: TypeAlias = Gradient | Proposal | SyncRequest | SyncResponse | Head

_TOP_LEVEL: tuple[type[Message], ...] = (Gradient, Proposal, SyncRequest, SyncResponse, Head)


def _registry(classes: tuple[type[Message], ...]) -> dict[int, type[Message]]:
    kinds: dict[int, type[Message]] = {}
    for cls in classes:
        # Kind 0 is reserved for nested records; the envelope packs kind as an unsigned 16-bit.
        if not 1 <= cls.KIND <= 0xFFFF or cls.KIND in kinds:
            raise TypeError(f"{cls.__name__}: KIND {cls.KIND} is out of range or taken")
        if fields(cls)[0].name != "round":
            raise TypeError(f"{cls.__name__}: the first field must be `round`")
        kinds[cls.KIND] = cls
    if set(kinds.values()) != set(get_args(Message)):
        raise TypeError("Message and _TOP_LEVEL list different classes")
    return kinds


KINDS: dict[int, type[Message]] = _registry(_TOP_LEVEL)
