"""State sync by checkpoint (the pure checks are engine/consensus/checkpoint.py).

A node far behind asks f + 1 peers (the next ones in turn at each try) for their state and
adopts it once f + 1 offered the identical one, checked against the commit certificate of the
round before it: the rounds before stay with the peers, and the node's log starts at that
round's record, keeping the checkpoint (`base`) for audits.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING

import numpy as np

from phalanx.engine.consensus import Certificate, CheckpointOffers, check_checkpoint
from phalanx.engine.events import RoundCommitted
from phalanx.engine.node.persisted import SignedSlots
from phalanx.engine.node.service import Route, Service
from phalanx.net.envelope import Envelope
from phalanx.net.errors import DecodeError
from phalanx.net.messages import Checkpoint, CheckpointRequest

if TYPE_CHECKING:
    from phalanx.engine.node.node import Node


class CheckpointSync(Service):
    name = "checkpoints"
    messages = (CheckpointRequest, Checkpoint)

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        self.until = -1.0  # no new checkpoint requests before this time
        self.turn = 0
        self.served: set[tuple[int, int]] = set()  # (peer, round) a checkpoint was sent for
        self.offers = CheckpointOffers(1)

    def routes(self) -> list[Route]:
        return [Route(CheckpointRequest, self.on_request, from_observers=True),
                Route(Checkpoint, self.on_checkpoint, to_followers=True)]

    def on_members(self, members: tuple[int, ...]) -> None:
        self.offers = CheckpointOffers(self.node.membership.f + 1)

    def request(self) -> None:
        """Ask f + 1 peers (the next ones in turn at each try) for their state."""
        node = self.node
        if node.now < self.until:
            return
        self.until = node.now + node.config.view_timeout
        peers = [m for m in node.membership.members
                 if m != node.id and m not in node.accountability.excluded]
        f = node.membership.f
        for i in range(min(f + 1, len(peers))):
            peer = peers[(self.turn + i) % len(peers)]
            node.send(peer, CheckpointRequest(node.round))
        self.turn += f + 1

    def on_request(self, env: Envelope) -> None:
        req: CheckpointRequest = env.message  # type: ignore[assignment]
        node, history = self.node, self.node.sync.history
        if (req.round >= node.round or not history
                or env.sender in node.accountability.excluded
                or (env.sender, node.round) in self.served):
            return  # not behind us, nothing to offer, or already sent this round's state
        if self.served and min(r for _, r in self.served) < node.round:
            self.served = {s for s in self.served if s[1] == node.round}  # only ours is asked
        self.served.add((env.sender, node.round))
        node.send(env.sender, Checkpoint(node.round, history[-1], node.params, node.velocity,
                                         node.last_update, tuple(node.membership.epochs)))

    def on_checkpoint(self, env: Envelope) -> None:
        cp: Checkpoint = env.message  # type: ignore[assignment]
        node = self.node
        if cp.round <= node.round or node.finished:
            return
        cert = check_checkpoint(cp, node.open, node.params.shape, node.velocity.shape)
        if isinstance(cert, str):
            node.reject(cert, env.sender)
            return
        agreed = self.offers.add(env, cert)
        if agreed is not None:
            self._adopt(agreed[0], agreed[1])

    def _adopt(self, env: Envelope, cert: Certificate) -> None:
        """Continue from the agreed checkpoint `env`."""
        cp: Checkpoint = env.message  # type: ignore[assignment]
        node = self.node
        self.install(cp, cert)
        node.persist("base", env.frame)
        node.persist(f"log/{cp.record.round}", cp.record)
        losses = []
        for frame in cp.record.gradients:
            with contextlib.suppress(DecodeError):
                losses.append(node.open(frame).message.loss)  # type: ignore[union-attr]
        node.emit(RoundCommitted(
            node.id, cp.record.round, cert.view, len(cp.record.gradients),
            float(np.mean(losses)) if losses else math.nan, node.model_hash, True,
            node.params))
        node.persist("votes", SignedSlots(()))
        node.persist("checkpoint", node.saved_state())
        node.protocol.start_round()

    def install(self, cp: Checkpoint, cert: Certificate) -> None:
        node = self.node
        node.params = cp.params.copy()
        node.velocity, node.last_update = cp.velocity.copy(), cp.last_update.copy()
        node.sender.worker_momentum = np.zeros_like(node.params)  # ours: what we would send
        if node.sender.adam is not None:
            node.sender.adam.reset()
        node.model_hash = cert.model_hash
        node.sync.history, node.sync.history_base = [cp.record], cp.record.round
        node.round, node.view = cp.round, cert.view
        protocol = node.protocol
        protocol.lock = protocol.state.valid = None
        protocol.signed, protocol.abstain = set(), False
        node.membership.epochs = list(cp.epochs)
        node.membership.requests.clear()
        node.set_last_set(node.senders_of(cp.record))
        node.membership.set_members(node.membership.epochs[-1].members)

    def replay_from(self, base: bytes) -> str | None:
        """Start an audit from the checkpoint a node's log begins with (the one it adopted):
        checked against its record's commit certificate, as when it was adopted."""
        node = self.node
        try:
            env = node.open(base)
        except DecodeError as err:
            return f"base_{err.reason}"
        cp = env.message
        if not isinstance(cp, Checkpoint):
            return "base_not_a_checkpoint"
        cert = check_checkpoint(cp, node.open, node.params.shape, node.velocity.shape)
        if isinstance(cert, str):
            return f"base_{cert}"
        self.install(cp, cert)
        return None
