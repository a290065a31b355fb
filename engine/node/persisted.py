"""What a node keeps on its disk besides the log of rounds, as typed records.

- `SavedState` ("checkpoint"): where the node stands after its last commit, to restart from;
- `SignedSlots` ("votes"): the slots (round, view, phase) it signed in, written before the
  message leaves, so a restart with this disk never signs a second message for one slot;
- `SavedLock` ("lock"): the prepare certificate it commit-voted on, kept as carefully.

Each is encoded by the wire codec (strict, typed), when a driver writes it to a file: the
node persists the record itself (`Persist(key, record)`), so the simulator, which keeps disks
in memory, never pays for an encoding nobody reads. `read` takes either form; `from_bytes`
also reads the positional msgpack lists that builds before these records wrote, so a node
upgraded mid-run restarts on its old disk; anything else is a `StoreError` with one line
saying which record is bad.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import msgpack
import numpy as np

from phalanx.net.codec import decode_record, encode_record
from phalanx.net.errors import DecodeError
from phalanx.net.messages import Epoch, Hash32

__all__ = ["SavedLock", "SavedState", "SignedSlots", "Slot", "StoreError"]


class StoreError(ValueError):
    """A record on the node's disk is unreadable: the node refuses to start on it."""


R = TypeVar("R")


def _read(cls: type, key: str, blob: bytes, legacy: Any) -> Any:
    try:
        return decode_record(cls, blob)
    except DecodeError as typed:
        try:
            return legacy(msgpack.unpackb(blob))
        except Exception:  # any shape the old layout could not have
            raise StoreError(f"disk record {key!r} is unreadable: {typed}") from None


class _Record:
    """What the three records share: `read` a disk value in either form."""

    __slots__ = ()

    @classmethod
    def read(cls: type[R], value: object) -> R:
        if isinstance(value, cls):
            return value
        if not isinstance(value, bytes):
            raise StoreError(f"disk record of {cls.__name__} is a {type(value).__name__}")
        return cls.from_bytes(value)  # type: ignore[attr-defined, no-any-return]


@dataclass(frozen=True, slots=True)
class SavedState(_Record):
    """The node after its last commit: the next round and its view, the model and the
    optimizer's state, what it sent last (worker momentum, sender Adam's moments) and the
    memberships so far."""

    round: int
    view: int
    model_hash: Hash32
    params: np.ndarray
    velocity: np.ndarray  # the optimizer's state vector
    last_update: np.ndarray  # the last committed aggregate
    worker_momentum: np.ndarray
    epochs: tuple[Epoch, ...]
    sender_adam: bytes  # SenderAdam.to_bytes(), empty without it

    def to_bytes(self) -> bytes:
        return encode_record(self)

    @classmethod
    def from_bytes(cls, blob: bytes) -> SavedState:
        return _read(cls, "checkpoint", blob, _legacy_state)  # type: ignore[no-any-return]


def _legacy_state(fields: list[Any]) -> SavedState:
    round_, view, model_hash, params, velocity, update, momentum, epochs, adam = fields

    def vector(raw: bytes) -> np.ndarray:
        return np.frombuffer(raw, dtype=np.float32).copy()

    return SavedState(round_, view, model_hash, vector(params), vector(velocity),
                      vector(update), vector(momentum),
                      tuple(Epoch(r, tuple(m)) for r, m in epochs), adam)


@dataclass(frozen=True, slots=True)
class Slot:
    round: int
    view: int
    phase: int  # PROPOSE (0), PREPARE or COMMIT


@dataclass(frozen=True, slots=True)
class SignedSlots(_Record):
    slots: tuple[Slot, ...]

    def to_bytes(self) -> bytes:
        return encode_record(self)

    @classmethod
    def from_bytes(cls, blob: bytes) -> SignedSlots:
        return _read(cls, "votes", blob,  # type: ignore[no-any-return]
                     lambda old: cls(tuple(Slot(*(int(x) for x in s)) for s in old)))

    @classmethod
    def of(cls, voted: set[tuple[int, int, int]]) -> SignedSlots:
        return cls(tuple(Slot(*s) for s in sorted(voted)))

    def as_set(self) -> set[tuple[int, int, int]]:
        return {(s.round, s.view, s.phase) for s in self.slots}


@dataclass(frozen=True, slots=True)
class SavedLock(_Record):
    """The prepare certificate (its vote frames) of `round` the node commit-voted on, and the
    leader-signed proposal of that set."""

    round: int
    votes: tuple[bytes, ...]
    proposal: bytes

    def to_bytes(self) -> bytes:
        return encode_record(self)

    @classmethod
    def from_bytes(cls, blob: bytes) -> SavedLock:
        return _read(cls, "lock", blob,  # type: ignore[no-any-return]
                     lambda old: cls(int(old[0]), tuple(bytes(f) for f in old[1]),
                                     bytes(old[2])))
