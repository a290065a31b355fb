"""State sync by records: how a node that fell behind fetches the rounds it missed.

A committed round is a `RoundRecord` (the leader's proposal, the gradients it names and the
commit certificate, all signed frames), kept on disk, and in `history` while it is one of the
newest `history_window` (older ones are read back from disk, `Node.load`, when a peer asks for
them: a node's memory does not grow with its log). A node behind asks a
peer for its records from its own round on and replays them after checking every signature,
the set, the certificate and the resulting model hash, exactly as if it had voted; the same
check audits a node's log (`replay`). A node too far behind (`checkpoint_gap`), or asking a
peer that holds no records that old, fetches a checkpoint instead (engine/node/checkpoints.py).

Timer: "sync/follow", a follower's poll for the rounds the members committed since.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from phalanx.engine.consensus import Certificate, check_certificate
from phalanx.engine.events import Stored
from phalanx.engine.node.proposals import set_digest
from phalanx.engine.node.service import ProtocolError, Route, Service
from phalanx.net.envelope import Envelope
from phalanx.net.errors import DecodeError
from phalanx.net.messages import (
    COMMIT,
    PREPARE,
    Gradient,
    Proposal,
    RoundRecord,
    SyncRequest,
    SyncResponse,
)

if TYPE_CHECKING:
    from phalanx.engine.node.node import Node


class RecordSync(Service):
    name = "sync"
    messages = (SyncRequest, SyncResponse)

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        # the newest committed rounds (at most `history_window`), up to the node's round
        self.history: list[RoundRecord] = []
        self.history_base = 0  # where the log begins: above 0 once started from a checkpoint
        self.until = -1.0  # no new unforced request before this time
        self.peer: int | None = None  # who the outstanding request went to
        self.turn = 0  # the last peer polled
        self.helped: set[tuple[int, int]] = set()  # (peer, round) we sent records unasked

    # ---- the committed rounds -------------------------------------------------------------

    @property
    def kept_from(self) -> int:
        """The first round `history` holds (the node's round when it holds none)."""
        return self.node.round - len(self.history)

    def keep(self, record: RoundRecord) -> None:
        """`record` (of the node's round) committed: keep it, and only the window's newest."""
        self.history.append(record)
        over = len(self.history) - self.node.config.history_window
        if over > 0:
            del self.history[:over]
        self._forget_before(record.round - self.node.config.history_window)

    def _forget_before(self, round: int) -> None:
        """Who we helped with rounds older than the window: the memory of it goes with them."""
        if self.helped and min(r for _, r in self.helped) < round:
            self.helped = {(p, r) for p, r in self.helped if r >= round}

    def records(self, start: int, count: int,
                then: Callable[[tuple[RoundRecord, ...]], None]) -> None:
        """Hand `then` our records from round `start` (at most `count`, consecutive): from
        memory, or read back from disk when they are older than the window (an empty tuple
        for rounds before our log's beginning)."""
        node = self.node
        if start < self.history_base or start >= node.round:
            then(())
        elif start >= self.kept_from:
            begin = start - self.kept_from
            then(tuple(self.history[begin : begin + count]))
        else:
            keys = [f"log/{r}" for r in range(start, min(start + count, node.round))]
            node.load(keys, lambda values: then(_leading_records(values)))

    def routes(self) -> list[Route]:
        return [Route(SyncRequest, self.on_request, from_observers=True),
                Route(SyncResponse, self.on_response, to_followers=True)]

    def on_timer(self, name: str) -> None:
        if name != "follow":
            raise ProtocolError(f"unknown sync timer {name!r}")
        if not self.node.finished:
            self.poll()
            self.follow()

    def follow(self) -> None:
        """A follower polls the members for records every round timeout."""
        self.node.set_timer(self, "follow", self.node.config.round_timeout)

    # ---- asking --------------------------------------------------------------------------

    def request(self, peer: int, from_round: int | None = None, force: bool = False) -> None:
        """Ask `peer` for its records from `from_round` (default: ours). One unforced request
        is outstanding at a time; a forced one goes out regardless and blocks nothing."""
        node = self.node
        if not force:
            if node.now < self.until:
                return
            self.until, self.peer = node.now + node.config.round_timeout, peer
        start = node.round if from_round is None else max(0, from_round)
        node.send(peer, SyncRequest(node.round, start, node.config.sync_batch))

    def poll(self) -> None:
        """Silence may mean everyone else moved on: ask the next peer in turn for records."""
        node = self.node
        peers = [m for m in node.membership.members
                 if m != node.id and m not in node.accountability.excluded]
        if peers:
            self.turn = (self.turn + 1) % len(peers)
            self.request(peers[self.turn])

    # ---- answering -----------------------------------------------------------------------

    def on_request(self, env: Envelope) -> None:
        req: SyncRequest = env.message  # type: ignore[assignment]
        if req.from_round < 0 or req.count <= 0:
            self.node.reject("bad_sync_request", env.sender)
            return
        # answer even with nothing: the asker learns our round and stops waiting on us
        self.send_records(env.sender, req.from_round, req.count)

    def help(self, peer: int, round: int) -> None:
        """`peer` is still in `round`, which we committed: hand it our records once."""
        if (peer, round) not in self.helped:
            self.helped.add((peer, round))
            self.send_records(peer, round)

    def send_records(self, peer: int, from_round: int, count: int | None = None) -> None:
        node = self.node
        count = min(count or node.config.sync_batch, node.config.sync_batch)
        # none before our log's beginning: the asker will ask for a checkpoint
        self.records(from_round, count,
                     lambda records: node.send(peer, SyncResponse(node.round, records)))

    # ---- replaying -----------------------------------------------------------------------

    def on_response(self, env: Envelope) -> None:
        resp: SyncResponse = env.message  # type: ignore[assignment]
        node = self.node
        if env.sender == self.peer:
            self.until = -1.0
        if not node.finished and (resp.round - node.round > node.config.checkpoint_gap or (
                not resp.records and resp.round > node.round + 1)):
            # far behind, or the peer holds no records from our round on (it started from a
            # checkpoint itself): fetch a state rather than the rounds
            node.checkpoints.request()
            return
        applied = 0
        for record in resp.records:
            if record.round < node.round:
                self._compare(record, env.sender)
                continue
            if record.round != node.round or node.finished:
                continue  # not next in line here (records are normally consecutive)
            problem = self.adopt(record)
            if problem:
                node.reject(problem, env.sender)
                if problem == "sync_other_model":  # their round was built on another model
                    node.accountability.probe_fork(env.sender)
                break
            applied += 1
        if resp.round > node.round and not node.finished:
            # more to fetch: at once after a full batch, else (records we could not use yet,
            # e.g. handed to us unasked) once the outstanding request had its time
            self.request(env.sender, force=bool(applied) and applied == len(resp.records))

    def _compare(self, theirs: RoundRecord, peer: int) -> None:
        """A peer's record of a round we committed: the same outcome as ours, or a fork."""
        def compare(ours: tuple[RoundRecord, ...]) -> None:
            if ours:
                self.node.accountability.compare_records(ours[0], theirs, peer)

        self.records(theirs.round, 1, compare)

    def replay(self, records: list[RoundRecord]) -> str | None:
        """Verify and apply committed rounds from the node's round on, exactly as state sync
        does (signatures, the set, the commit certificate, the recomputed model hash): the
        audit of a node's log. Returns why the first bad record was refused, or None."""
        node = self.node
        node.out = []
        for record in records:
            if record.round != node.round:
                return f"record for round {record.round} where {node.round} was next"
            problem = self.adopt(record)
            if problem:
                return f"round {record.round}: {problem}"
        return None

    def adopt(self, record: RoundRecord) -> str | None:
        checked = self._verify(record)
        if isinstance(checked, str):
            return checked
        proposal, grads, cert = checked
        protocol = self.node.protocol
        protocol.sets[cert.set_digest] = proposal
        result = protocol.state.results[cert.set_digest] = protocol.apply(grads, cert.set_digest)
        if result[2] != cert.model_hash:
            return "sync_bad_result"
        protocol.commit(proposal, grads, cert, record.prepared, via_sync=True)
        return None

    def _verify(self, record: RoundRecord) -> tuple[Envelope, list[Envelope], Certificate] | str:
        """Check a replayed round: a leader-signed proposal, signed gradients matching its set,
        built on our model, and a commit certificate for that set."""
        node = self.node
        try:
            proposal = node.open(record.proposal)
            grads = [node.open(f) for f in record.gradients]
        except DecodeError as err:
            return f"sync_{err.reason}"
        p = proposal.message
        if not isinstance(p, Proposal) or p.round != record.round or node.intake.proposal_problem(
                proposal):
            return "sync_bad_proposal"
        problem = self._set_problem(p, grads, record.round)
        if problem:
            return problem
        members = node.membership.member_set
        cert = check_certificate(record.certificate, node.open, members, record.round, COMMIT)
        if isinstance(cert, str):
            return f"sync_{cert}"
        if cert.set_digest != set_digest(p):
            return "sync_certificate_other_set"
        if record.prepared:
            prepared = check_certificate(record.prepared, node.open, members, record.round,
                                         PREPARE)
            if isinstance(prepared, str) or (prepared.view, prepared.set_digest,
                                             prepared.model_hash) != (
                    cert.view, cert.set_digest, node.model_hash):
                return "sync_bad_prepared"
        return proposal, grads, cert

    def _set_problem(self, p: Proposal, grads: list[Envelope], round: int) -> str | None:
        """The gradients must be the set's, valid, of the round, built on our model."""
        node = self.node
        if len(grads) != len(p.senders):
            return "sync_bad_set"
        for env, sender, digest in zip(grads, p.senders, p.digests, strict=True):
            g = env.message
            if (not isinstance(g, Gradient) or env.sender != sender or env.digest != digest
                    or g.round != round or node.intake.gradient_problem(env)):
                return "sync_bad_set"
            if g.base_hash != node.model_hash:
                return "sync_other_model"
        return None


def _leading_records(values: tuple[Stored | None, ...]) -> tuple[RoundRecord, ...]:
    """The records a disk read found, up to the first key it holds none for."""
    records = []
    for value in values:
        if not isinstance(value, RoundRecord):
            break
        records.append(value)
    return tuple(records)
