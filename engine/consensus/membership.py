"""Reconfiguration, the pure parts: which memberships a run went through, and which change
requests a round may agree on.

A change is asked for by the node it concerns (a signed MemberChange: an observer asks to join,
a member to leave), carried in a proposal under the set digest, and applied by every node that
commits the round, from the next round on. So the members of round r are a function of the
committed rounds before r, the same at every honest node; each round's certificates are checked
against that round's members, and a node replaying or adopting rounds walks the same sequence
of memberships. One change per round at most (Raft's single-server rule, Ongaro 2014 §4.1):
n, f and the quorum move by one step at a time, and a request names the epoch (the number of
changes applied before it), so a request cannot be replayed once the membership moved on.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from phalanx.net.envelope import Envelope
from phalanx.net.messages import JOIN, LEAVE, Epoch, MemberChange

OPS = {"join": JOIN, "leave": LEAVE}
OP_NAMES = {code: name for name, code in OPS.items()}


def members_at(epochs: Sequence[Epoch], round: int) -> tuple[int, ...]:
    """The members of `round`: those of the last epoch that began at or before it."""
    current = epochs[0].members
    for epoch in epochs:
        if epoch.round > round:
            break
        current = epoch.members
    return current


def applied(members: tuple[int, ...], op: int, subject: int) -> tuple[int, ...]:
    """The membership after a checked change."""
    if op == JOIN:
        return tuple(sorted((*members, subject)))
    return tuple(m for m in members if m != subject)


def change_problem(env: Envelope, members: frozenset[int], observers: frozenset[int],
                   epoch: int, fits: Callable[[int], bool]) -> str | None:
    """Why the signed request `env` cannot be applied to this membership, or None.

    `fits(n)` says whether a membership of n can still run the round (at least one member,
    and as many as the aggregation rule needs)."""
    change = env.message
    if not isinstance(change, MemberChange):
        return "change_not_a_request"
    if change.epoch != epoch:
        return "change_stale_epoch"
    if change.op == JOIN:
        if env.sender in members:
            return "change_already_member"
        if env.sender not in observers:
            return "change_not_observer"
        return None if fits(len(members) + 1) else "change_too_many"
    if change.op == LEAVE:
        if env.sender not in members:
            return "change_not_member"
        return None if fits(len(members) - 1) else "change_too_few"
    return "change_bad_op"


def epochs_problem(epochs: Sequence[Epoch], round: int) -> str | None:
    """Why a checkpoint's list of memberships is malformed (for the state at `round`)."""
    if not epochs or epochs[0].round != 0:
        return "checkpoint_bad_epochs"
    for before, after in itertools.pairwise(epochs):
        if after.round <= before.round:
            return "checkpoint_bad_epochs"
    if epochs[-1].round > round:
        return "checkpoint_bad_epochs"
    for epoch in epochs:
        if not epoch.members or list(epoch.members) != sorted(set(epoch.members)):
            return "checkpoint_bad_epochs"
    return None
