"""Which tasks an annotator gets next: a pure function of committed, replicated state.

How two nodes never over-assign
-------------------------------
Assignment reads only what every node holds identically after round r commits: the task set,
the curation log's snapshot (who answered which task, committed with its root), the roster of
annotators (committed membership of the curation service), and r itself. From these it grants
*leases*: in lease epoch e = r // lease_rounds, task t has open = k − (answers to t) slots, and
its lease holders are the `open` roster annotators who have not answered t with the highest
weight SHA-256("phalanx/lease/v1" ‖ seed ‖ e ‖ t ‖ annotator) (rendezvous hashing). Every node
computes the same holders, so however many nodes an annotator asks, a task is held by at most
`open` annotators at once: the k slots are never handed out twice. Within an epoch the holders
are stable (an answer removes its author and one slot together, the others keep their rank),
and at the next epoch the weights are redrawn, so a lease held by someone who went away
passes on. The one way past k: a holder who submits after their epoch ended while the new
holder also does; the log keeps both (a label with k + 1 answers is no worse). `holds` is
the check a client makes before answering a task it fetched a while ago.

Blind: the result is task digests; nothing in it depends on what anyone answered, only on
how many did. Priority: among the tasks an annotator holds, the most uncertain first (the
aggregation's score per task in [0, 1]; a task without one counts as 1), then those with the
fewest answers, then by digest.

Gold tasks sit outside the leases (every annotator may be shown each once). The annotator's
n-th task (n = records they hold, then +1 per slot) is gold when
SHA-256("phalanx/gold/v1" ‖ seed ‖ annotator ‖ n), read as a 64-bit fraction, is below
gold_rate; which gold task is the unanswered one of smallest SHA-256(... ‖ n ‖ task).

Cost: a fetch checks leases only until it has `count` tasks. `LeaseRanks` keeps each task's
roster ranked by weight for the current epoch and roster (one SHA-256 per member per task
per epoch instead of per fetch), `CandidateOrder` keeps the priority order up to date as
answers arrive (instead of sorting every task per fetch), and a task with no more eligible
annotators than open slots is held by all of them without a hash. Each gives the same
tasks, in the same order, as the definitions above.
"""

from __future__ import annotations

import bisect
import itertools
import struct
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass

from phalanx.net.crypto import sha256

from .tasks import TaskSet

__all__ = ["AssignmentPolicy", "CandidateOrder", "LeaseRanks", "assign", "assignments",
           "holds", "lease_holders"]

_LEASE = b"phalanx/lease/v1"
_GOLD = b"phalanx/gold/v1"
_INT = struct.Struct(">q")
MAX_RANKED_TASKS = 16384  # tasks whose ranking LeaseRanks keeps (a reference per roster member)


@dataclass(frozen=True, slots=True)
class AssignmentPolicy:
    redundancy: int = 3  # k: answers wanted per task
    gold_rate: float = 0.1  # share of an annotator's tasks that are gold
    lease_rounds: int = 20  # committed rounds a lease lasts
    seed: int = 0

    def __post_init__(self) -> None:
        if self.redundancy < 1:
            raise ValueError(f"redundancy must be >= 1, got {self.redundancy}")
        if not 0.0 <= self.gold_rate <= 1.0:
            raise ValueError(f"gold_rate must be in [0, 1], got {self.gold_rate}")
        if self.lease_rounds < 1:
            raise ValueError(f"lease_rounds must be >= 1, got {self.lease_rounds}")


def _weight(policy: AssignmentPolicy, epoch: int, task: bytes, annotator: bytes) -> bytes:
    return sha256(_LEASE + _INT.pack(policy.seed) + _INT.pack(epoch) + task + annotator)


def lease_holders(task: bytes, answered: Collection[bytes], roster: Collection[bytes],
                  committed_round: int, policy: AssignmentPolicy) -> list[bytes]:
    """The annotators holding a lease on `task` after `committed_round`, highest weight
    first."""
    open_slots = policy.redundancy - len(answered)
    if open_slots <= 0:
        return []
    epoch = committed_round // policy.lease_rounds
    eligible = sorted((a for a in roster if a not in answered),
                      key=lambda a: _weight(policy, epoch, task, a), reverse=True)
    return eligible[:open_slots]


def holds(annotator: bytes, task: bytes, answered: Collection[bytes],
           roster: Collection[bytes], epoch: int, policy: AssignmentPolicy,
           ranks: LeaseRanks | None = None) -> bool:
    """Whether `annotator` is among `lease_holders(task, ...)`, stopping as soon as `open`
    others outrank it."""
    open_slots = policy.redundancy - len(answered)
    if open_slots <= 0 or annotator in answered or annotator not in roster:
        return False
    eligible = len(roster) - sum(1 for a in answered if a in roster)
    if eligible <= open_slots:  # every eligible annotator holds a lease: no ranking needed
        return True
    above = 0
    if ranks is not None:
        for other in ranks.ranking(task, roster, epoch):
            if other == annotator:
                return True
            if other not in answered:
                above += 1
                if above >= open_slots:
                    return False
        raise AssertionError("a roster member is missing from its ranking")
    mine = _weight(policy, epoch, task, annotator)
    for other in roster:
        if other != annotator and other not in answered and (
                _weight(policy, epoch, task, other) > mine):
            above += 1
            if above >= open_slots:
                return False
    return True


