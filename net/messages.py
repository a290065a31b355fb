"""Message types on the wire.

Each message is a frozen dataclass whose first field is `round` and whose class variable KIND is
its wire tag. The codec is driven by the field annotations, so adding a core message is one
dataclass here plus one entry in `_TOP_LEVEL` and in `Message`; a node service brings its own
message classes, which the codec adds to a node's `MessageSet` (net/codec.py). Supported
annotations: bool, int, float, str, bytes, `Hash32` (bytes of exactly 32), np.ndarray,
`tuple[T, ...]` and nested dataclasses, and `OmitWhenEmpty` on a message's last fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, is_dataclass
from types import MappingProxyType
from typing import Annotated, ClassVar, TypeAlias, get_args

import numpy as np


@dataclass(frozen=True, slots=True)
class FixedLen:
    """Annotation marker: a bytes field that must be exactly `n` bytes long."""

    n: int


Hash32: TypeAlias = Annotated[bytes, FixedLen(32)]


@dataclass(frozen=True, slots=True)
class OmitWhenEmpty:
    """Annotation marker for fields added at the end of a message: while empty they are left
    out of the payload, so frames of messages that do not use them keep their bytes. The
    encoding stays canonical: a payload may end before such a field, never carry it empty."""


# eq=False: numpy arrays have no boolean equality (and NaN != NaN), so gradients compare by
# identity; compare digests or `values.tobytes()` when content equality is meant.
@dataclass(frozen=True, slots=True, eq=False)
class Gradient:
    """A gradient (or worker momentum) and what it was computed on. Dense, `values` holds it;
    compressed (engine/compress), `encoding` names the method, `parts` carries its payload and
    `values` is empty."""

    KIND: ClassVar[int] = 1
    round: int
    base_hash: Hash32  # model hash the gradient was computed on
    loss: float
    samples: int
    values: np.ndarray
    encoding: str = ""
    size: int = 0  # the dense length a compressed payload stands for
    parts: tuple[np.ndarray, ...] = ()


@dataclass(frozen=True, slots=True)
class Contribution:
    """A node service's part of a proposal (nested, never sent on its own): the service's name
    and what it puts to the round, e.g. the root of a replicated log's snapshot."""

    service: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Proposal:
    """The leader's set for (round, view). `justify` is empty for a fresh set, or the signed
    prepare votes of a quorum for this same set in an earlier view (a prepare certificate):
    the proof that lets nodes locked on it, or on an older set, vote for it again.

    `change` is the membership service's contribution, a signed MemberChange frame the round
    also agrees on (empty for none): it takes effect from the next round, at every node that
    commits this one. `contributions` are the other services' (engine/node/service.py), sorted
    by service name, one each at most."""

    KIND: ClassVar[int] = 2
    round: int
    view: int
    senders: tuple[int, ...]
    digests: tuple[Hash32, ...]
    justify: tuple[bytes, ...] = ()
    change: bytes = b""
    contributions: Annotated[tuple[Contribution, ...], OmitWhenEmpty()] = ()


@dataclass(frozen=True, slots=True)
class SyncRequest:
    KIND: ClassVar[int] = 3
    round: int
    from_round: int
    count: int


@dataclass(frozen=True, slots=True)
class RoundRecord:
    """One committed round, as logged and as sent inside a SyncResponse (no KIND: never sent on
    its own). The frames are the original signed envelopes, so the receiver re-verifies them
    instead of trusting the responder: the leader's proposal, the gradients it names, and the
    commit certificate (a quorum of signed commit votes over round, set digest and the model
    hash after the round)."""

    round: int
    proposal: bytes
    gradients: tuple[bytes, ...]
    certificate: tuple[bytes, ...]
    # the prepare certificate of the committed set in the commit's view, when the node held it
    # (empty otherwise): not needed to verify the round, kept as evidence should forks appear
    prepared: tuple[bytes, ...] = ()

    def frames(self) -> tuple[bytes, ...]:
        """Every signed frame of the record."""
        return (self.proposal, *self.gradients, *self.certificate, *self.prepared)


@dataclass(frozen=True, slots=True)
class SyncResponse:
    KIND: ClassVar[int] = 4
    round: int
    records: tuple[RoundRecord, ...]


PREPARE, COMMIT = 1, 2


@dataclass(frozen=True, slots=True)
class Vote:
    """A signed vote of one phase. PREPARE: `model_hash` is the model the set is applied to;
    COMMIT: the model after applying it (what a commit certificate vouches for).

    `justify_view` (PREPARE) is the view of the prepare certificate the voter relies on for this
    set: its lock when the lock names the same set, or the proposal's justification, whichever
    is later; -1 for none (and for COMMIT votes). It makes a broken lock provable: a member that
    commit-voted one set in view v and later prepare-voted another set citing a view below v
    signed both halves of the proof itself."""

    KIND: ClassVar[int] = 6
    round: int
    view: int
    phase: int
    set_digest: Hash32
    model_hash: Hash32
    justify_view: int = -1


