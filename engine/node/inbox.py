"""The round's incoming traffic: gradients, proposals, votes, certified quorums, and fetches of
gradients a proposal names. Each handler checks what it got against the round the node is in,
files it with the round protocol (engine/node/protocol.py) and lets the protocol advance.

Messages of the next `future_rounds` rounds are kept for when the node gets there; further
ones only tell the node that it is behind (it asks for the rounds it missed). Nodes that
lag behind (they send traffic of a round we committed) are handed our records once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from phalanx.engine.consensus import check_certificate
from phalanx.engine.node.proposals import MAX_VIEW
from phalanx.net.envelope import Envelope
from phalanx.net.errors import DecodeError
from phalanx.net.messages import COMMIT, PREPARE, Certified, Fetch, Frames, Gradient, Proposal, Vote

if TYPE_CHECKING:
    from phalanx.engine.node.node import Node

VIEWS_AHEAD = 64  # votes for views further ahead of ours are dropped (we would catch up by sync)


class RoundInbox:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.protocol = node.protocol
        self.excluded = node.accountability.excluded  # the same dict, read on hot paths

    def on_gradient(self, env: Envelope) -> None:
        g: Gradient = env.message  # type: ignore[assignment]
        node, protocol = self.node, self.protocol
        if g.round < node.round:
            # the sender is still in a round we committed (lagging, or on another fork after a
            # partition healed): send it our records once, so it catches up or finds the fork
            node.sync.help(env.sender, g.round)
        if g.round < node.round or node.finished:
            return  # stale: that round is settled here
        if env.sender in self.excluded:
            self._excluded_gradient(env, g)
            return
        if g.round > node.round + node.config.future_rounds:
            node.sync.request(env.sender)
            return
        problem = node.intake.gradient_problem(env)
        if problem:
            node.reject(problem, env.sender)
            return
        if node.accountability.is_equivocation(env):
            return
        protocol.grads.setdefault(g.round, {}).setdefault(env.sender, env)
        node.detector.gradient(env.sender, g.round == node.round)
        if g.round > node.round + 1:
            node.sync.request(env.sender)  # the sender has committed rounds we have not
        elif g.round == node.round:
            if g.base_hash != node.model_hash:
                node.reject("gradient_other_model", env.sender)
                node.accountability.probe_fork(env.sender)
            protocol.advance()

    def _excluded_gradient(self, env: Envelope, g: Gradient) -> None:
        """An excluded sender's gradient is ignored, unless a set we know names it: a justified
        set (prepared by a quorum before the exclusion) needs it to be voted for again."""
        protocol = self.protocol
        named = ((env.sender, env.digest) in zip(s.message.senders,  # type: ignore[union-attr]
                                                 s.message.digests, strict=True)  # type: ignore[union-attr]
                 for s in protocol.sets.values() if s.round == g.round)
        if g.round == self.node.round and not self.node.intake.gradient_problem(env) and any(
                named):
            protocol.grads.setdefault(g.round, {})[env.sender] = env
            protocol.advance()

    def on_proposal(self, env: Envelope) -> None:
        p: Proposal = env.message  # type: ignore[assignment]
        node = self.node
        if p.round < node.round or node.finished or env.sender in self.excluded:
            return
        problem = node.intake.proposal_problem(env)
        if problem:
            node.reject(problem, env.sender)
            return
        if node.accountability.is_equivocation(env):
            return
        if p.round > node.round:
            node.sync.request(env.sender)  # its leader is in a later round: we are behind
        if p.round <= node.round + node.config.future_rounds:  # bounded: no memory for far rounds
            self.protocol.accept_proposal(env)

    def on_vote(self, env: Envelope) -> None:
        v: Vote = env.message  # type: ignore[assignment]
        node = self.node
        if v.round < node.round or env.sender in self.excluded:
            return
        if not 0 <= v.view < MAX_VIEW or v.phase not in (PREPARE, COMMIT):
            node.reject("bad_vote", env.sender)
            return
        if v.round > node.round + node.config.future_rounds:
            node.sync.request(env.sender)
            return
        if v.view > node.view + VIEWS_AHEAD:
            return  # bounded memory: a Byzantine voter cannot fill a book with far views
        protocol = self.protocol
        book = protocol.book(v.round)
        earlier = book.add(env)
        if earlier is not None:
            node.accountability.accuse(earlier, env)
            return
        key = (v.view, v.phase, v.set_digest, v.model_hash)
        if book.count(key) != book.quorum:
            # below a quorum nothing is unlocked; past it, whatever the quorum unlocked ran
            # when the quorum formed, and anything still waiting re-checks when it arrives
            return
        protocol.certify(v.round, key)
        if v.round == node.round:
            protocol.advance()

    def on_certified(self, env: Envelope) -> None:
        c: Certified = env.message  # type: ignore[assignment]
        node = self.node
        if c.round < node.round or c.round > node.round + node.config.future_rounds:
            return
        cert = check_certificate(c.votes, node.open, node.membership.member_set, c.round,
                                 c.phase)
        if isinstance(cert, str):
            if c.round == node.round:  # a later round's voters may be members we have yet
                node.reject(cert, env.sender)  # to learn of: not judged, just not used
            return
        if cert.view > node.view + VIEWS_AHEAD:
            return
        book = self.protocol.book(c.round)
        for frame in c.votes:
            vote = node.open(frame)
            if vote.sender in self.excluded:
                continue
            earlier = book.add(vote)
            if earlier is not None:
                node.accountability.accuse(earlier, vote)
        if c.round == node.round:
            self.protocol.advance()

    def fetch_missing(self, proposal: Envelope) -> None:
        """Ask the proposer for the gradients it names that we lack or hold in another version
        (lost on the way, or its sender equivocated: then we get a proof of it)."""
        p: Proposal = proposal.message  # type: ignore[assignment]
        node = self.node
        if proposal.sender == node.id:
            return
        held = self.protocol.grads.get(p.round, {})
        missing = tuple(s for s, d in zip(p.senders, p.digests, strict=True)
                        if s != node.id and (s not in held or held[s].digest != d))
        if missing:
            node.send(proposal.sender, Fetch(p.round, missing))

    def on_fetch(self, env: Envelope) -> None:
        req: Fetch = env.message  # type: ignore[assignment]
        held = self.protocol.grads.get(req.round, {})
        frames = tuple(held[s].frame for s in dict.fromkeys(req.senders) if s in held)
        if frames:
            self.node.send(env.sender, Frames(req.round, frames))

    def on_frames(self, env: Envelope) -> None:
        """Relayed gradients: each is checked as if its sender had sent it to us (signature,
        validity, equivocation), except the replay window, which is per direct sender."""
        resp: Frames = env.message  # type: ignore[assignment]
        node = self.node
        for frame in resp.frames[: node.membership.n]:
            try:
                inner = node.open(frame)
            except DecodeError as err:
                node.reject(f"relayed_{err.reason}", env.sender)
                return
            if not isinstance(inner.message, Gradient) or (
                    inner.sender not in node.membership.member_set):
                node.reject("relayed_not_gradient", env.sender)
                return
            if inner.sender != node.id:
                self.on_gradient(inner)
