"""Checkpoint state sync, the pure parts: checking an offered checkpoint and counting the peers
that offer the same state.

A node far behind (it joined late, or came back without its disk after many rounds) adopts a
peer's state instead of replaying every round it missed. A checkpoint carries the record of
the round before it, whose commit certificate (a quorum of signed commit votes) names the
model hash after that round: the parameters must hash to it, so one peer cannot forge them.
The optimizer's state is not in that hash, so a state is adopted only when f + 1 peers offer
the identical one: at least one of them is honest, and honest nodes hold the same state. The
memberships the run went through ride along (the record is checked against its round's), and
are part of the state the f + 1 must agree on.
"""

from __future__ import annotations

import struct

import msgpack
import numpy as np

from phalanx.engine.consensus.membership import epochs_problem, members_at
from phalanx.engine.consensus.votes import Certificate, Opener, check_certificate
from phalanx.net.crypto import sha256
from phalanx.net.envelope import Envelope
from phalanx.net.messages import COMMIT, Checkpoint


def state_digest(cp: Checkpoint) -> bytes:
    """What peers must agree on: the round, the three state vectors and the memberships."""
    epochs = msgpack.packb([[e.round, list(e.members)] for e in cp.epochs])
    return sha256(struct.pack(">q", cp.round) + cp.params.tobytes() + cp.velocity.tobytes()
                  + cp.last_update.tobytes() + epochs)


def check_checkpoint(cp: Checkpoint, open: Opener, shape: tuple[int, ...],
                     state_shape: tuple[int, ...]) -> Certificate | str:
    """The commit certificate that vouches for `cp`'s parameters, or why there is none."""
    if cp.record.round != cp.round - 1:
        return "checkpoint_bad_record"
    problem = epochs_problem(cp.epochs, cp.round)
    if problem:
        return problem
    members = frozenset(members_at(cp.epochs, cp.record.round))
    for array, want in ((cp.params, shape), (cp.velocity, state_shape),
                        (cp.last_update, shape)):
        if array.dtype != np.float32 or array.shape != want or not np.isfinite(array).all():
            return "checkpoint_bad_state"
    cert = check_certificate(cp.record.certificate, open, members, cp.record.round, COMMIT)
    if isinstance(cert, str):
        return f"checkpoint_{cert}"
    if sha256(cp.params.tobytes()) != cert.model_hash:
        return "checkpoint_bad_hash"
    return cert


class CheckpointOffers:
    """Checked checkpoints grouped by identical state; `add` returns the state once `needed`
    distinct peers have offered it. Each peer's latest offer replaces its earlier one, so a
    peer sending state after state holds one model's worth of memory, not one per offer."""

    def __init__(self, needed: int) -> None:
        self.needed = needed
        self._by_state: dict[bytes, dict[int, tuple[Envelope, Certificate]]] = {}
        self._of_sender: dict[int, bytes] = {}

    def add(self, env: Envelope, cert: Certificate) -> tuple[Envelope, Certificate,
                                                               list[int]] | None:
        digest = state_digest(env.message)  # type: ignore[arg-type]
        previous = self._of_sender.get(env.sender)
        if previous is not None and previous != digest:
            stale = self._by_state[previous]
            del stale[env.sender]
            if not stale:
                del self._by_state[previous]
        self._of_sender[env.sender] = digest
        offers = self._by_state.setdefault(digest, {})
        offers[env.sender] = (env, cert)
        if len(offers) < self.needed:
            return None
        agreed, cert = next(iter(offers.values()))
        return agreed, cert, sorted(offers)

    def held(self) -> int:
        """Offers kept: at most one per peer."""
        return sum(len(offers) for offers in self._by_state.values())

    def clear(self) -> None:
        self._by_state.clear()
        self._of_sender.clear()
