"""Frame intake and validation: every received frame passes here before a service sees it.

A frame is opened (signature, digest, strict decoding of the kinds this node's services own),
its sender checked against the members (observers may send only what services allow them),
its sequence number against the sender's replay window, and it goes to the handler of the
service that owns its kind; whatever fails is refused and counted with its reason. Gradients
and proposals are validated here too, for the protocol and for state sync alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np

from phalanx.engine.consensus import check_certificate
from phalanx.engine.encoding import CompressError
from phalanx.engine.node.proposals import form_problem, set_digest
from phalanx.engine.node.service import ProtocolError, Service
from phalanx.net.envelope import Envelope
from phalanx.net.errors import DecodeError
from phalanx.net.messages import PREPARE, Gradient, Proposal
from phalanx.net.replay import ReplayGuard

if TYPE_CHECKING:
    from phalanx.engine.node.node import Node

Handler = Callable[[Envelope], None]


class Intake:
    def __init__(self, node: Node, services: Iterable[Service]) -> None:
        self.node = node
        self.groups = tuple(g for g in node.workload.parameter_groups() if g.max_norm is not None)
        self.guard = ReplayGuard()
        self.handlers: dict[type, Handler] = {}
        self.from_observers: set[type] = set()  # kinds members accept from observers
        self.to_followers: set[type] = set()  # kinds a follower takes
        for service in services:
            for route in service.routes():
                if route.message not in service.messages:
                    raise ProtocolError(f"service {service.name!r} routes "
                                        f"{route.message.__name__}, not in its messages")
                if route.message in self.handlers:
                    raise ProtocolError(f"{route.message.__name__} has two services")
                self.handlers[route.message] = route.handle
                if route.from_observers:
                    self.from_observers.add(route.message)
                if route.to_followers:
                    self.to_followers.add(route.message)

    def on_frame(self, frame: bytes) -> None:
        node = self.node
        try:
            env = node.open(frame)
        except DecodeError as err:
            node.reject(err.reason, None)
            return
        kind = type(env.message)
        handler = self.handlers.get(kind)
        if handler is None:  # decodable elsewhere, but no service of this node owns it
            node.reject("unknown_kind", env.sender)
            return
        m = node.membership
        if m.follower and kind not in self.to_followers:
            return  # the round's traffic is for members (ones we may not know of yet)
        if env.sender == node.id:
            node.reject("not_member", env.sender)  # ours, echoed back: nobody relays to us
            return
        if env.sender not in m.member_set and not (
                env.sender in m.observers and kind in self.from_observers):
            if env.round < node.round and env.sender in m.members_at(env.round):
                return  # late traffic of a member that has left since: stale, not hostile
            if env.round > node.round and env.sender in m.observers:
                return  # perhaps a member by now, admitted in rounds we have yet to learn of
            node.reject("not_member", env.sender)
            return
        if not self.guard.check(env.sender, env.seq):
            node.reject("replay", env.sender)
            return
        node.detector.heard(env.sender)
        handler(env)

    # ---- gradients ---------------------------------------------------------------------------

    def gradient_problem(self, env: Envelope) -> str | None:
        # a pure function of the message and the model's shape: memoized on the envelope, so
        # nodes sharing a memoizing opener check each broadcast gradient once
        node = self.node
        key = ("gradient_problem", node.params.shape, node.config.max_gradient_norm,
               node.sender.encoding.name)
        facts = env.facts
        if key not in facts:
            g: Gradient = env.message  # type: ignore[assignment]
            try:
                facts[key] = self.check_gradient(g.loss, g.samples, node.dense(env))
            except CompressError as err:  # a malformed payload, or not the run's encoding
                facts[key] = f"gradient_{err.reason}"
        return facts[key]  # type: ignore[no-any-return]

    def check_gradient(self, loss: float, samples: int, v: np.ndarray) -> str | None:
        if v.dtype != np.float32 or v.shape != self.node.params.shape:
            return "bad_gradient_shape"
        # a float64 sum of float32 values cannot overflow, so it is finite iff every value is
        if not (math.isfinite(v.sum(dtype=np.float64)) and math.isfinite(loss)) or (
                samples <= 0):
            return "bad_gradient_values"
        bound = self.node.config.max_gradient_norm
        if bound is not None and _norm(v) > bound:
            return "gradient_norm_too_large"
        for g in self.groups:  # a group's own bound (a reward model's, a policy's)
            if g.max_norm is not None and _norm(v[g.start:g.stop]) > g.max_norm:
                return "gradient_norm_too_large"
        return None

    # ---- proposals ---------------------------------------------------------------------------

    def proposal_problem(self, env: Envelope) -> str | None:
        """Why a proposal is invalid. One of a later round than ours is judged on its form
        only; the protocol judges it in full once we are there: the rounds before it may change
        the members, and with them its leader, its senders, its quorum, its contributions."""
        p: Proposal = env.message  # type: ignore[assignment]
        node, m = self.node, self.node.membership
        form = form_problem(p)
        if form or p.round > node.round:
            return form
        if env.sender != node.leader(p.round, p.view):
            return "proposal_not_leader"
        if len(p.senders) < m.min_set:
            return "proposal_too_small"
        if not m.member_set.issuperset(p.senders):
            return "proposal_bad_senders"
        problem = self._contributions_problem(p)
        if problem:
            return f"proposal_{problem}"
        if p.justify:
            cert = check_certificate(p.justify, node.open, m.member_set, p.round, PREPARE)
            if isinstance(cert, str):
                return f"proposal_{cert}"
            if cert.view >= p.view or cert.set_digest != set_digest(p):
                return "proposal_bad_justification"
        return None

    def _contributions_problem(self, p: Proposal) -> str | None:
        """Each service judges its part (membership's rides in `change`); a part for a service
        this node does not run is refused: it could not apply the round as the others do."""
        node = self.node
        problem = node.membership.contribution_problem(p.change)
        if problem or not (p.contributions or node.extra_services):
            return problem
        given = {c.service: c.data for c in p.contributions}
        for service in node.services:
            if service is not node.membership:
                problem = service.contribution_problem(given.pop(service.name, b""))
                if problem:
                    return problem
        return "unknown_service" if given else None


def _norm(v: np.ndarray) -> float:
    return math.sqrt(float(np.square(v, dtype=np.float64).sum()))
