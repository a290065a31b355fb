"""View changes: how a round that stalls under its leader moves on to the next one.

A node whose view times out moves to the next view and broadcasts a ViewChange carrying its
highest prepare certificate (with the proposal it certifies), so the next leader and every peer
learn of a set that may have committed somewhere. f + 1 peers ahead pull a node forward to
their view (one of them is honest), and a view's timer starts only once a quorum of members
moved to it (PBFT's rule), so nodes that fell out of step meet again.

Timers (namespaced "view/"): "timeout:<round>:<view>" ends a view, "rejoin:<round>:<view>"
repeats our ViewChange while we wait alone in a view.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from phalanx.engine.consensus import check_certificate
from phalanx.engine.events import ViewChanged
from phalanx.engine.node.proposals import MAX_VIEW, set_digest
from phalanx.engine.node.service import ProtocolError, Route, Service
from phalanx.net.envelope import Envelope
from phalanx.net.errors import DecodeError
from phalanx.net.messages import PREPARE, Proposal, ViewChange

if TYPE_CHECKING:
    from phalanx.engine.node.node import Node


class Views(Service):
    name = "view"
    messages = (ViewChange,)

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        self.rejoin_armed: tuple[int, int] | None = None  # (round, view) of the rejoin timer

    def routes(self) -> list[Route]:
        return [Route(ViewChange, self.on_view_change)]

    def arm_timer(self) -> None:
        """Start the current view's timer; an excluded leader's view is skipped at once
        (every honest node holds the proof)."""
        node = self.node
        node.protocol.state.timer_view = node.view
        excluded = node.leader(node.round, node.view) in node.accountability.excluded
        node.set_timer(self, f"timeout:{node.round}:{node.view}",
                       0.0 if excluded else node.config.view_timeout)

    def maybe_start_timer(self) -> None:
        """A view's timer starts once a quorum has moved to it: a node whose timer ran out
        early waits there for the others instead of running further ahead. (Found by a sweep:
        two nodes a view ahead of four, fewer than f + 1 so nobody followed them, never shared
        a view with a quorum.) Until then it repeats its ViewChange, in case it was lost, and
        looks for a peer that moved on to later rounds."""
        node, state = self.node, self.node.protocol.state
        if state.timer_view == node.view:
            return
        if sum(1 for w in state.moved.values() if w >= node.view) >= node.membership.quorum:
            self.arm_timer()
        elif self.rejoin_armed != (node.round, node.view):
            # armed once per view: re-arming on every ViewChange would let a peer that repeats
            # its own keep ours from ever firing (found by the Twins tests)
            self.rejoin_armed = (node.round, node.view)
            node.set_timer(self, f"rejoin:{node.round}:{node.view}", node.config.view_timeout)

    def on_timer(self, name: str) -> None:
        kind, _, rest = name.partition(":")
        node = self.node
        if kind not in ("timeout", "rejoin"):
            raise ProtocolError(f"unknown view timer {name!r}")
        if node.finished or rest != f"{node.round}:{node.view}":
            return  # a view we have left
        if kind == "timeout":
            self.enter(node.view + 1)
            node.sync.poll()  # silence may also mean everyone else moved on
        elif node.protocol.state.timer_view != node.view:
            self.rejoin_armed = None
            self.announce()
            node.sync.poll()
            self.maybe_start_timer()

    def enter(self, view: int) -> None:
        """Leave the views below `view`: tell everyone, with our highest prepare certificate."""
        node, state = self.node, self.node.protocol.state
        node.view = view
        state.gather_expired = True  # a later leader settles for a quorum: everyone has waited
        state.moved[node.id] = view
        self.announce()
        node.emit(ViewChanged(node.id, node.round, view))
        node.sender.resend()  # re-sent with a fresh sequence number (loss, new leader)
        self.maybe_start_timer()
        node.protocol.advance()

    def announce(self) -> None:
        node = self.node
        best = node.protocol.best_certificate()
        proposal = node.protocol.sets.get(best.set_digest) if best else None
        node.broadcast(ViewChange(node.round, node.view, best.frames if best else (),
                                  proposal.frame if proposal else b""))

    def on_view_change(self, env: Envelope) -> None:
        vc: ViewChange = env.message  # type: ignore[assignment]
        node = self.node
        if not 0 < vc.view < MAX_VIEW:
            node.reject("bad_view_change", env.sender)
            return
        if vc.round < node.round:  # the sender is stuck in a round we committed: help it
            node.sync.help(env.sender, vc.round)
            return
        if vc.round > node.round or node.finished:
            if vc.round > node.round:
                node.sync.request(env.sender)
            return
        if vc.lock:
            self._learn_lock(env, vc)
        moved = node.protocol.state.moved
        if vc.view > moved.get(env.sender, 0):
            moved[env.sender] = vc.view
        ahead = sorted((w for s, w in moved.items() if s != node.id and w > node.view),
                       reverse=True)
        f = node.membership.f
        if len(ahead) > f:  # f + 1 peers moved past us: at least one honest did
            self.enter(ahead[f])
        else:
            self.maybe_start_timer()
            node.protocol.advance()

    def _learn_lock(self, env: Envelope, vc: ViewChange) -> None:
        node = self.node
        cert = check_certificate(vc.lock, node.open, node.membership.member_set, vc.round,
                                 PREPARE)
        if isinstance(cert, str):
            node.reject(f"view_change_{cert}", env.sender)
            return
        try:
            proposal = node.open(vc.proposal)
        except DecodeError as err:
            node.reject(f"view_change_{err.reason}", env.sender)
            return
        p = proposal.message
        if (not isinstance(p, Proposal) or p.round != vc.round
                or node.intake.proposal_problem(proposal)
                or set_digest(p) != cert.set_digest or cert.view >= vc.view):
            node.reject("view_change_bad_lock", env.sender)
            return
        node.protocol.sets.setdefault(cert.set_digest, proposal)
        if cert.model_hash == node.model_hash:
            node.protocol.note_certificate(cert)