@dataclass(frozen=True, slots=True)
class ViewChange:
    """The sender gave up on the views of `round` below `view`. `lock` is the highest prepare
    certificate it knows for the round (signed vote frames, empty if none) and `proposal` the
    leader-signed proposal of that set (empty if none), so the next leader and every peer learn
    of a set that may have committed somewhere and can propose it again."""

    KIND: ClassVar[int] = 7
    round: int
    view: int
    lock: tuple[bytes, ...]
    proposal: bytes


@dataclass(frozen=True, slots=True)
class Evidence:
    """Proof of equivocation: two frames signed by one sender for the same slot (a gradient of
    a round, a proposal of a view, a vote of a phase) with different contents."""

    KIND: ClassVar[int] = 8
    round: int
    first: bytes
    second: bytes


@dataclass(frozen=True, slots=True)
class Fetch:
    """Asks a peer for the gradients of `round` it holds from `senders` (a node that holds a
    proposal but not every gradient it names: lost, or the sender told it something else)."""

    KIND: ClassVar[int] = 9
    round: int
    senders: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Frames:
    """The answer to a Fetch: original signed gradient frames, re-verified by the receiver."""

    KIND: ClassVar[int] = 10
    round: int
    frames: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Certified:
    """A quorum of signed votes of one phase, collected by the view's leader when votes go to
    it rather than to everyone (linear voting, for large n); checked like any certificate."""

    KIND: ClassVar[int] = 11
    round: int
    phase: int
    votes: tuple[bytes, ...]



@dataclass(frozen=True, slots=True)
class CheckpointRequest:
    """A node far behind asks for a peer's state instead of every round it missed."""

    KIND: ClassVar[int] = 12
    round: int  # the asker's round


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A node's training state at the start of `round`, with the record of round - 1 whose
    commit certificate names the model hash `params` must have. The optimizer's state is not
    covered by that hash: the asker adopts a state only when f + 1 peers sent the same one."""

    KIND: ClassVar[int] = 13
    round: int
    record: RoundRecord
    params: np.ndarray
    velocity: np.ndarray  # the optimizer's state vector
    last_update: np.ndarray  # the last committed aggregate
    # the memberships so far: the last one certified `record`, and the record's proposal may
    # name a change that the asker applies itself
    epochs: tuple[Epoch, ...] = ()


JOIN, LEAVE = 1, 2


@dataclass(frozen=True, slots=True)
class Epoch:
    """The membership from `round` on (nested in checkpoints; never sent on its own)."""

    round: int
    members: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class MemberChange:
    """Signed by the node it concerns: it asks to JOIN the members (an observer whose key the
    members file lists) or to LEAVE them. `epoch` counts the changes applied before it, so a
    request is good for one membership only and cannot be replayed after a later change."""

    KIND: ClassVar[int] = 14
    round: int
    epoch: int
    op: int
Message: TypeAlias = (Gradient | Proposal | SyncRequest | SyncResponse | Vote | ViewChange
                      | Evidence | Fetch | Frames | Certified | CheckpointRequest | Checkpoint
                      | MemberChange)

# KIND 5 (Head, the fork announcements of the crash-fault protocol) is retired, never reused.
_TOP_LEVEL: tuple[type[Message], ...] = (Gradient, Proposal, SyncRequest, SyncResponse, Vote,
                                         ViewChange, Evidence, Fetch, Frames, Certified,
                                         CheckpointRequest, Checkpoint, MemberChange)


def kinds_of(classes: Iterable[type]) -> dict[int, type]:
    """Kind -> class for message classes, checked: a KIND in 1..65535 (0 is for nested
    records; the envelope packs kind as an unsigned 16-bit), distinct, `round` first. The same
    class listed twice counts once."""
    kinds: dict[int, type] = {}
    for cls in classes:
        kind = getattr(cls, "KIND", None)
        if type(kind) is not int or not 1 <= kind <= 0xFFFF:
            raise TypeError(f"{cls.__name__}: KIND {kind!r} is not an int in 1..65535")
        if kinds.get(kind, cls) is not cls:
            raise TypeError(f"{cls.__name__}: KIND {kind} is taken by {kinds[kind].__name__}")
        if not is_dataclass(cls) or fields(cls)[0].name != "round":
            raise TypeError(f"{cls.__name__}: a message is a dataclass whose first field is "
                            f"`round`")
        kinds[kind] = cls
    return kinds


KINDS: Mapping[int, type[Message]] = MappingProxyType(kinds_of(_TOP_LEVEL))
if set(KINDS.values()) != set(get_args(Message)):
    raise TypeError("Message and _TOP_LEVEL list different classes")
