"""Preference data as the RLHF stages read it: pairs of token sequences fixed by a committed
curation snapshot, whose root is the data set's identity."""

from __future__ import annotations

from dataclasses import dataclass

from phalanx.net.codec import encode_record
from phalanx.net.crypto import sha256

__all__ = ["Preference", "PreferenceSet"]


@dataclass(frozen=True, slots=True)
class Preference:
    """One labelled comparison: after `prompt`, `chosen` was preferred to `rejected` by the
    aggregated label, with the label's `confidence` in [0, 1]."""

    prompt: tuple[int, ...]
    chosen: tuple[int, ...]
    rejected: tuple[int, ...]
    confidence: float


@dataclass(frozen=True)
class PreferenceSet:
    """The preferences an RLHF run trains on: taken from the curation log committed by
    `round`, whose root (`root`) names the snapshot; `pairs` in task-digest order."""

    root: bytes
    round: int
    pairs: tuple[Preference, ...]

    def digest(self) -> bytes:
        """SHA-256 of the canonical encoding: equal sets, equal digests on every node."""
        return sha256(encode_record(self))

    def __len__(self) -> int:
        return len(self.pairs)

    def identity(self) -> dict[str, str | int]:
        """What names the set in a run's report: the snapshot's root and round, the set's
        digest and its size (equal on every node that committed the same curation log)."""
        return {"root": self.root.hex(), "digest": self.digest().hex(), "pairs": len(self),
                "round": self.round}
