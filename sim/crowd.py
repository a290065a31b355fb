"""Simulated annotators at work in a simulated run: they ask a curation node for tasks, answer
at their own pace, sign each answer with their own key and submit it, and resubmit through
another node what a node never got committed.

Each annotator behaves as a real client does: it keeps its own chain head (seq, prev), holds
every record it submitted until it sees it in the committed snapshot, and once a record has
waited `patience` seconds it moves on to the next node of its list and resubmits, in chain
order, everything not yet committed (a Byzantine node may have acknowledged and dropped it).
Everything is drawn from the scenario's seed (keys, first node, start times, answers and
their durations), and every action is an event of the world's clock, so a run stays a pure
function of scenario and seed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from phalanx.engine.curation.client import AnnotatorClient
from phalanx.engine.curation.crowd import SimulatedAnnotator, SimulatedCrowd
from phalanx.engine.curation.crowd_records import annotator_identity
from phalanx.engine.curation.desk import CurationDesk
from phalanx.engine.curation.records import RecordRefused, decode_annotation
from phalanx.engine.curation.tasks import Answer, Task
from phalanx.engine.rng import RngStreams
from phalanx.scenario.crowd import CrowdSection

__all__ = ["CurationPort", "SimulatedAnnotators", "annotator_identity"]


class CurationPort(Protocol):
    """What simulated annotators need of the world: its clock, and each curation node's
    desk (None while the node is down) and intake."""

    @property
    def now(self) -> float: ...

    @property
    def closed(self) -> bool:
        """No round will commit any more (the run's members are done): annotators stop."""
        ...

    def call_at(self, at: float, fn: Callable[..., None], *args: Any) -> None: ...

    def desk(self, node: int) -> CurationDesk | None: ...

    def submit(self, node: int, record: bytes) -> bytes | None:
        """Hand `record` to `node`'s intake as its API would: its digest, None while the
        node is down, RecordRefused when refused."""
        ...


@dataclass(eq=False)
class _Annotator:
    sim: SimulatedAnnotator
    client: AnnotatorClient
    nodes: list[int]  # the curation nodes in the order this annotator tries them
    at: int = 0  # which of them it uses now
    # digest -> (record, when last submitted): submitted, not yet seen committed; in seq order
    waiting: dict[bytes, tuple[bytes, float]] = field(default_factory=dict)
    queue: list[Task] = field(default_factory=list)  # fetched, not yet started on
    worked: bool = False  # answered one of the tasks of its latest fetch

    @property
    def node(self) -> int:
        return self.nodes[self.at]

    def move_on(self) -> None:
        self.at = (self.at + 1) % len(self.nodes)


class SimulatedAnnotators:
    """The crowd of a scenario's `curation.crowd`, working through `port`'s curation nodes."""

    def __init__(self, port: CurationPort, crowd: SimulatedCrowd, section: CrowdSection,
                 nodes: Sequence[int], seed: int, doors: int | None = None) -> None:
        """`nodes`: the curation nodes annotators may submit through; each starts at one of
        the first `doors` of them (default: any), drawn from the seed, and moves on in
        `nodes`' order."""
        if not nodes:
            raise ValueError("simulated annotators need at least one curation node")
        doors = len(nodes) if doors is None else max(1, min(doors, len(nodes)))
        self.port = port
        self.crowd = crowd
        self.section = section
        self.counts: Counter[str] = Counter()  # submitted, resubmitted, refused/<reason>, ...
        streams = RngStreams(seed)
        self._streams = streams
        self.annotators: list[_Annotator] = []
        for i, sim in enumerate(crowd.annotators):
            first = int(streams.stream("curation", "first-node", i).integers(doors))
            order = [*nodes[first:], *nodes[:first]]
            self.annotators.append(_Annotator(sim, AnnotatorClient(annotator_identity(seed, i)),
                                              order))
        self.kinds = {a.client.public_key: a.sim.kind for a in self.annotators}

    def start(self) -> None:
        """Schedule every annotator's first visit."""
        s = self.section
        for i, a in enumerate(self.annotators):
            offset = float(self._streams.stream("curation", "start", i).uniform(0.0, s.stagger))
            self.port.call_at(s.start + offset, self._visit, a)

    # --- one annotator's loop ------------------------------------------------------------

    def _visit(self, a: _Annotator) -> None:
        """Check what got committed, resubmit what waited too long, then fetch tasks."""
        now = self.port.now
        if self.port.closed:
            return
        desk = self.port.desk(a.node)
        if desk is None:  # the node is down: try the next one after a while
            a.move_on()
            self.port.call_at(now + self.section.idle, self._visit, a)
            return
        committed = desk.committed_log
        for digest in [d for d in a.waiting if d in committed]:
            del a.waiting[digest]
            self.counts["committed"] += 1
        if any(at + self.section.patience <= now for _, at in a.waiting.values()):
            a.move_on()
            self.counts["node_switches"] += 1
            desk = self.port.desk(a.node)
            if desk is None:
                self.port.call_at(now + self.section.idle, self._visit, a)
                return
            self._resubmit(a)
        tasks = [t for t in desk.next_tasks(a.client.public_key, self.section.batch)
                 if t.id in self.crowd.truth]  # tasks from elsewhere are not this crowd's
        if not tasks:
            self.port.call_at(now + self.section.idle, self._visit, a)
            return
        a.queue, a.worked = tasks[::-1], False
        self._next(a)

    def _next(self, a: _Annotator) -> None:
        """Start on the next fetched task that is still this annotator's, or visit again.
        The lease may have passed on since the fetch (a new epoch, or others' answers reached
        the node): a careful client asks before starting, so a task gets k answers, not k
        plus everyone who fetched it in an earlier epoch; a task given up costs no time."""
        if self.port.closed:
            return
        desk = self.port.desk(a.node)
        while a.queue:
            task = a.queue.pop()
            if desk is None or desk.still_offered(a.client.public_key, task.digest):
                at = self.port.now + self.crowd.answer(task.id, a.sim).seconds
                self.port.call_at(at, self._answer, a, task)
                return
            self.counts["lease_lost"] += 1
        # back for more at once after some work; after none, only once idle (no busy loop)
        self.port.call_at(self.port.now + (0.0 if a.worked else self.section.idle),
                          self._visit, a)

    def _answer(self, a: _Annotator, task: Task) -> None:
        a.worked = True
        self._work(a, task)
        self._next(a)

    def _work(self, a: _Annotator, task: Task) -> None:
        label = self.crowd.answer(task.id, a.sim).label
        record = a.client.sign(task, Answer((label,)),
                               client_time_ms=int(self.port.now * 1000)).encode()
        self.counts["answered"] += 1
        self._submit(a, record, resubmit=False)

    def _resubmit(self, a: _Annotator) -> None:
        for record, _ in list(a.waiting.values()):
            self._submit(a, record, resubmit=True)

    def _submit(self, a: _Annotator, record: bytes, resubmit: bool) -> None:
        now = self.port.now
        try:
            taken = self.port.submit(a.node, record)
        except RecordRefused as e:
            self.counts[f"refused/{e.reason}"] += 1
            digest = _digest(record)
            if e.reason == "sequence_gap":
                # the node lacks an earlier record of this chain: send the chain (this one
                # last), or, when that is what is being done, wait and try again later
                a.waiting[digest] = (record, now)
                if not resubmit:
                    self._resubmit(a)
                return
            if e.reason != "replay":
                # never takeable (an honest client meets this only past a log's bounds): it
                # is given up, and the chain is never rewound, which would fork it
                a.waiting.pop(digest, None)
                return
            taken = digest  # the node holds it already: wait for it as usual
        if taken is None:  # down since the visit: resubmitted elsewhere at the next one
            a.waiting[_digest(record)] = (record, float("-inf"))
            return
        self.counts["resubmitted" if resubmit else "submitted"] += 1
        a.waiting[taken] = (record, now)


def _digest(record: bytes) -> bytes:
    return decode_annotation(record).digest
