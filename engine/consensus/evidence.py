"""Equivocation: two messages signed by one sender that no honest node would sign both of.

A slot is what an honest node says exactly once: its gradient of a round (re-sent copies carry
the same payload, so the same digest), the leader's proposal of a (round, view), a vote of a
(round, view, phase). Two signed envelopes for one slot with different payload digests are a
self-contained proof that any node can check with the sender's public key alone.

A broken lock is the other proof: a commit vote for set A in view v, and a prepare vote of the
same round for another set in a later view citing a justification older than v (see
`Vote.justify_view`). An honest node locks on A when it commit-votes, and prepares another set
later only with a prepare certificate from view v or later. Forks whose two commit
certificates come from different views are attributed this way (Sheng et al., "BFT Protocol
Forensics", CCS 2021, do the same for HotStuff).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

from phalanx.net.envelope import Envelope
from phalanx.net.errors import DecodeError
from phalanx.net.messages import COMMIT, PREPARE, Gradient, Proposal, RoundRecord, Vote

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
    equivocated: one slot filled twice, or a broken lock (in either order)."""
    slot = slot_of(first)
    if slot is not None and slot == slot_of(second):
        return first.digest != second.digest
    return broke_lock(first, second) or broke_lock(second, first)


def broke_lock(commit: Envelope, prepare: Envelope) -> bool:
    """`commit` votes for set A in view v; `prepare`, by the same member in the same round,
    votes for another set in a later view with a justification older than v."""
    c, p = commit.message, prepare.message
    return (isinstance(c, Vote) and isinstance(p, Vote) and commit.sender == prepare.sender
            and c.round == p.round and c.phase == COMMIT and p.phase == PREPARE
            and p.view > c.view and p.set_digest != c.set_digest and p.justify_view < c.view)


def equivocations(envelopes: Iterable[Envelope]) -> Iterator[tuple[Envelope, Envelope]]:
    """Pairs among `envelopes` (e.g. the frames of two logs) that each prove their signer
    equivocated: a slot filled twice, or a broken lock."""
    first: dict[Slot, Envelope] = {}
    commits: dict[tuple[int, int], list[Envelope]] = {}  # (sender, round) -> commit votes
    prepares: dict[tuple[int, int], list[Envelope]] = {}
    for env in envelopes:
        slot = slot_of(env)
        if slot is None:
            continue
        seen = first.get(slot)
        if seen is not None:
            if seen.digest != env.digest:
                yield seen, env
            continue
        first[slot] = env
        if isinstance(v := env.message, Vote) and v.phase in (COMMIT, PREPARE):
            (commits if v.phase == COMMIT else prepares).setdefault(
                (env.sender, v.round), []).append(env)
    for key, votes in commits.items():
        for commit in votes:
            for prepare in prepares.get(key, ()):
                if broke_lock(commit, prepare):
                    yield commit, prepare


def signed_in(record: RoundRecord, open: Callable[[bytes], Envelope]) -> list[Envelope]:
    """A committed round's validly signed frames, with the prepare certificate its proposal
    cites: what two logs are compared on. A peer's record may hold junk beside its checked
    certificate; what is not validly signed cannot be evidence, so it is left out."""
    envs = _opened(record.frames(), open)
    if envs and envs[0].frame == record.proposal and isinstance(envs[0].message, Proposal):
        envs += _opened(envs[0].message.justify, open)
    return envs


def _opened(frames: Iterable[bytes], open: Callable[[bytes], Envelope]) -> list[Envelope]:
    envs = []
    for frame in frames:
        with contextlib.suppress(DecodeError):
            envs.append(open(frame))
    return envs
