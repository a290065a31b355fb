"""Membership as a service of the node: who the members are, and how they change.

Members join and leave through the rounds themselves (engine/consensus/membership.py): an
observer's signed request to join, or a member's to leave, names the epoch (the changes so
far); the leader carries at most one in its proposal (its contribution, which rides in the
proposal's `change` field), voters check it against the round's members, and every node that
commits the round applies it from the next one. So the members of a round are a function of
the committed rounds before it, the same at every honest node, and each round's certificates
are checked against that round's members.

Timer: "membership/ask" repeats our pending request until a committed round applies it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from phalanx.engine.aggregate import Aggregator, make_aggregator, required_inputs
from phalanx.engine.consensus import (
    OP_NAMES,
    OPS,
    applied,
    change_problem,
    max_faulty,
    members_at,
    quorum,
)
from phalanx.engine.events import MembershipChanged
from phalanx.engine.node.service import Disk, ProtocolError, Route, Service
from phalanx.net.envelope import Envelope
from phalanx.net.errors import DecodeError
from phalanx.net.messages import JOIN, LEAVE, Epoch, MemberChange

if TYPE_CHECKING:
    from phalanx.engine.node.node import Node


class Membership(Service):
    name = "membership"
    messages = (MemberChange,)

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        # the memberships so far (a new one per committed change)
        self.epochs = [Epoch(0, tuple(node.config.members))]
        self.requests: dict[int, Envelope] = {}  # requester -> its pending MemberChange
        self.asking: int | None = None  # the change we asked for and wait to see committed
        self.admitted: set[int] = set()  # observers the operator listed while we ran
        # set by `set_members`
        self.members: tuple[int, ...] = ()
        self.member_set: frozenset[int] = frozenset()
        self.observers: frozenset[int] = frozenset()  # may follow, and may ask to join
        self.follower = True
        self.n = self.quorum = self.f = self.min_set = 0
        self.rule_f = 0  # the Byzantine inputs the rule tolerates (<= f)
        self.aggregate: Aggregator

    def routes(self) -> list[Route]:
        return [Route(MemberChange, self.on_member_change, from_observers=True)]

    def on_timer(self, name: str) -> None:
        if name != "ask":
            raise ProtocolError(f"unknown membership timer {name!r}")
        if not self.node.finished:
            self.ask()

    def restore(self, disk: Disk) -> None:
        asking = disk.get("asking")
        if isinstance(asking, bytes) and asking:
            self.asking = asking[0]
            self._settle_request()

    def start(self) -> None:
        self.ask()  # a request we made before the restart, until it is applied

    # ---- who the members are -----------------------------------------------------------

    @property
    def epoch(self) -> int:
        """Changes committed so far: a request names it, so it is good for one membership."""
        return len(self.epochs) - 1

    def members_at(self, round: int) -> tuple[int, ...]:
        return members_at(self.epochs, round)

    def _rule_f(self, n: int) -> int:
        """The rule's tolerance with n members: the configured one, at most max_faulty(n)."""
        chosen = self.node.config.aggregator_f
        return max_faulty(n) if chosen is None else min(chosen, max_faulty(n))

    def _rule(self, n: int) -> Aggregator:
        c = self.node.config
        pre = tuple(s if isinstance(s, str) else (s[0], dict(s[1])) for s in c.pre_aggregation)
        return make_aggregator(c.aggregator, f=self._rule_f(n), pre=pre,
                               **dict(c.aggregator_params))

    def _needs(self, n: int) -> int | None:
        """The fewest gradients the rule takes with n members (None: more than n)."""
        need = required_inputs(self._rule(n), self._rule_f(n), n)
        return None if need is None or need.inputs > n else need.inputs

    def _fits(self, n: int) -> bool:
        """A membership of n can run rounds: someone to vote, and enough inputs for the rule
        in the n − f gradients sure to arrive (f may be silent or crashed), so that no change
        of members can stall the rounds (scenario/schema.py refuses the initial ones)."""
        if n < 1:
            return False
        need = self._needs(n)
        return need is not None and need <= n - max_faulty(n)

    def set_members(self, members: tuple[int, ...]) -> None:
        """Everything that follows from who the members are: at the start, after a committed
        change, after a restart or an adopted checkpoint."""
        node = self.node
        self.members = members
        self.member_set = frozenset(members)
        ever = frozenset(node.config.observers).union(self.admitted,
                                                      *(e.members for e in self.epochs))
        self.observers = ever - self.member_set
        # a follower keeps the chain by verified records and checkpoints: it neither computes
        # gradients nor proposes nor votes
        self.follower = node.id not in self.member_set
        self.n = len(members)
        self.quorum = quorum(self.n)
        self.f = max_faulty(self.n)
        self.rule_f = self._rule_f(self.n)
        self.aggregate = self._rule(self.n)
        # the smallest set a round may agree on: a quorum, or more if the rule needs more (at
        # most n − f: the scenario and `_fits` refuse a rule that needs more, as f silent
        # members would then stall it; Krum needs 2f + 3 with f its own tolerance)
        self.min_set = max(self.quorum, self._needs(self.n) or self.n)
        for m in members:
            if m != node.id:
                node.reputation.setdefault(m, 1.0)
        node.forget_leaders()  # who may lead follows the members
        for service in node.services:
            service.on_members(members)
        self._settle_request()

    def admit_observer(self, node_id: int) -> None:
        """An observer the operator listed while this node runs (its key is in the opener's
        keyring from now on): it may follow, and ask to join."""
        if node_id not in self.member_set and node_id != self.node.id:
            self.admitted.add(node_id)
            self.observers = self.observers | {node_id}

    # ---- our own requests ----------------------------------------------------------------

    def _settle_request(self) -> None:
        if (self.asking, self.follower) in ((JOIN, False), (LEAVE, True)):
            self.asking = None  # what we asked for is done
            self.node.persist("asking", b"")

    def change_problem(self, op: str) -> str | None:
        """Why this node cannot ask to `op` ("join" or "leave") now; None if it can."""
        if op not in OPS:
            return f"unknown change {op!r} (allowed: {', '.join(OPS)})"
        if self.node.finished:
            return "training has finished"
        if self.asking is not None:
            return f"a request to {OP_NAMES[self.asking]} is already pending"
        if op == "join":
            if not self.follower:
                return "already a member"
            if self.node.id not in self.observers:
                return "not an observer of the members file"
            return None if self._fits(self.n + 1) else (
                f"{self.n + 1} members could not feed {self.node.config.aggregator}: it needs "
                f"more than the n − f gradients sure to arrive")
        if self.follower:
            return "not a member"
        if not self._fits(self.n - 1):
            return (f"leaving would leave {self.n - 1} members, whose n − f sure gradients "
                    f"are fewer than {self.node.config.aggregator} needs")
        return None

    def request_change(self, op: str) -> None:
        if self.change_problem(op) is not None:
            self.node.reject("change_refused", None)
            return
        self.asking = OPS[op]
        self.node.persist("asking", bytes([self.asking]))  # asked until applied,
        self.ask()  # across restarts too
        self.node.sync.poll()  # a request names our epoch: be current when it arrives

    def ask(self) -> None:
        """Send our request, naming the current epoch, until it is committed (a Byzantine
        leader may leave it out; the rotation brings an honest one that does not)."""
        node = self.node
        if self.asking is None or node.finished:
            return
        frame = node.broadcast(MemberChange(node.round, self.epoch, self.asking))
        if not self.follower:  # we may lead a round: our own request is pending here too
            self.requests[node.id] = node.open(frame)
        node.set_timer(self, "ask", node.config.view_timeout)

    # ---- requests from others ------------------------------------------------------------

    def _change_problem(self, env: Envelope) -> str | None:
        return change_problem(env, self.member_set, self.observers, self.epoch, self._fits)

    def on_member_change(self, env: Envelope) -> None:
        problem = self._change_problem(env)
        if problem == "change_stale_epoch":
            # the requester or we are behind; it asks again with the next epoch: if it is
            # behind, hand it the records from its round once (a follower polls slowly)
            behind = env.message.round  # type: ignore[union-attr]
            if behind < self.node.round:
                self.node.sync.help(env.sender, behind)
            return
        if problem:
            self.node.reject(problem, env.sender)
            return
        self.requests[env.sender] = env  # one per requester: its latest

    # ---- the round's say -----------------------------------------------------------------

    def contribution(self) -> bytes:
        """The pending request a proposal carries (the lowest requester's, at most one)."""
        for sender in sorted(self.requests):
            env = self.requests[sender]
            if self._change_problem(env) is None:
                return env.frame
        return b""

    def contribution_problem(self, data: bytes) -> str | None:
        if not data:
            return None
        try:
            env = self.node.open(data)
        except DecodeError:
            return "change_bad_frame"
        return self._change_problem(env)

    def on_commit(self, data: bytes) -> None:
        """A committed change takes effect from the round we just entered."""
        if not data:
            return
        node = self.node
        env = node.open(data)
        change: MemberChange = env.message  # type: ignore[assignment]
        members = applied(self.members, change.op, env.sender)
        self.epochs.append(Epoch(node.round, members))
        self.requests.clear()  # each named the epoch before
        self.set_members(members)
        if self.asking is not None:  # ours is still to come, and named the old epoch: ask
            self.ask()  # again now rather than when the timer fires
        node.emit(MembershipChanged(node.id, node.round, OP_NAMES[change.op], env.sender,
                                    members))
        if change.op == JOIN and node.sync.history and env.sender != node.id and (
                node.id in members[: self.f + 1]):
            # the joiner follows by polling: f + 1 members (one honest) hand it the record of
            # its admission at once, so it computes in its first round instead of a poll later
            node.sync.send_records(env.sender, node.round - 1, 1)
