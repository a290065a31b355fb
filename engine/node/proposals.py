"""What a round agrees on: a leader's proposal, its digest, and the contributions services put
into it (engine/node/service.py)."""

from __future__ import annotations

import functools

import msgpack

from phalanx.net.crypto import sha256
from phalanx.net.messages import Contribution, Proposal

MAX_VIEW = 2**31  # views past this are refused: they would overflow the wire format later


@functools.lru_cache(maxsize=4096)  # pure; shared by the nodes of one simulation
def set_digest(proposal: Proposal) -> bytes:
    """What a round agrees on (senders and gradient digests, the membership change and the
    services' contributions if it carries them), whichever view proposed it."""
    named = b"".join(s.to_bytes(8, "big", signed=True) + d
                     for s, d in zip(proposal.senders, proposal.digests, strict=True))
    if proposal.contributions:
        # `named` is a whole number of 40-byte entries, so 32 bytes more (a change alone)
        # and 64 more (a change's hash, possibly of b"", and the contributions') never meet
        extras = msgpack.packb([[c.service, c.data] for c in proposal.contributions])
        return sha256(named + sha256(proposal.change) + sha256(extras))
    return sha256(named + sha256(proposal.change) if proposal.change else named)


def form_problem(p: Proposal) -> str | None:
    """What is wrong with a proposal whatever the round: its view, its two lists, and the
    order of its contributions (by service name, one each)."""
    if not 0 <= p.view < MAX_VIEW:
        return "proposal_bad_view"
    if len(p.senders) != len(p.digests):
        return "proposal_too_small"
    if list(p.senders) != sorted(set(p.senders)):
        return "proposal_bad_senders"
    names = [c.service for c in p.contributions]
    if names != sorted(set(names)):
        return "proposal_bad_contributions"
    return None


def contributions(given: dict[str, bytes]) -> tuple[Contribution, ...]:
    """The non-empty contributions, in wire order (by service name)."""
    return tuple(Contribution(name, data) for name, data in sorted(given.items()) if data)
