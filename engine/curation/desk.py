"""The curation desk: everything a curation node holds and computes, sans-IO.

A desk keeps two curation logs over the same tasks:

- `held`: every record the node verified, from its own annotators (`submit`), from peers
  (`receive`) and from committed rounds. What it holds and has not seen committed is
  *pending*: offered to the round (`proposal`) until a round commits it. Its store is the
  node's durable copy: a submission is in it before `submit` returns.
- `committed`: only what rounds committed (`commit`), in round order. It is a pure function
  of committed data, so every node that reached round r holds the same committed log, the
  same snapshot `root` and the same `labels()`; a voter checks a leader's batch against it
  (`batch_problem`).

Reads (`labels`, `annotator`, `leaderboard`, `stats`, `export_labels`) are of the committed
snapshot; `head`, `next_tasks` and `pending` see the pending records too, since an annotator
must never be handed a task they already answered, committed or not.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from phalanx.net.crypto import verify_signature

from .aggregate import LabelRow, aggregate_labels
from .assignment import AssignmentPolicy, CandidateOrder, LeaseRanks, assignments, holds
from .io import Label, label_rows, labels_jsonl, labels_parquet
from .log import AnswerRow, CurationLog, LogLimits, MergeReport, Verify
from .records import (
    GENESIS,
    RecordRefused,
    SignedAnnotation,
    decode_annotation,
    signed_message,
)
from .reputation import ReputationPolicy, Standing, reputation
from .store import MemoryStore, RecordStore
from .tally import ChoiceTally
from .tasks import Task, TaskError, TaskSet

__all__ = ["AnnotatorView", "CurationDesk", "LabelRow", "PlatformStats", "RoundPoint",
           "merge_tasks"]

T = TypeVar("T")
DEFAULT_POLICY = AssignmentPolicy()
DEFAULT_LIMITS = LogLimits()
HISTORY_POINTS = 1000  # rounds kept in `stats().history`: enough for a chart, bounded
ALPHA_GROWTH = 1.05  # a history point gets alpha once the log grew 5% since the last one
MAX_ORPHANS = 4096  # forwarded records held back until their predecessor arrives


@dataclass(frozen=True, slots=True)
class AnnotatorView:
    """One annotator as the platform sees them (committed records, except `pending`)."""

    annotator: bytes
    committed: int
    pending: int
    gold_seen: int
    gold_correct: int
    weight: float  # in [0, 1]: what their answers weigh in the labels
    reward: float
    suspended: bool
    flags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RoundPoint:
    """A round that committed records: how many the log held after it, and the agreement."""

    round: int
    records: int
    alpha: float | None


@dataclass(frozen=True, slots=True)
class PlatformStats:
    round: int  # the last committed round (-1: none yet)
    root: bytes
    tasks: int
    gold: int
    records: int
    pending: int
    annotators: int
    labelled: int  # tasks with a label (free text excluded)
    mean_confidence: float | None
    alpha: float | None  # Krippendorff's alpha (nominal) over single-choice answers
    history: tuple[RoundPoint, ...]


def merge_tasks(current: TaskSet, more: TaskSet) -> tuple[TaskSet, int]:
    """`current` grown by the tasks of `more` it lacks, and how many those were. TaskError
    when `more` reuses a task id for a different task (an id names one task forever)."""
    fresh = [t for d, t in more.tasks.items() if d not in current.tasks]
    for task in fresh:
        if task.id in current.by_id:
            raise TaskError(f"task id {task.id[:40]!r} is taken by a different task")
    if not fresh:
        return current, 0
    gold = {current.tasks[d].id: a for d, a in current.gold.items()}
    gold.update((more.tasks[d].id, a) for d, a in more.gold.items() if d not in current.tasks)
    return TaskSet([*current.tasks.values(), *fresh], gold), len(fresh)


class _Without(Mapping[bytes, Collection[bytes]]):
    """task -> answerers, leaving out `absent` (the suspended) as each task is read."""

    def __init__(self, groups: Mapping[bytes, set[bytes]], absent: frozenset[bytes]) -> None:
        self._groups = groups
        self._absent = absent

    def __getitem__(self, task: bytes) -> Collection[bytes]:
        return self._groups[task] - self._absent

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._groups)

    def __len__(self) -> int:
        return len(self._groups)


class CurationDesk:
    def __init__(self, tasks: TaskSet, *, policy: AssignmentPolicy = DEFAULT_POLICY,
                 store: RecordStore | None = None, limits: LogLimits = DEFAULT_LIMITS,
                 reputation: ReputationPolicy | None = None,
                 verify: Verify | None = None) -> None:
        """`store`: where held records are kept (reloaded, and checked again, from it);
        `verify`: the signature check (a shared cache in the simulator)."""
        self.tasks = tasks
        self.policy = policy
        self.reputation_policy = reputation  # None: off, every annotator weighs 1
        self._verify = verify or verify_signature
        self._held = CurationLog(tasks, store if store is not None else MemoryStore(), limits,
                                 self._verify)
        self._committed = CurationLog(tasks, MemoryStore(), limits, self._verify_known)
        self.limits = limits
        self.round = -1  # the last committed round
        self.counts: Counter[str] = Counter()  # refusals by reason, and "equivocation"
        self._answered_by: dict[bytes, set[bytes]] = {}  # annotator -> tasks (held)
        self._answerers: dict[bytes, set[bytes]] = {}  # task -> annotators (held)
        self._history: list[RoundPoint] = []
        self._orphans: dict[bytes, SignedAnnotation] = {}  # digest -> record awaiting its prev
        self._pending: dict[bytes, SignedAnnotation] = {}  # held, not committed
        self._uncertain: tuple[int, dict[bytes, float]] | None = None  # (round, by task)
        self._cache: dict[str, Any] = {}  # derived from the committed log, per commit
        self._ranks = LeaseRanks(policy)
        self._tally = ChoiceTally()  # the committed single-choice answers, for alpha
        self._order: CandidateOrder | None = None  # see _candidate_order
        self._order_basis: tuple[Any, frozenset[bytes], TaskSet] = ({}, frozenset(), tasks)
        for digest in self._held.digests():
            self._note(digest)

    def _verify_known(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        """The committed log's signature check: a record this node verified when it took it
        (same digest, key and signature) is not verified twice."""
        digest = message[-32:]
        held = self._held.get(digest) if message == signed_message(digest) else None
        if held is not None and held.signature == signature and (
                held.body.annotator == public_key):
            return True
        return self._verify(public_key, message, signature)

    # --- intake --------------------------------------------------------------------------

    def submit(self, record: bytes) -> bytes:
        """Verify and hold one annotator's record; its digest once durable, or RecordRefused
        (its reason counted in `counts`)."""
        try:
            digest = self._held.add(record)
        except RecordRefused as e:
            self.counts[e.reason] += 1
            raise
        self._note(digest)
        return digest

    def receive(self, records: Iterable[bytes]) -> MergeReport:
        """Records a peer forwarded: the new ones verified and held, those held already
        skipped silently (peers resend what is pending until it commits). One that arrives
        ahead of its predecessor waits among the orphans (at most MAX_ORPHANS, the oldest
        dropped) and is taken once the predecessor comes. Other refusals are counted."""
        refused: Counter[str] = Counter()
        fresh = self._unheld(records, refused)
        for digest in [d for d in self._orphans if d in self._held]:  # came by a commit
            del self._orphans[digest]
        report = self._held.merge([*fresh, *self._orphans.values()])
        for digest in report.accepted:
            self._orphans.pop(digest, None)
            self._note(digest)
        for record in fresh:  # the gaps among the new: kept to retry, not refused; only
            # those that fail for the gap alone (a forged one would be retried forever)
            if record.body.prev not in self._held and (
                    self._held.batch_problem([record.encode()]) == "sequence_gap"):
                self._orphans[record.digest] = record
        while len(self._orphans) > MAX_ORPHANS:
            del self._orphans[next(iter(self._orphans))]
        refused.update({reason: count for reason, count in report.refused.items()
                        if reason not in ("sequence_gap", "replay")})  # orphans; held
        self.counts.update(refused)
        if report.equivocations:
            self.counts["equivocation"] += report.equivocations
        return MergeReport(report.accepted, refused, report.equivocations)

    def _unheld(self, records: Iterable[bytes], refused: Counter[str]
                ) -> list[SignedAnnotation]:
        """The decodable records of a forwarded batch not held yet (nor waiting as orphans);
        the undecodable and those past the batch bound counted in `refused`."""
        fresh = []
        for n, data in enumerate(records):
            if n >= self.limits.max_batch:
                refused["flood"] += 1
                continue
            try:
                record = decode_annotation(data)
            except RecordRefused as e:
                refused[e.reason] += 1
                continue
            if record.digest not in self._held and record.digest not in self._orphans:
                fresh.append(record)
        return fresh

    def _note(self, digest: bytes) -> None:
        """A record newly held: pending unless committed, and who answered what."""
        record = self._held.get(digest)
        assert record is not None
        if digest not in self._committed:
            self._pending[digest] = record
        body = record.body
        self._answered_by.setdefault(body.annotator, set()).add(body.task)
        group = self._answerers.setdefault(body.task, set())
        group.add(body.annotator)
        if self._order is not None:
            self._order.count(body.task, len(group - self._order_basis[1]))

    def head(self, annotator: bytes) -> tuple[int, bytes]:
        """(next seq, prev digest) of the annotator's next record, pending ones included."""
        return self._held.head(annotator)

    # --- tasks -------------------------------------------------------------------------------

    def add_tasks(self, tasks: TaskSet) -> int:
        """Take the tasks of `tasks` not held yet (a committed import); how many were new.
        TaskError when one reuses a held task's id for different content."""
        grown, added = merge_tasks(self.tasks, tasks)
        if added:
            self.tasks = grown
            self._held.extend_tasks(grown)
            self._committed.extend_tasks(grown)
            self._cache.clear()
        return added

    def task(self, digest: bytes) -> Task | None:
        return self.tasks.get(digest)

    def next_tasks(self, annotator: bytes, count: int) -> list[Task]:
        """Up to `count` tasks for `annotator` (assignment.py's leases over the records this
        node holds, pending ones included, and the annotators it knows): blind, never one
        they answered, gold mixed in. Within one node a slot is leased once; two nodes that
        hold different pending records may lease it twice (a task then gets more than k
        answers, never fewer) until a round commits what they hold."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        mine = self._answered_by.get(annotator, set())
        # the roster: every annotator this node has seen (pending records too: annotators
        # at work here share the slots even before a round commits their first record);
        # a suspended one holds no lease (they are shown gold only, to earn their way back)
        # and their answers fill no slot: the task goes to someone who counts
        suspended, roster, answered = self._lease_basis(annotator)
        picks = assignments(annotator, tasks=self.tasks, answered=answered, roster=roster,
                            committed_round=max(self.round, 0),
                            done=self._held.records_of(annotator), policy=self.policy,
                            order=self._candidate_order(suspended), ranks=self._ranks)
        # a suspended annotator's own answers fill no slot, so picks may include them
        fresh = (self.tasks.tasks[t] for t in picks if t not in mine)
        return list(itertools.islice(fresh, count))

    def _lease_basis(self, annotator: bytes) -> tuple[
            frozenset[bytes], set[bytes], Mapping[bytes, Collection[bytes]]]:
        """The suspended set, the roster and who answered what, as leases read them: every
        annotator this node has seen (pending records too: annotators at work here share the
        slots even before a round commits their first record); a suspended one holds no
        lease (they are shown gold only, to earn their way back) and their answers fill no
        slot: the task goes to someone who counts."""
        suspended = self._suspended()
        roster = (set(self._answered_by) | {annotator}) - suspended
        answered: Mapping[bytes, Collection[bytes]] = (
            _Without(self._answerers, suspended) if suspended else self._answerers)
        return suspended, roster, answered

    def still_offered(self, annotator: bytes, task: bytes) -> bool:
        """Whether `annotator` may still answer `task` here: a gold task they have not
        answered, or a lease they hold now. A client that fetched tasks a while ago checks
        this before answering: a lease held in an earlier epoch may have passed to someone
        else, and answering it anyway gives the task more than k answers."""
        if task in self._answered_by.get(annotator, set()) or task not in self.tasks:
            return False
        if self.tasks.is_gold(task):
            return True
        _, roster, answered = self._lease_basis(annotator)
        epoch = max(self.round, 0) // self.policy.lease_rounds
        return holds(annotator, task, answered.get(task, ()), roster, epoch, self.policy,
                     self._ranks)

    def _candidate_order(self, suspended: frozenset[bytes]) -> CandidateOrder:
        """The regular tasks in the order they are offered, kept up to date by `_note`;
        built again when the uncertainty, the suspended set or the tasks change."""
        uncertainty = self._uncertainty()
        ranked_by, left_out, over = self._order_basis
        if self._order is None or uncertainty is not ranked_by or suspended != left_out or (
                self.tasks is not over):
            counts = {t: len(group - suspended) for t, group in self._answerers.items()}
            self._order = CandidateOrder(self.tasks, counts, uncertainty)
            self._order_basis = (uncertainty, suspended, self.tasks)
        return self._order

    def _uncertainty(self) -> Mapping[bytes, float]:
        """1 − confidence of each labelled task: the order in which tasks are offered. The
        labels of the current snapshot when they were computed anyway, else those of a
        snapshot at most `lease_rounds` rounds old (recomputing them for every assignment
        after every commit would cost more than the assignment; the order only ranks tasks,
        the leases still decide who may take which)."""
        stale = self._uncertain is None or self.round - self._uncertain[0] >= (
            self.policy.lease_rounds)
        if stale or ("labels" in self._cache and self._uncertain[0] != self.round):  # type: ignore[index]
            self._uncertain = (self.round, {row.task: 1.0 - row.confidence
                                            for row in self.labels()
                                            if row.confidence is not None})
        return self._uncertain[1]  # type: ignore[index]

    # --- the round -------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        return len(self._pending)

    def pending_records(self) -> list[bytes]:
        """Every pending record, encoded, chain order (annotator, seq, digest)."""
        return [r.encode() for _, r in self._pending_sorted()]

    def _pending_sorted(self) -> list[tuple[bytes, SignedAnnotation]]:
        return sorted(self._pending.items(),
                      key=lambda p: (p[1].body.annotator, p[1].body.seq, p[0]))

    def proposal(self, max_records: int = 512, max_bytes: int = 256 * 1024) -> list[bytes]:
        """Pending records for a leader's proposal, in chain order, each linking to the
        committed log or to an earlier one of the batch, within both bounds."""
        out: list[bytes] = []
        taken: set[bytes] = set()
        size = 0
        for digest, record in self._pending_sorted():
            if len(out) >= max_records:
                break
            prev = record.body.prev
            if prev != GENESIS and prev not in self._committed and prev not in taken:
                continue  # its predecessor waits for a later batch: so does it
            data = record.encode()
            if size + len(data) > max_bytes:
                continue
            out.append(data)
            taken.add(digest)
            size += len(data)
        return out

    def batch_problem(self, records: Sequence[bytes]) -> str | None:
        """Why a proposal carrying `records` must not be voted for (a refusal reason of
        records.REFUSALS), or None."""
        return self._committed.batch_problem(records)

    def commit(self, records: Sequence[bytes], round: int) -> None:
        """Round `round` committed `records`: into the committed log (and held, if new)."""
        if round <= self.round:
            raise ValueError(f"round {round} committed after round {self.round}")
        self.round = round
        if not records:
            return
        report = self._committed.merge(records)
        for digest in report.accepted:
            self._pending.pop(digest, None)
        self._tally.update(self._committed, self._answer_keys(report.accepted))
        new = [d for d in report.accepted if d not in self._held]
        if new:
            for digest in self._held.merge(self._committed.encoded(new)).accepted:
                self._note(digest)
            if self._orphans:  # some may follow what just came
                self.receive([])
        self._cache.clear()
        self._history.append(RoundPoint(round, len(self._committed), self._history_alpha()))
        del self._history[:-HISTORY_POINTS]

    def _answer_keys(self, digests: Iterable[bytes]) -> set[tuple[bytes, bytes]]:
        bodies = (self._committed.get(d).body for d in digests)  # type: ignore[union-attr]
        return {(body.task, body.annotator) for body in bodies}

    def _history_alpha(self) -> float | None:
        """Alpha for the history point of a commit: computed once the committed log grew by
        ALPHA_GROWTH since the last point that has one (every node commits the same batches,
        so every node skips the same points), None in between; a chart draws the others."""
        last = next((p.records for p in reversed(self._history) if p.alpha is not None), 0)
        if last and len(self._committed) < last * ALPHA_GROWTH:
            return None
        return self._alpha()

    # --- reads: the committed snapshot --------------------------------------------------

    @property
    def root(self) -> bytes:
        return self._committed.root

    @property
    def committed(self) -> int:
        return len(self._committed)

    @property
    def held(self) -> CurationLog:
        """Every verified record (read-only use: sync, proofs)."""
        return self._held

    @property
    def committed_log(self) -> CurationLog:
        """The committed records (read-only use: proofs, audits)."""
        return self._committed

    def _cached(self, key: str, make: Callable[[], T]) -> T:
        """`make()`, computed once per committed snapshot (commits and task imports clear
        the cache)."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]  # type: ignore[no-any-return]

    def answers(self) -> list[AnswerRow]:
        """The committed answers (one per task and annotator; equivocators left out)."""
        return self._cached("answers", self._committed.answers)

    def _committed_answered(self) -> Mapping[bytes, frozenset[bytes]]:
        return self._cached("answered", self._committed.answered)

    def _suspended(self) -> frozenset[bytes]:
        """The annotators the committed snapshot's reputation suspends (none with reputation
        off: no standings computed for that)."""
        if self.reputation_policy is None:
            return frozenset()
        return self._cached("suspended", lambda: frozenset(
            a for a, s in self.standings().items() if s.suspended))

    def is_suspended(self, annotator: bytes) -> bool:
        """Whether the committed snapshot's reputation suspends `annotator` (what an intake
        checks: one set lookup, the standings computed at most once per commit)."""
        return annotator in self._suspended()

    def _committed_annotators(self) -> list[bytes]:
        return self._cached("annotators", lambda: sorted(
            {a for group in self._committed_answered().values() for a in group}))

    def standings(self) -> Mapping[bytes, Standing]:
        """Each annotator's standing over the committed answers."""
        return self._cached("standings", self._standings)

    def _standings(self) -> dict[bytes, Standing]:
        # The one place standings are computed: reputation.py over the committed answers
        # (equivocators included, to flag them), or, with reputation off, weight 1 for all.
        policy = self.reputation_policy
        if policy is not None:
            return reputation(self.answers(), self.tasks, None, policy,
                              equivocators=self._committed.equivocators)
        seen: Counter[bytes] = Counter()
        correct: Counter[bytes] = Counter()
        answered: Counter[bytes] = Counter()
        for row in self.answers():
            gold = self.tasks.gold.get(row.task)
            answered[row.annotator] += 1
            seen[row.annotator] += gold is not None
            correct[row.annotator] += gold is not None and gold == row.answer
        return {a: Standing(weight=1.0, skill=0.0, gold_seen=seen[a], gold_correct=correct[a],
                            answers=answered[a], accepted=0, flags=(), suspended=False,
                            reward=0.0)
                for a in self._committed_annotators()}

    def labels(self) -> list[LabelRow]:
        """The label of every task with a committed answer, by task id."""
        def make() -> list[LabelRow]:
            weights = {a: s.weight for a, s in self.standings().items()}
            return aggregate_labels(self.tasks, self.answers(), weights)
        return self._cached("labels", make)

    def annotator(self, annotator: bytes) -> AnnotatorView:
        standing = self.standings().get(annotator)
        committed = self._committed.records_of(annotator)
        pending = max(0, self._held.records_of(annotator) - committed)
        if standing is None:
            return AnnotatorView(annotator, committed, pending, 0, 0, 1.0, 0.0, False, ())
        return AnnotatorView(annotator, committed, pending, standing.gold_seen,
                             standing.gold_correct, standing.weight, standing.reward,
                             standing.suspended, tuple(standing.flags))

    def leaderboard(self, limit: int = 50) -> list[AnnotatorView]:
        """Annotators by reward, then committed records, then key; at most `limit`."""
        views = [self.annotator(a) for a in self._committed_annotators()]
        views.sort(key=lambda v: (-v.reward, -v.committed, v.annotator))
        return views[:max(0, limit)]

    def stats(self) -> PlatformStats:
        labelled = [row for row in self.labels() if row.confidence is not None]
        confidence = (math.fsum(r.confidence for r in labelled) / len(labelled)  # type: ignore[misc]
                      if labelled else None)
        return PlatformStats(self.round, self.root, len(self.tasks), len(self.tasks.gold),
                             self.committed, self.pending, len(self._committed_annotators()),
                             len(labelled), confidence, self._alpha(), tuple(self._history))

    def _alpha(self) -> float | None:
        """Krippendorff's alpha (nominal) over the committed single-choice answers (tally.py:
        counted as rounds commit, so no pass over the log)."""
        return self._cached("alpha", self._tally.alpha)

    def export_labels(self, fmt: Literal["jsonl", "parquet"]) -> bytes:
        """The labels with their confidence and provenance (io.py's formats)."""
        if fmt not in ("jsonl", "parquet"):
            raise ValueError(f"format must be jsonl or parquet, got {str(fmt)[:20]!r}")
        chosen = {row.task: Label(row.answer, row.confidence) for row in self.labels()
                  if row.answer is not None and row.confidence is not None}
        rows = label_rows(self.tasks, self.answers(), chosen.get)
        return labels_jsonl(rows) if fmt == "jsonl" else labels_parquet(rows)

    def close(self) -> None:
        self._held.close()
