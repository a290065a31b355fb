"""Equivocation: two messages signed by one sender for the same slot with different contents.

A slot is what an honest node says exactly once: its gradient of a round (re-sent copies carry
the same payload, so the same digest), the leader's proposal of a (round, view), a vote of a
(round, view, phase). Two signed envelopes for one slot with different payload digests are a
self-contained proof that any node can check with the sender's public key alone.
"""

from __future__ import annotations

from phalanx.net.envelope import Envelope
from phalanx.net.messages import Gradient, Proposal, Vote

Slot = tuple[int, ...]


def slot_of(env: Envelope) -> Slot | None:
    """The slot an envelope fills, or None for messages that may legitimately differ."""
    m = env.message
    if isinstance(m, Gradient):
        return (Gradient.KIND, env.sender, m.round)
    if isinstance(m, Proposal):
        return (Proposal.KIND, env.sender, m.round, m.view)
    if isinstance(m, Vote):
        return (Vote.KIND, env.sender, m.round, m.view, m.phase)
    return None


def conflicting(first: Envelope, second: Envelope) -> bool:
    """True if the two (already signature-checked) envelopes prove that their sender
    equivocated."""
    slot = slot_of(first)
    return slot is not None and slot == slot_of(second) and first.digest != second.digest
