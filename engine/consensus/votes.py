"""Signed votes of one round, and the certificates a quorum of them makes.

A certificate is the vote frames themselves: anyone holding the members' public keys checks it
without trusting whoever passed it on (`check_certificate`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from phalanx.engine.consensus.quorum import quorum
from phalanx.net.envelope import Envelope
from phalanx.net.errors import DecodeError
from phalanx.net.messages import Vote

Opener = Callable[[bytes], Envelope]
Key = tuple[int, int, bytes, bytes]  # (view, phase, set_digest, model_hash)


@dataclass(frozen=True, slots=True)
class Certificate:
    """A quorum of distinct members' signed votes for one (round, view, phase, set, model)."""

    round: int
    view: int
    phase: int
    set_digest: bytes
    model_hash: bytes
    frames: tuple[bytes, ...]


class VoteBook:
    """The votes received for one round. `add` files a vote and returns the sender's earlier,
    different vote for the same (view, phase) if there is one: that pair is evidence."""

    def __init__(self, round: int, n: int) -> None:
        self.round = round
        self.quorum = quorum(n)
        self._mine: dict[tuple[int, int, int], Envelope] = {}  # (sender, view, phase) -> vote
        self._tally: dict[Key, dict[int, Envelope]] = {}

    def add(self, env: Envelope) -> Envelope | None:
        v: Vote = env.message  # type: ignore[assignment]
        slot = (env.sender, v.view, v.phase)
        earlier = self._mine.get(slot)
        if earlier is not None:
            return earlier if earlier.digest != env.digest else None
        self._mine[slot] = env
        self._tally.setdefault((v.view, v.phase, v.set_digest, v.model_hash), {})[env.sender] = env
        return None

    def drop_sender(self, sender: int) -> None:
        """Forget an excluded member's votes (they no longer count towards any quorum)."""
        for votes in self._tally.values():
            votes.pop(sender, None)

    def count(self, key: Key) -> int:
        return len(self._tally.get(key, ()))

    def certificate(self, key: Key) -> Certificate | None:
        votes = self._tally.get(key)
        if votes is None or len(votes) < self.quorum:
            return None
        view, phase, digest, model = key
        frames = tuple(votes[s].frame for s in sorted(votes)[: self.quorum])
        return Certificate(self.round, view, phase, digest, model, frames)

    def keys(self, phase: int) -> Iterable[Key]:
        return [k for k in self._tally if k[1] == phase]


def check_certificate(frames: tuple[bytes, ...], open: Opener, members: frozenset[int],
                      round: int, phase: int) -> Certificate | str:
    """The certificate these frames make, or why they make none: every frame a validly signed
    vote of `round` and `phase` by a distinct member, all for the same view, set and model, at
    least a quorum of them."""
    votes: list[Envelope] = []
    try:
        votes = [open(f) for f in frames]
    except DecodeError as err:
        return f"certificate_{err.reason}"
    if len(votes) < quorum(len(members)):
        return "certificate_too_small"
    first = votes[0].message
    if not isinstance(first, Vote):
        return "certificate_not_votes"
    senders = set()
    for env in votes:
        v = env.message
        if not isinstance(v, Vote) or (v.round, v.phase) != (round, phase) or (
                v.view, v.set_digest, v.model_hash) != (first.view, first.set_digest,
                                                        first.model_hash):
            return "certificate_mixed_votes"
        if env.sender not in members or env.sender in senders:
            return "certificate_bad_voters"
        senders.add(env.sender)
    return Certificate(round, first.view, phase, first.set_digest, first.model_hash,
                       tuple(frames))
