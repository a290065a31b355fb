"""Curation as a service of the node (engine/node/service.py): what a round commits is the
annotation records themselves.

- **Intake** (`on_local`, op "submit"): an annotator's signed record is verified by the
  node's desk, persisted, acknowledged with its digest and forwarded to the members
  (`CurationRecords`); op "import" does the same for a task import (`CurationTasks`).
- **Collected** records (a batch crowd's, `CurationSetup.crowd_records`): the setup's
  `crowd_node` takes them when it starts, each verified as a submission, and forwards them.
- **Pending** records and imports are forwarded again every `offer_interval` until a round
  commits them, so a Byzantine leader that leaves one out only delays it, and a node cut
  off by a partition offers what it took once the cut heals.
- **The round**: a leader's fresh proposal carries a `CurationBatch` (pending records in
  chain order, bounded in count and bytes, and at most one task import); a voter refuses
  the proposal unless every record verifies and links to the committed log or to an earlier
  record of the batch, and the import fits the task set (node rejection
  "proposal_curation_<reason>"); every node that commits the round, by vote or by state
  sync, merges the batch into its committed log. A round with nothing to curate carries
  nothing, so proposals without curation keep their bytes.
- **Store** (keys under "curation/"): `r/<digest>` every record held (acknowledged ones
  before the answer leaves), `i/<digest>` pending imports, `c/<round>` each committed batch.
  A restart rebuilds the held log from `r/`, replays the `c/` batches of the rounds its
  checkpoint covers, and state sync brings the rest.

Refused records from peers count in the node's rejections as "curation_<reason>" (a record
forwarded twice, or ahead of its predecessor, is not an offence and is not counted there).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from phalanx.engine.events import CurationCommitted, LocalAnswer, LocalRequest
from phalanx.engine.node.service import Disk, ProtocolError, Route, Service
from phalanx.net.crypto import sha256
from phalanx.net.envelope import Envelope
from phalanx.net.errors import DecodeError

from .assignment import AssignmentPolicy
from .desk import CurationDesk, merge_tasks
from .log import LogLimits, Verify
from .messages import (
    MAX_BATCH_RECORDS,
    MAX_FORWARD_RECORDS,
    CurationRecords,
    CurationTasks,
    decode_batch,
    decode_import,
    encode_batch,
)
from .records import RecordRefused, decode_annotation
from .reputation import ReputationPolicy
from .tasks import TaskError, TaskSet

if TYPE_CHECKING:
    from phalanx.engine.node.node import Node

__all__ = ["CurationService", "CurationSetup"]

BENIGN = frozenset({"replay", "sequence_gap"})  # what honest forwarding causes too
MAX_PENDING_IMPORTS = 16  # task imports held at once, waiting for a round


@dataclass(frozen=True)
class CurationSetup:
    """What every curation node of a run shares: the tasks it starts from, the assignment
    policy, the log's bounds and the batch bounds (a voter refuses a batch over them)."""

    tasks: TaskSet
    policy: AssignmentPolicy = field(default_factory=AssignmentPolicy)
    limits: LogLimits = field(default_factory=LogLimits)
    max_records: int = 512
    max_bytes: int = 256 * 1024
    offer_interval: float = 1.0  # seconds between offers of what is still pending
    verify: Verify | None = None  # a shared signature cache (the simulator)
    reputation: ReputationPolicy | None = field(default_factory=ReputationPolicy)  # None: off
    # a batch crowd's signed records (engine/curation/crowd_records.py), collected before
    # the run: node `crowd_node` (the first honest member) submits them all when it starts
    crowd_records: tuple[bytes, ...] = ()
    crowd_node: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.max_records <= MAX_BATCH_RECORDS:
            raise ValueError(f"max_records must be in 1..{MAX_BATCH_RECORDS}")
        if self.max_bytes < 1 or self.offer_interval <= 0:
            raise ValueError("max_bytes and offer_interval must be positive")