class LeaseRanks:
    """Each task's roster ranked by lease weight, highest first, for one epoch and roster:
    the weights are redrawn only per epoch, so a fetch need not hash them again. Keeps at
    most `limit` tasks (the oldest dropped); another epoch or roster starts afresh."""

    def __init__(self, policy: AssignmentPolicy, limit: int = MAX_RANKED_TASKS) -> None:
        self.policy = policy
        self.limit = limit
        self._epoch = -1
        self._roster: frozenset[bytes] = frozenset()
        self._ranked: dict[bytes, list[bytes]] = {}
        self._last: Collection[bytes] | None = None  # the roster object last asked about

    def ranking(self, task: bytes, roster: Collection[bytes], epoch: int) -> list[bytes]:
        """`task`'s roster ranked, highest weight first. A roster that changes must come as
        a new collection (as each fetch builds one), not be changed in place."""
        # one fetch asks with one roster object: compare its members once, not per task
        if epoch != self._epoch or (roster is not self._last and roster != self._roster):
            self._epoch, self._roster = epoch, frozenset(roster)
            self._ranked.clear()
        self._last = roster
        ranked = self._ranked.get(task)
        if ranked is None:
            if len(self._ranked) >= self.limit:
                del self._ranked[next(iter(self._ranked))]
            ranked = sorted(self._roster, key=lambda a: _weight(self.policy, epoch, task, a),
                            reverse=True)
            self._ranked[task] = ranked
        return ranked


class CandidateOrder:
    """The regular (non-gold) tasks in the order `assign` offers them: most uncertain first,
    then fewest answers, then digest. Kept sorted as answer counts change (`count`), so a
    fetch reads it from the front instead of sorting every task."""

    def __init__(self, tasks: TaskSet, counts: Mapping[bytes, int],
                 uncertainty: Mapping[bytes, float] | None = None) -> None:
        scores = uncertainty or {}
        self._key = {t: (-scores.get(t, 1.0), counts.get(t, 0), t)
                     for t in tasks.tasks if not tasks.is_gold(t)}
        self._sorted = sorted(self._key.values())

    def count(self, task: bytes, answers: int) -> None:
        """`task` now has `answers` answers (a gold or unknown task is ignored)."""
        key = self._key.get(task)
        if key is None or key[1] == answers:
            return
        del self._sorted[bisect.bisect_left(self._sorted, key)]
        key = (key[0], answers, task)
        self._key[task] = key
        bisect.insort(self._sorted, key)

    def __iter__(self) -> Iterator[bytes]:
        return (key[2] for key in self._sorted)


def _fraction(digest: bytes) -> float:
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _gold_pick(tasks: TaskSet, annotator: bytes, n: int, policy: AssignmentPolicy,
               skip: Collection[bytes], answered: Mapping[bytes, Collection[bytes]]
               ) -> bytes | None:
    base = _GOLD + _INT.pack(policy.seed) + annotator + _INT.pack(n)
    if _fraction(sha256(base)) >= policy.gold_rate:
        return None
    candidates = [t for t in tasks.gold
                  if t not in skip and annotator not in answered.get(t, ())]
    return min(candidates, key=lambda t: sha256(base + t), default=None)


def assign(annotator: bytes, count: int, *, tasks: TaskSet,
           answered: Mapping[bytes, Collection[bytes]], roster: Collection[bytes],
           committed_round: int, done: int, policy: AssignmentPolicy,
           uncertainty: Mapping[bytes, float] | None = None) -> list[bytes]:
    """Up to `count` task digests for `annotator`, in the order to show them.

    `answered`: task digest -> annotators with a record for it (CurationLog.answered());
    `done`: records the annotator holds (CurationLog.records_of); `roster`: the annotators
    leases go to (an annotator outside it holds none).
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    return list(itertools.islice(assignments(
        annotator, tasks=tasks, answered=answered, roster=roster,
        committed_round=committed_round, done=done, policy=policy,
        uncertainty=uncertainty), count))


def assignments(annotator: bytes, *, tasks: TaskSet,
                answered: Mapping[bytes, Collection[bytes]], roster: Collection[bytes],
                committed_round: int, done: int, policy: AssignmentPolicy,
                uncertainty: Mapping[bytes, float] | None = None,
                order: Iterable[bytes] | None = None, ranks: LeaseRanks | None = None
                ) -> Iterator[bytes]:
    """`assign`'s picks one at a time, for as long as the caller takes them (its first
    `count` are `assign(..., count)`). `order`: the regular tasks in CandidateOrder's order
    over the same `answered` and `uncertainty` (sorted here when None); `ranks`: a
    LeaseRanks for `policy` (weights hashed here when None)."""
    if order is None:
        scores = uncertainty or {}
        order = sorted((t for t in tasks.tasks if not tasks.is_gold(t)),
                       key=lambda t: (-scores.get(t, 1.0), len(answered.get(t, ())), t))
    epoch = committed_round // policy.lease_rounds
    # Lazily: only as many lease checks as it takes to fill the regular slots.
    regular = (t for t in order
               if holds(annotator, t, answered.get(t, ()), roster, epoch, policy, ranks))
    out: list[bytes] = []
    for n in itertools.count(done):
        pick = _gold_pick(tasks, annotator, n, policy, out, answered)
        if pick is None:
            pick = next(regular, None)
        if pick is None:
            return
        out.append(pick)
        yield pick
