"""Accountability: proofs of equivocation, exclusion, and the search for forks.

Two signed messages of one sender for one slot (a gradient of a round, a proposal of a view, a
vote of a phase) are evidence of equivocation: the evidence is broadcast, every honest node
verifies it and excludes the sender from then on (and passes the proof on under its own
signature, so every honest node gets it). Exclusions survive a restart with the disk.

Beyond the fault bound a fork is possible, and it must never be silent. A node that meets a
gradient or record built on another model, and every finished node every two view timeouts
(it asks the next peer in turn for its last round's record: "accountability/audit"), compares
the two records of the round: their gradients, proposals, commit certificates and the prepare
certificates they keep. Signers of two messages for one slot are accused; so are members that
broke a lock: a commit vote for one set in view v beside a prepare vote for another set in a
later view that cites a justification older than v (prepare votes carry the view of the
certificate they rely on). When the round holds no proof, the node fetches the rounds before
it, where the fork may have begun.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from phalanx.engine.consensus import (
    check_certificate,
    conflicting,
    equivocations,
    signed_in,
    slot_of,
)
from phalanx.engine.events import Excluded
from phalanx.engine.node.service import Disk, ProtocolError, Route, Service
from phalanx.net.envelope import Envelope
from phalanx.net.errors import DecodeError
from phalanx.net.messages import COMMIT, Evidence, RoundRecord, SyncRequest, Vote

if TYPE_CHECKING:
    from phalanx.engine.node.node import Node


class Accountability(Service):
    name = "accountability"
    messages = (Evidence,)

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        self.excluded: dict[int, bytes] = {}  # peer -> the Evidence frame that excluded it
        self.slots: dict[tuple[int, ...], Envelope] = {}  # first gradient/proposal per slot
        self.probed: set[tuple[int, int]] = set()  # (peer, round) we asked for a fork check
        self.traced: set[tuple[int, int]] = set()  # (peer, round) a fork we traced back from
        self.audited = 0  # the last peer the finished node compared heads with

    def routes(self) -> list[Route]:
        return [Route(Evidence, self.on_evidence, to_followers=True)]

    def restore(self, disk: Disk) -> None:
        for key in disk:  # exclusions survive a restart with the disk (keys only: the log's
            proof = disk[key] if key.startswith("evidence/") else None  # records stay there)
            if isinstance(proof, bytes):
                offender = int(key.split("/", 1)[1])
                self.excluded[offender] = proof
                self.node.reputation[offender] = 0.0

    def on_timer(self, name: str) -> None:
        if name != "audit":
            raise ProtocolError(f"unknown accountability timer {name!r}")
        if self.node.finished:
            self.audit_head()

    @property
    def interval(self) -> float:
        """How often a finished node compares its head with a peer's."""
        return self.node.config.audit_interval or 2 * self.node.config.view_timeout

    def forget_before(self, round: int) -> None:
        for key in [k for k in self.slots if k[2] < round]:
            del self.slots[key]
        oldest = round - self.node.config.history_window  # forks older than the window
        if self.traced and min(r for _, r in self.traced) < oldest:
            self.traced = {t for t in self.traced if t[1] >= oldest}

    # ---- equivocation --------------------------------------------------------------------

    def is_equivocation(self, env: Envelope) -> bool:
        """File the first gradient/proposal of each slot; a different one proves equivocation."""
        slot = slot_of(env)
        if slot is None:
            return False
        first = self.slots.setdefault(slot, env)
        if first is not env and conflicting(first, env):
            self.accuse(first, env)
            return True
        return False

    def accuse(self, first: Envelope, second: Envelope) -> None:
        frame = self.node.broadcast(Evidence(self.node.round, first.frame, second.frame))
        self.exclude(first.sender, frame)

    def on_evidence(self, env: Envelope) -> None:
        ev: Evidence = env.message  # type: ignore[assignment]
        node = self.node
        try:
            first, second = node.open(ev.first), node.open(ev.second)
        except DecodeError:
            node.reject("bad_evidence", env.sender)
            return
        if not conflicting(first, second) or first.sender not in node.membership.member_set:
            node.reject("bad_evidence", env.sender)
            return
        if first.sender in self.excluded or first.sender == node.id:
            return
        # pass it on under our own signature: every honest node gets the proof even if the
        # accuser sent it to some peers only
        self.exclude(first.sender, node.broadcast(Evidence(node.round, ev.first, ev.second)))

    def exclude(self, offender: int, proof: bytes) -> None:
        node = self.node
        if offender in self.excluded or offender == node.id:
            return
        self.excluded[offender] = proof
        node.reputation[offender] = 0.0
        node.persist(f"evidence/{offender}", proof)
        node.emit(Excluded(node.id, offender, node.round, proof))
        for book in node.protocol.books.values():
            book.drop_sender(offender)
        # its gradients already held stay: a set naming one may be certified already, and
        # then every node must apply (and log) it; the protocol keeps the offender out of new
        # sets, and the inbox ignores its later gradients

    # ---- forks ---------------------------------------------------------------------------

    def probe_fork(self, peer: int) -> None:
        """A peer in our round built its gradient on another model: either it lies, or two
        commit certificates exist for our last round (more than f Byzantine signers). Fetch its
        record of that round once, to compare certificates."""
        node = self.node
        if node.round > 0 and (peer, node.round) not in self.probed:
            if self.probed and min(r for _, r in self.probed) < node.round:
                self.probed = {p for p in self.probed if p[1] == node.round}  # only ours is asked
            self.probed.add((peer, node.round))
            node.send(peer, SyncRequest(node.round, node.round - 1, 1))

    def compare_records(self, ours: RoundRecord, theirs: RoundRecord, peer: int) -> None:
        """Two commit certificates for one round naming different outcomes cannot both come
        from honest quorums unless more than f signers equivocated. Every signer of two
        different votes for the same (round, view, phase) is accused with the pair as proof, so
        a fork beyond the fault bound is never silent. Certificates from different views need
        the prepare votes to assign blame; then the records of the rounds before are fetched,
        because the fork may have begun earlier, in one view."""
        if ours.certificate == theirs.certificate:
            return
        node = self.node
        cert = check_certificate(theirs.certificate, node.open,
                                 frozenset(node.membership.members_at(theirs.round)),
                                 theirs.round, COMMIT)
        if isinstance(cert, str):
            node.reject(f"sync_{cert}", peer)
            return
        mine = [node.open(f) for f in ours.certificate]
        first: Vote = mine[0].message  # type: ignore[assignment]
        if (first.set_digest, first.model_hash) == (cert.set_digest, cert.model_hash):
            return  # the same outcome, certified by another quorum (or view)
        node.reject("fork_detected", peer)
        # the records' gradients, proposals and votes side by side: after a fork, the twins of
        # an equivocator sign different gradients for the rounds that follow
        accused = False
        for first_env, second in equivocations([*signed_in(ours, node.open),
                                                 *signed_in(theirs, node.open)]):
            if first_env.sender not in self.excluded and first_env.sender != node.id:
                self.accuse(first_env, second)
                accused = True
        if not accused and ours.round > 0 and (peer, ours.round) not in self.traced:
            self.traced.add((peer, ours.round))
            start = max(0, ours.round - node.config.sync_batch)
            node.send(peer, SyncRequest(node.round, start, ours.round - start))

    def audit_head(self) -> None:
        """Anti-entropy of a finished node: ask the next peer in turn for its record of our
        last round; the answer is compared with ours (`compare_records`)."""
        node = self.node
        node.set_timer(self, "audit", self.interval)
        peers = [m for m in node.membership.members if m != node.id and m not in self.excluded]
        if peers and node.sync.history:
            self.audited = (self.audited + 1) % len(peers)
            node.send(peers[self.audited], SyncRequest(node.round, node.round - 1, 1))