class _NodeStore:
    """The desk's record store on the node's own store: records come back from the disk a
    restart hands over; each new one is written as a Persist action, ahead of anything the
    service sends or answers next."""

    def __init__(self, service: CurationService, disk: Disk | None = None) -> None:
        self.service = service
        self.disk = disk or {}

    def records(self) -> Iterator[bytes]:
        for key in sorted(k for k in self.disk if k.startswith("curation/r/")):
            value = self.disk[key]
            if isinstance(value, bytes):
                yield value

    def append(self, batch: Sequence[tuple[bytes, bytes]]) -> None:
        for digest, data in batch:
            self.service.persist(f"r/{digest.hex()}", data)

    def close(self) -> None:
        self.disk = {}


class CurationService(Service):
    """Subclass per run with `CurationService.configured(setup)`: a node builds its
    services from classes."""

    name = "curation"
    messages = (CurationRecords, CurationTasks)
    setup: ClassVar[CurationSetup]

    @classmethod
    def configured(cls, setup: CurationSetup) -> type[CurationService]:
        return type("CurationService", (cls,), {"setup": setup})

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        self.desk = self._new_desk({})
        self.imports: dict[bytes, bytes] = {}  # digest -> encoded import, pending
        self._checked: tuple[bytes, int, str | None] | None = None  # the last verdict

    def _new_desk(self, disk: Disk) -> CurationDesk:
        s = self.setup
        return CurationDesk(s.tasks, policy=s.policy, store=_NodeStore(self, disk),
                            limits=s.limits, reputation=s.reputation, verify=s.verify)

    def routes(self) -> list[Route]:
        return [Route(CurationRecords, self.on_records, from_observers=True),
                Route(CurationTasks, self.on_tasks, from_observers=True)]

    # --- restart ---------------------------------------------------------------------------

    def restore(self, disk: Disk) -> None:
        self.desk = self._new_desk(disk)
        batches = sorted((int(k.rsplit("/", 1)[1]), k) for k in disk
                         if k.startswith("curation/c/"))
        for round, key in batches:
            if round < self.node.round:  # the rounds the node's checkpoint covers
                self._apply(disk[key], round)  # type: ignore[arg-type]
        if self.desk.round < self.node.round - 1:
            self.desk.commit([], self.node.round - 1)
        for key in sorted(k for k in disk if k.startswith("curation/i/")):
            value = disk[key]
            if isinstance(value, bytes):
                with contextlib.suppress(TaskError):  # one a commit covered since, say
                    self._hold_import(value, persist=False)

    def start(self) -> None:
        if self.setup.crowd_records and self.node.id == self.setup.crowd_node:
            self._take_collected(self.setup.crowd_records)
        self.node.set_timer(self, "offer", self.setup.offer_interval)

    def _take_collected(self, records: Sequence[bytes]) -> None:
        """Records collected elsewhere, in chain order: each verified and held exactly as a
        submission is, then forwarded. Those the node holds already (a restart: its store
        has them) are skipped without a word; a refused one is counted in `desk.counts`."""
        taken = []
        for data in records:
            try:
                if decode_annotation(data).digest in self.desk.held:
                    continue
                self.desk.submit(data)
            except RecordRefused:
                continue
            taken.append(data)
        self._forward(taken)

    # --- intake ----------------------------------------------------------------------------

    def on_local(self, request: LocalRequest) -> LocalAnswer:
        if request.op == "submit":
            return self._submit(request)
        if request.op == "import":
            return self._import(request)
        return self.refuse(request, "unknown_op", "curation takes submit or import")

    def _submit(self, request: LocalRequest) -> LocalAnswer:
        try:
            digest = self.desk.submit(request.data)  # persisted through the store
        except RecordRefused as e:
            return self.refuse(request, e.reason, str(e)[:200])
        self._forward([request.data])
        return LocalAnswer(self.node.id, self.name, "submit", request.token, True, digest)

    def _import(self, request: LocalRequest) -> LocalAnswer:
        try:
            added = self._hold_import(request.data, persist=True)
        except TaskError as e:
            return self.refuse(request, "invalid_import", str(e).splitlines()[0][:200])
        if added:
            self.node.broadcast(CurationTasks(self.node.round, request.data))
        return LocalAnswer(self.node.id, self.name, "import", request.token, True,
                           added.to_bytes(4, "big"))

    def _hold_import(self, data: bytes, persist: bool) -> int:
        """Hold a task import until a round commits it; how many of its tasks are new
        (0: nothing to hold). TaskError when it does not decode or clashes."""
        _, added = merge_tasks(self.desk.tasks, decode_import(data))
        digest = sha256(data)
        if added and digest not in self.imports:
            if len(self.imports) >= MAX_PENDING_IMPORTS:
                raise TaskError(f"{MAX_PENDING_IMPORTS} task imports already wait for a "
                                f"round; try again in a moment")
            self.imports[digest] = data
            if persist:
                self.persist(f"i/{digest.hex()}", data)
        return added

    def on_records(self, env: Envelope) -> None:
        message: CurationRecords = env.message  # type: ignore[assignment]
        if len(message.records) > MAX_FORWARD_RECORDS:
            self.node.reject("curation_flood", env.sender)
            return
        report = self.desk.receive(message.records)
        for reason, count in sorted(report.refused.items()):
            if reason not in BENIGN:
                for _ in range(count):
                    self.node.reject(f"curation_{reason}", env.sender)

    def on_tasks(self, env: Envelope) -> None:
        message: CurationTasks = env.message  # type: ignore[assignment]
        try:
            self._hold_import(message.tasks, persist=True)
        except TaskError:
            self.node.reject("curation_invalid_import", env.sender)

    # --- forwarding ------------------------------------------------------------------------

    def _forward(self, records: list[bytes]) -> None:
        for start in range(0, len(records), MAX_FORWARD_RECORDS):
            chunk = records[start:start + MAX_FORWARD_RECORDS]
            self.node.broadcast(CurationRecords(self.node.round, tuple(chunk)))

    def on_timer(self, name: str) -> None:
        if name != "offer":
            raise ProtocolError(f"unknown curation timer {name!r}")
        if self.node.finished:
            return  # no round will take them now
        pending = self.desk.proposal(self.setup.max_records, self.setup.max_bytes)
        if pending:
            self._forward(pending)
        for data in self.imports.values():
            self.node.broadcast(CurationTasks(self.node.round, data))
        self.node.set_timer(self, "offer", self.setup.offer_interval)

    # --- the round -------------------------------------------------------------------------

    def contribution(self) -> bytes:
        records = self.desk.proposal(self.setup.max_records, self.setup.max_bytes)
        tasks = min(self.imports.items())[1] if self.imports else b""
        return encode_batch(records, tasks)

    def contribution_problem(self, data: bytes) -> str | None:
        if not data:
            return None
        key = sha256(data)
        if self._checked is not None and self._checked[:2] == (key, self.desk.round):
            return self._checked[2]
        problem = self._batch_problem(data)
        self._checked = (key, self.desk.round, problem)
        return problem

    def _batch_problem(self, data: bytes) -> str | None:
        try:
            batch = decode_batch(data)
        except DecodeError:
            return "curation_malformed"
        if len(batch.records) > self.setup.max_records or (
                sum(map(len, batch.records)) > self.setup.max_bytes):
            return "curation_flood"
        if batch.tasks:
            try:
                merge_tasks(self.desk.tasks, decode_import(batch.tasks))
            except TaskError:
                return "curation_invalid_import"
        problem = self.desk.batch_problem(batch.records)
        return None if problem is None else f"curation_{problem}"

    def on_commit(self, data: bytes) -> None:
        round = self.node.round - 1
        if data:
            self.persist(f"c/{round}", data)
        self._apply(data, round)
        self.node.emit(CurationCommitted(self.node.id, round, self.desk.root, self.desk.committed))

    def _apply(self, data: bytes, round: int) -> None:
        if not data:
            self.desk.commit([], round)
            return
        batch = decode_batch(data)  # certified by a quorum that checked it
        if batch.tasks:
            self.desk.add_tasks(decode_import(batch.tasks))
            self.imports.pop(sha256(batch.tasks), None)
        self.desk.commit(batch.records, round)
        for digest, held in list(self.imports.items()):  # imports another one covered
            if merge_tasks(self.desk.tasks, decode_import(held))[1] == 0:
                del self.imports[digest]
