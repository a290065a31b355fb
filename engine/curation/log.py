"""The replicated curation log: a grow-only set of verified annotation records.

State is a pure function of the set of records held: `merge` is idempotent (a record already
held is a counted "replay" and changes nothing) and order-free — a batch is sorted by
(annotator, seq, digest) before it is applied, so chains link whatever order their records
came in; any two logs holding the same records have the same snapshot root, answers and
equivocators. A record whose predecessor has not arrived is refused as a "sequence_gap" and
taken when it comes again with or after its predecessor (a sync exchange resends what a peer
lacks in one batch, so one full exchange makes two logs equal).

A fork — two records of one annotator with the same seq — is kept: both are signed by the
annotator, so together they prove equivocation; the annotator is marked and `answers` leaves
them out unless asked. Refusals and equivocations are counted by reason in `counts`: a
node's own metrics, not replicated state.

Bounds: a batch of more than `LogLimits.max_batch` records, or records beyond
`max_per_annotator` / `max_records`, are refused as "flood"; a record over the byte, choice
and text bounds as "oversized".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from phalanx.net.crypto import verify_signature
from phalanx.net.merkle import ProofStep, merkle_proof

from .records import (
    GENESIS,
    MAX_RECORD_BYTES,
    RecordRefused,
    SignedAnnotation,
    decode_annotation,
    signed_message,
)
from .store import MemoryStore, RecordStore
from .tasks import Answer, TaskError, TaskSet, ordered_root

__all__ = ["AnswerRow", "CurationLog", "LogLimits", "MergeReport"]

Verify = Callable[[bytes, bytes, bytes], bool]  # (public key, message, signature)


@dataclass(frozen=True, slots=True)
class LogLimits:
    max_batch: int = 10_000
    max_per_annotator: int = 100_000
    max_records: int = 10_000_000


@dataclass(frozen=True, slots=True)
class MergeReport:
    accepted: tuple[bytes, ...]  # digests, in the order applied
    refused: Mapping[str, int]  # reason -> records of this batch
    equivocations: int  # forks among the accepted


@dataclass(frozen=True, slots=True)
class AnswerRow:
    """One annotator's answer to one task, as aggregation reads it."""

    task: bytes
    annotator: bytes
    answer: Answer
    seq: int
    digest: bytes


def _later(seq: int, digest: bytes, other_seq: int, other_digest: bytes) -> bool:
    """Whether a record comes after another of the same annotator: by seq, and between the
    two sides of a fork by the smaller digest (any fixed rule will do; this is the one)."""
    return seq > other_seq or (seq == other_seq and digest < other_digest)


