"""Protocol attacks: a Byzantine node that breaks the rules of the round rather than (only)
sending a bad gradient. Each rewrites the actions of an otherwise honest node."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from phalanx.engine.byzantine.base import Behaviour, NodeView
from phalanx.engine.events import Action, Broadcast, Send
from phalanx.net.messages import JOIN, Gradient, MemberChange, Proposal, Vote


def _peers(node: NodeView) -> list[int]:
    return [m for m in node.members if m != node.id]


def _sends(frame: bytes, kind: int, rnd: int, peers: list[int]) -> list[Action]:
    return [Send(p, frame, kind, rnd) for p in peers]


class Silent(Behaviour):
    """Withholds every message once active: alive, computing, but never heard from."""

    name = "silent"

    def rewrite(self, actions: list[Action], node: NodeView) -> list[Action]:
        return [a for a in actions if not isinstance(a, Send | Broadcast)]


class Equivocate(Behaviour):
    """Tells half of its peers one thing and the other half another: its gradient (the other
    half gets the negated vector) and its votes (the other half a vote for a made-up set)."""

    name = "equivocate"

    def rewrite(self, actions: list[Action], node: NodeView) -> list[Action]:
        peers = _peers(node)
        first, second = peers[::2], peers[1::2]
        out: list[Action] = []
        for a in actions:
            if isinstance(a, Broadcast) and a.kind in (Gradient.KIND, Vote.KIND):
                env = node.open(a.frame)
                m = env.message
                if isinstance(m, Gradient):
                    other = node.with_values(m, -node.dense(env))
                else:
                    assert isinstance(m, Vote)
                    other = replace(m, set_digest=_made_up(m.set_digest))
                out += _sends(a.frame, a.kind, a.round, first)
                out += _sends(node.sign(other), a.kind, a.round, second)
            else:
                out.append(a)
        return out


class DoubleVote(Behaviour):
    """Signs two different votes for every (round, view, phase) and sends both to everyone."""

    name = "double_vote"

    def rewrite(self, actions: list[Action], node: NodeView) -> list[Action]:
        out: list[Action] = []
        for a in actions:
            out.append(a)
            if isinstance(a, Broadcast) and a.kind == Vote.KIND:
                v: Vote = node.open(a.frame).message  # type: ignore[assignment]
                other = replace(v, set_digest=_made_up(v.set_digest))
                out.append(Broadcast(node.sign(other), Vote.KIND, v.round))
        return out


class Late(Behaviour):
    """Delivers everything `delay` simulated seconds late (released on the node's next event
    after that)."""

    name = "late"
    params = ("delay",)

    def __init__(self, from_round: int = 0, colluders: frozenset[int] = frozenset(),
                 seed: int = 0, **params: Any) -> None:
        delay = float(params.pop("delay", 1.0))
        super().__init__(from_round, colluders, seed, **params)
        if not delay >= 0:
            raise ValueError(f"behaviour 'late': delay must be >= 0 seconds (got {delay})")
        self.delay = delay
        self._held: list[tuple[float, Action]] = []

    def rewrite(self, actions: list[Action], node: NodeView) -> list[Action]:
        out: list[Action] = []
        for a in actions:
            if isinstance(a, Send | Broadcast):
                self._held.append((node.now + self.delay, a))
            else:
                out.append(a)
        due = [a for t, a in self._held if t <= node.now]
        self._held = [(t, a) for t, a in self._held if t > node.now]
        return out + due


class BadSignature(Behaviour):
    """Every frame it sends carries a corrupted signature."""

    name = "bad_signature"

    def rewrite(self, actions: list[Action], node: NodeView) -> list[Action]:
        out: list[Action] = []
        for a in actions:
            if isinstance(a, Send | Broadcast):
                sig = node.open(a.frame).signature
                forged = bytes([sig[0] ^ 0xFF]) + sig[1:]
                a = replace(a, frame=a.frame.replace(sig, forged, 1))
            out.append(a)
        return out


class Replay(Behaviour):
    """On entering each round, re-sends the frames it broadcast in the round before (old
    gradients, votes and proposals, byte for byte: the replay window must drop them)."""

    name = "replay"

    def __init__(self, from_round: int = 0, colluders: frozenset[int] = frozenset(),
                 seed: int = 0, **params: Any) -> None:
        super().__init__(from_round, colluders, seed, **params)
        self._sent: dict[int, list[Broadcast]] = {}  # round -> what it broadcast in it
        self._replayed: set[int] = set()

    def outgoing(self, actions: list[Action], node: NodeView) -> list[Action]:
        for a in actions:
            if isinstance(a, Broadcast):
                self._sent.setdefault(a.round, []).append(a)
        previous = node.round - 1
        if self.active(node.round) and previous in self._sent and (
                previous not in self._replayed):
            self._replayed.add(previous)
            actions = actions + self._sent.pop(previous)
        for old in [r for r in self._sent if r < previous]:
            del self._sent[old]
        return actions


class OmitHonest(Behaviour):
    """As leader, proposes the smallest valid set: its colluders' gradients first, then as few
    honest ones as a quorum needs (legal, but it starves honest contributions)."""

    name = "omit_honest"

    def rewrite(self, actions: list[Action], node: NodeView) -> list[Action]:
        return [self._shrink(a, node) if isinstance(a, Broadcast) and a.kind == Proposal.KIND
                else a for a in actions]

    def _shrink(self, a: Broadcast, node: NodeView) -> Broadcast:
        p: Proposal = node.open(a.frame).message  # type: ignore[assignment]
        if p.justify:
            return a  # a re-proposal must name the certified set
        quorum = 2 * node.n // 3 + 1
        chosen = sorted(s for s in p.senders if s in self.colluders)
        chosen += [s for s in p.senders if s not in self.colluders][: max(0, quorum - len(chosen))]
        keep = sorted(chosen)
        digests = dict(zip(p.senders, p.digests, strict=True))
        shrunk = replace(p, senders=tuple(keep), digests=tuple(digests[s] for s in keep))
        return replace(a, frame=node.sign(shrunk))


class FakeDigests(Behaviour):
    """As leader, proposes digests nobody sent in place of some honest gradients."""

    name = "fake_digests"

    def rewrite(self, actions: list[Action], node: NodeView) -> list[Action]:
        def fake(p: Proposal) -> Proposal:
            return replace(p, digests=tuple(
                _made_up(d) if s not in self.colluders and i % 2 == 0 else d
                for i, (s, d) in enumerate(zip(p.senders, p.digests, strict=True))))
        return _rewrite_proposals(actions, node, fake)


class CensorChanges(Behaviour):
    """As leader, leaves the pending membership change out of its proposals: a request waits
    for an honest leader, which the rotation brings within f + 1 rounds."""

    name = "censor_changes"

    def rewrite(self, actions: list[Action], node: NodeView) -> list[Action]:
        return _rewrite_proposals(actions, node, lambda p: replace(p, change=b"") if (
            p.change and not p.justify) else p)  # a re-proposal must name the certified set


class BogusChange(Behaviour):
    """As leader, slips a change nobody may make into its proposals: its own request to join,
    though it is a member. Every honest voter refuses the proposal, and the round commits in a
    later view under another leader."""

    name = "bogus_change"

    def rewrite(self, actions: list[Action], node: NodeView) -> list[Action]:
        return _rewrite_proposals(actions, node, lambda p: p if p.justify else replace(
            p, change=node.sign(MemberChange(p.round, 0, JOIN))))


def _rewrite_proposals(actions: list[Action], node: NodeView,
                       rewrite: Callable[[Proposal], Proposal]) -> list[Action]:
    """The actions, each broadcast proposal replaced by `rewrite(proposal)` and signed again
    (one `rewrite` returns unchanged goes out as it was)."""
    out: list[Action] = []
    for a in actions:
        if isinstance(a, Broadcast) and a.kind == Proposal.KIND:
            p: Proposal = node.open(a.frame).message  # type: ignore[assignment]
            q = rewrite(p)
            if q is not p:
                a = replace(a, frame=node.sign(q))
        out.append(a)
    return out


def _made_up(digest: bytes) -> bytes:
    """A digest that names nothing anyone sent (deterministic, so runs replay)."""
    return bytes(np.frombuffer(digest, np.uint8) ^ 0x5A)