class CurationLog:
    def __init__(self, tasks: TaskSet, store: RecordStore | None = None,
                 limits: LogLimits = LogLimits(), verify: Verify = verify_signature) -> None:
        """A log over `tasks`, reloaded from `store` (every stored record is checked again:
        a disk is trusted no more than a peer)."""
        self.tasks = tasks
        self.limits = limits
        self.counts: Counter[str] = Counter()
        self._store = store if store is not None else MemoryStore()
        self._verify = verify
        self._records: dict[bytes, SignedAnnotation] = {}
        self._at_seq: dict[tuple[bytes, int], list[bytes]] = {}  # (annotator, seq) -> digests
        self._per_annotator: Counter[bytes] = Counter()
        self._equivocators: set[bytes] = set()
        self._last: dict[bytes, tuple[int, bytes]] = {}  # annotator -> (seq, digest) of head
        # (task, annotator) -> (seq, digest) of the latest answer: answers() without a scan
        self._latest: dict[tuple[bytes, bytes], tuple[int, bytes]] = {}
        self._root: bytes | None = None
        self._apply(self._decode_batch(self._store.records(), None, self.counts), self.counts)

    def extend_tasks(self, tasks: TaskSet) -> None:
        """Take a grown task set (a committed import): every task held so far must be in it,
        so no record already taken loses its task."""
        lost = len(self.tasks.tasks.keys() - tasks.tasks.keys())
        if lost:
            raise ValueError(f"the new task set lacks {lost} of the log's tasks")
        self.tasks = tasks

    # --- taking records ---------------------------------------------------------------------

    def merge(self, records: Iterable[bytes | SignedAnnotation],
              expected: Collection[bytes] | None = None) -> MergeReport:
        """Verify and add a batch; refusals are counted, never raised. `expected`: the
        digests asked for when the batch answers a sync request — a record hashing to
        anything else was altered on the way."""
        refused: Counter[str] = Counter()
        batch = self._decode_batch(records, expected, refused, self.limits.max_batch)
        accepted, forks = self._apply(batch, refused)
        # Should the store fail, the error propagates and the node reopens the log from its
        # store: in memory, this batch is already applied.
        self._store.append([(d, self._records[d].encode()) for d in accepted])
        self.counts.update(refused)
        if forks:
            self.counts["equivocation"] += forks
        return MergeReport(tuple(accepted), MappingProxyType(dict(refused)), forks)

    def add(self, record: bytes | SignedAnnotation) -> bytes:
        """Verify and add one record (a submission); its digest, or RecordRefused."""
        try:
            decoded = self._decoded(record)
            digest = decoded.digest
            forks = self._admit(digest, decoded)
        except RecordRefused as e:
            self.counts[e.reason] += 1
            raise
        self._store.append([(digest, decoded.encode())])
        if forks:
            self.counts["equivocation"] += forks
        return digest

    def _decode_batch(self, records: Iterable[bytes | SignedAnnotation],
                      expected: Collection[bytes] | None,
                      refused: Counter[str], limit: int | None = None
                      ) -> list[tuple[bytes, SignedAnnotation]]:
        """Decoded (digest, record) pairs; refusals counted, and records past `limit` refused
        as a flood."""
        batch: list[tuple[bytes, SignedAnnotation]] = []
        for i, item in enumerate(records):
            if limit is not None and i >= limit:
                refused["flood"] += 1
                continue
            try:
                record = self._decoded(item)
                digest = record.digest
                if expected is not None and digest not in expected:
                    raise RecordRefused("altered", "content does not hash to a digest asked for")
                batch.append((digest, record))
            except RecordRefused as e:
                refused[e.reason] += 1
        return batch

    def _decoded(self, item: bytes | SignedAnnotation) -> SignedAnnotation:
        if isinstance(item, SignedAnnotation):
            try:
                data = item.encode()
            except ValueError as e:
                raise RecordRefused("malformed", str(e)[:200]) from None
            if len(data) > MAX_RECORD_BYTES:
                raise RecordRefused("oversized", f"{len(data)} bytes > {MAX_RECORD_BYTES}")
            item = data
        return decode_annotation(item)

    def _apply(self, batch: list[tuple[bytes, SignedAnnotation]],
               refused: Counter[str]) -> tuple[list[bytes], int]:
        """Admit a batch parents first; the digests taken and how many forked a chain."""
        batch.sort(key=lambda pair: (pair[1].body.annotator, pair[1].body.seq, pair[0]))
        accepted: list[bytes] = []
        forks = 0
        for digest, record in batch:
            try:
                forks += self._admit(digest, record)
                accepted.append(digest)
            except RecordRefused as e:
                refused[e.reason] += 1
        return accepted, forks

    def _admit(self, digest: bytes, record: SignedAnnotation) -> int:
        """Check one record against the log and add it; 1 when it forks a chain, else 0."""
        body = record.body
        if digest in self._records:
            raise RecordRefused("replay", f"record {digest.hex()[:16]} is already held")
        if not self._verify(body.annotator, signed_message(digest), record.signature):
            raise RecordRefused("bad_signature", "not signed by the annotator's key")
        self._check_answer(record)
        self._check_link(record)
        if len(self._records) >= self.limits.max_records:
            raise RecordRefused("flood", f"the log holds its limit of "
                                         f"{self.limits.max_records} records")
        if self._per_annotator[body.annotator] >= self.limits.max_per_annotator:
            raise RecordRefused("flood", f"annotator has {self.limits.max_per_annotator} "
                                         f"records, the limit")
        siblings = self._at_seq.setdefault((body.annotator, body.seq), [])
        siblings.append(digest)
        if len(siblings) > 1:
            self._equivocators.add(body.annotator)
        self._records[digest] = record
        self._per_annotator[body.annotator] += 1
        last = self._last.get(body.annotator)
        if last is None or _later(body.seq, digest, *last):
            self._last[body.annotator] = (body.seq, digest)
        key = (body.task, body.annotator)
        best = self._latest.get(key)
        if best is None or _later(body.seq, digest, *best):
            self._latest[key] = (body.seq, digest)
        self._root = None
        return int(len(siblings) > 1)

    def _check_answer(self, record: SignedAnnotation) -> None:
        body = record.body
        task = self.tasks.get(body.task)
        if task is None:
            raise RecordRefused("unknown_task", f"no task {body.task.hex()[:16]}")
        if body.kind != task.kind:
            raise RecordRefused("invalid_answer", f"kind {body.kind[:40]!r} for a "
                                                  f"{task.kind} task")
        try:
            task.validate(body.answer)
        except TaskError as e:
            raise RecordRefused("invalid_answer", str(e)) from None

    def _check_link(self, record: SignedAnnotation,
                    also: Mapping[bytes, SignedAnnotation] | None = None) -> None:
        """`also`: records not held yet that may precede this one (a batch being checked)."""
        body = record.body
        if body.seq == 0 or body.prev == GENESIS:
            if body.seq != 0 or body.prev != GENESIS:
                raise RecordRefused("chain_link", "only seq 0 links to genesis, and it must")
            return
        parent = self._records.get(body.prev)
        if parent is None and also is not None:
            parent = also.get(body.prev)
        if parent is None:
            raise RecordRefused("sequence_gap", f"previous record {body.prev.hex()[:16]} "
                                                f"(seq {body.seq - 1}) is not held")
        if parent.body.annotator != body.annotator:
            raise RecordRefused("chain_link", "previous record is another annotator's")
        if parent.body.seq != body.seq - 1:
            raise RecordRefused("chain_link", f"seq {body.seq} follows seq {parent.body.seq}")

    def batch_problem(self, records: Sequence[bytes]) -> str | None:
        """Why `merge(records)` would not take every record of the batch (the first refusal
        reason, by the order `merge` applies them), or None: each record decodes, is new,
        is signed by its annotator, fits its task, and links to a held record or to an
        earlier one (by seq) of the batch. Changes nothing: what a voter asks of a proposal."""
        if len(records) > self.limits.max_batch:
            return "flood"
        batch: list[tuple[bytes, SignedAnnotation]] = []
        try:
            for item in records:
                record = self._decoded(item)
                batch.append((record.digest, record))
        except RecordRefused as e:
            return e.reason
        batch.sort(key=lambda pair: (pair[1].body.annotator, pair[1].body.seq, pair[0]))
        earlier: dict[bytes, SignedAnnotation] = {}
        grown: Counter[bytes] = Counter()
        for digest, record in batch:
            body = record.body
            if digest in self._records or digest in earlier:
                return "replay"
            if not self._verify(body.annotator, signed_message(digest), record.signature):
                return "bad_signature"
            try:
                self._check_answer(record)
                self._check_link(record, earlier)
            except RecordRefused as e:
                return e.reason
            earlier[digest] = record
            grown[body.annotator] += 1
            if self._per_annotator[body.annotator] + grown[body.annotator] > (
                    self.limits.max_per_annotator):
                return "flood"
        if len(self._records) + len(earlier) > self.limits.max_records:
            return "flood"
        return None

    # --- reading the state ------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, digest: object) -> bool:
        return digest in self._records

    def get(self, digest: bytes) -> SignedAnnotation | None:
        return self._records.get(digest)

    @property
    def root(self) -> bytes:
        """Merkle root over the held digests in bytewise order: what a round commits."""
        if self._root is None:
            self._root = ordered_root(self._records)
        return self._root

    def proof(self, digest: bytes) -> tuple[int, int, list[ProofStep]]:
        """(index, leaf count, Merkle path) showing `digest` is in the snapshot whose root is
        `root`: check with net.merkle.verify_chunk(root, index, count, digest, path).
        KeyError for a record not held."""
        if digest not in self._records:
            raise KeyError(f"record {digest.hex()[:16]} is not held")
        ordered = self.digests()
        index = ordered.index(digest)
        return index, len(ordered), merkle_proof(b"".join(ordered), index, chunk_size=32)

    @property
    def equivocators(self) -> frozenset[bytes]:
        """Annotators with two records at one seq (both kept as evidence)."""
        return frozenset(self._equivocators)

    def records_of(self, annotator: bytes) -> int:
        """How many records of `annotator` the log holds."""
        return self._per_annotator[annotator]

    def head(self, annotator: bytes) -> tuple[int, bytes]:
        """(next seq, prev digest) for the annotator's next record: where a client resumes."""
        last = self._last.get(annotator)
        return (0, GENESIS) if last is None else (last[0] + 1, last[1])

    def answers(self, include_equivocators: bool = False) -> list[AnswerRow]:
        """One answer per (task, annotator) — the annotator's latest (highest seq; a fork's
        tie goes to the smaller digest) — sorted by task digest, then annotator key."""
        skip = () if include_equivocators else self._equivocators
        return [AnswerRow(task, annotator, self._records[digest].body.answer, seq, digest)
                for (task, annotator), (seq, digest) in sorted(self._latest.items())
                if annotator not in skip]

    def latest(self, task: bytes, annotator: bytes) -> AnswerRow | None:
        """The annotator's answer to `task` as `answers(include_equivocators=True)` has it,
        or None."""
        best = self._latest.get((task, annotator))
        if best is None:
            return None
        seq, digest = best
        return AnswerRow(task, annotator, self._records[digest].body.answer, seq, digest)

    def answered(self) -> dict[bytes, frozenset[bytes]]:
        """Task digest -> annotators holding a record for it (equivocators included: they
        did answer, and assignment must not hand them the task again), by task digest."""
        out: dict[bytes, set[bytes]] = {}
        for record in self._records.values():
            out.setdefault(record.body.task, set()).add(record.body.annotator)
        return {task: frozenset(out[task]) for task in sorted(out)}

    # --- sync -------------------------------------------------------------------------------

    def digests(self) -> list[bytes]:
        """Every held digest, bytewise sorted: what a peer is told in a sync exchange."""
        return sorted(self._records)

    def lacking(self, peer_has: Iterable[bytes]) -> list[bytes]:
        """Digests held here that the peer's list lacks (what to send it), sorted."""
        return sorted(self._records.keys() - self._bounded(peer_has))

    def wanted(self, peer_has: Iterable[bytes]) -> list[bytes]:
        """Digests in the peer's list not held here (what to ask it for), sorted."""
        return sorted(self._bounded(peer_has) - self._records.keys())

    def encoded(self, digests: Iterable[bytes]) -> list[bytes]:
        """The held records among `digests`, encoded for the wire (unknown ones skipped)."""
        return [self._records[d].encode() for d in sorted(self._bounded(digests))
                if d in self._records]

    def _bounded(self, digests: Iterable[bytes]) -> set[bytes]:
        out: set[bytes] = set()
        for d in digests:
            if len(out) >= self.limits.max_records:
                raise RecordRefused("flood", f"a digest list longer than "
                                             f"{self.limits.max_records}")
            out.add(d)
        return out

    def close(self) -> None:
        self._store.close()
