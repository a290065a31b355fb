"""The desk's kept-up-to-date structures (the alpha tally, the latest-answer index, the offer
order, the per-epoch lease rankings) against from-scratch computations on random logs: the
same answers, alpha, labels and assignments, bit for bit."""

from __future__ import annotations

import hashlib
import random
import struct
from dataclasses import replace

import pytest

from phalanx.engine.curation.agreement import AgreementError, krippendorff_alpha
from phalanx.engine.curation.assignment import (
    AssignmentPolicy,
    CandidateOrder,
    LeaseRanks,
    assign,
    assignments,
    lease_holders,
)
from phalanx.engine.curation.client import AnnotatorClient
from phalanx.engine.curation.desk import CurationDesk
from phalanx.engine.curation.labels import Annotations
from phalanx.engine.curation.log import AnswerRow, CurationLog
from phalanx.engine.curation.records import sign_annotation
from phalanx.engine.curation.reputation import ReputationPolicy
from phalanx.engine.curation.tasks import Answer, Task, TaskSet
from phalanx.net.crypto import Identity

TASKS = TaskSet(
    [Task.make(id=f"c{i:02d}", kind="single_choice", text=f"item {i}",
               options=("cat", "dog", "bird")) for i in range(14)]
    + [Task.make(id=f"y{i}", kind="single_choice", text=f"yes or no {i}",
                 options=("yes", "no")) for i in range(5)]
    + [Task.make(id="r0", kind="rating", text="how clear?", scale=(1, 5, 1)),
       Task.make(id="m0", kind="multi_label", text="topics", options=("a", "b", "c"))],
    gold={"c00": Answer((0,)), "c01": Answer((1,)), "y0": Answer((0,))})
REGULAR = [t for t in TASKS.tasks.values() if not TASKS.is_gold(t.digest)]


def scratch_answers(log: CurationLog) -> list[AnswerRow]:
    """answers() by a scan over every record: the latest per (task, annotator) by seq, a
    fork's tie to the smaller digest, equivocators left out."""
    latest: dict[tuple[bytes, bytes], tuple[int, bytes]] = {}
    for digest in log.digests():
        body = log.get(digest).body  # type: ignore[union-attr]
        if body.annotator in log.equivocators:
            continue
        key, mine = (body.task, body.annotator), (body.seq, digest)
        best = latest.get(key)
        if best is None or mine[0] > best[0] or (mine[0] == best[0] and mine[1] < best[1]):
            latest[key] = mine
    return [AnswerRow(t, a, log.get(d).body.answer, s, d)  # type: ignore[union-attr]
            for (t, a), (s, d) in sorted(latest.items())]


def scratch_alpha(desk: CurationDesk) -> float | None:
    rows = [(r.task.hex(), r.annotator.hex(), r.answer.choice[0])
            for r in scratch_answers(desk.committed_log)
            if TASKS.tasks[r.task].kind == "single_choice"]
    if not rows:
        return None
    try:
        return krippendorff_alpha(Annotations.from_records(rows))
    except AgreementError:
        return None


def random_answer(rng: random.Random, task: Task) -> Answer:
    if task.kind == "multi_label":
        return Answer(tuple(sorted(rng.sample(range(3), rng.randint(0, 3)))))
    if task.kind == "rating":
        return Answer((rng.randint(0, 4),))
    return Answer((rng.randrange(len(task.options)),))


def random_records(rng: random.Random, annotators: int, count: int
                   ) -> tuple[list[bytes], int]:
    """Records of `annotators` over TASKS, re-answers of one task included, and now and then
    a fork (a second record at a seq already used: equivocation); and how many forks."""
    clients = [AnnotatorClient(Identity.derive(rng.randrange(2**30), n))
               for n in range(annotators)]
    out, forks = [], 0
    for _ in range(count):
        c = rng.choice(clients)
        task = rng.choice(list(TASKS.tasks.values()))
        record = c.sign(task, random_answer(rng, task))
        out.append(record.encode())
        if rng.random() < 0.02:  # the same seq signed again, over other content
            out.append(sign_annotation(c.identity, replace(record.body, client_time_ms=7))
                       .encode())
            forks += 1
    return out, forks


@pytest.mark.parametrize("seed", range(6))
def test_answers_and_alpha_match_a_from_scratch_computation(seed: int) -> None:
    rng = random.Random(seed)
    desk = CurationDesk(TASKS, policy=AssignmentPolicy(gold_rate=0.0))
    records, forks = random_records(rng, rng.randint(2, 9), rng.randint(40, 220))
    for n, record in enumerate(records):
        desk.submit(record)
        if rng.random() < 0.1 or n == len(records) - 1:
            while desk.pending and (n == len(records) - 1 or rng.random() < 0.5):
                desk.commit(desk.proposal(rng.randint(1, 60), 10**7), desk.round + 1)
            assert desk.answers() == scratch_answers(desk.committed_log)
            alpha, expected = desk.stats().alpha, scratch_alpha(desk)
            assert (alpha is None and expected is None) or (
                struct.pack(">d", alpha) == struct.pack(">d", expected))  # type: ignore[arg-type]
    assert len(desk.committed_log.equivocators) == len(desk.held.equivocators) > 0 or not forks


def spec_picks(desk: CurationDesk, annotator: bytes, count: int) -> list[bytes]:
    """next_tasks by assignment.py's docstring, from the desk's public reads alone: gold by
    SHA-256 per slot, else the uncertain-first candidates whose lease holders (every
    annotator ranked by weight) include the annotator; never a task they answered."""
    policy = desk.policy
    held = [desk.held.get(d).body for d in desk.held.digests()]  # type: ignore[union-attr]
    suspended = {b.annotator for b in held if desk.is_suspended(b.annotator)}
    answered: dict[bytes, set[bytes]] = {}
    for b in held:
        if b.annotator not in suspended:
            answered.setdefault(b.task, set()).add(b.annotator)
    mine = {b.task for b in held if b.annotator == annotator}
    roster = ({b.annotator for b in held} | {annotator}) - suspended
    scores = {row.task: 1.0 - row.confidence for row in desk.labels()
              if row.confidence is not None}
    candidates = sorted((t.digest for t in REGULAR),
                        key=lambda t: (-scores.get(t, 1.0), len(answered.get(t, ())), t))
    regular = iter([t for t in candidates if annotator in lease_holders(
        t, answered.get(t, set()), roster, max(desk.round, 0), policy)])
    seed = struct.pack(">q", policy.seed)
    out: list[bytes] = []
    n = desk.held.records_of(annotator)
    while len([t for t in out if t not in mine]) < count:
        base = b"phalanx/gold/v1" + seed + annotator + struct.pack(">q", n)
        pick = None
        if int.from_bytes(hashlib.sha256(base).digest()[:8], "big") / 2.0**64 < (
                policy.gold_rate):
            golds = [t for t in TASKS.gold if t not in out
                     and annotator not in answered.get(t, ())]
            pick = min(golds, key=lambda t: hashlib.sha256(base + t).digest(), default=None)
        pick = pick if pick is not None else next(regular, None)
        if pick is None:
            break
        out.append(pick)
        n += 1
    return [t for t in out if t not in mine][:count]


@pytest.mark.parametrize("seed", range(8))
def test_next_tasks_match_the_assignment_spec_computed_from_scratch(seed: int) -> None:
    rng = random.Random(100 + seed)
    policy = AssignmentPolicy(redundancy=rng.choice([1, 2, 3, 5, 40]), gold_rate=rng.choice(
        [0.0, 0.2, 0.5]), lease_rounds=rng.choice([1, 3, 20]), seed=seed)
    # reputation on half the time: a suspended annotator holds no lease and fills no slot
    reputation = ReputationPolicy(min_gold=1, min_gold_accuracy=0.7) if seed % 2 else None
    desk = CurationDesk(TASKS, policy=policy, reputation=reputation)
    annotators = [AnnotatorClient(Identity.derive(seed, n)) for n in range(rng.randint(2, 8))]
    for _ in range(120):
        c = rng.choice(annotators)
        desk.labels()  # read: the offer order follows the snapshot's labels, as the spec's
        want = rng.randint(0, 6)
        got = [t.digest for t in desk.next_tasks(c.public_key, want)]
        assert got == spec_picks(desk, c.public_key, want)
        if got:
            c.resume(*desk.head(c.public_key))
            task = TASKS.tasks[got[0]]
            desk.submit(c.sign(task, random_answer(rng, task)).encode())
        if rng.random() < 0.15:
            desk.commit(desk.proposal(rng.randint(1, 30), 10**7), desk.round + 1)


def test_candidate_order_stays_sorted_as_counts_change() -> None:
    rng = random.Random(5)
    scores = {t.digest: rng.choice([0.0, 0.25, 0.5]) for t in REGULAR[::2]}
    counts = {t.digest: rng.randint(0, 3) for t in REGULAR}
    order = CandidateOrder(TASKS, counts, scores)
    for _ in range(300):
        task = rng.choice(list(TASKS.tasks))  # gold ones too: ignored
        counts[task] = counts.get(task, 0) + rng.randint(0, 2)
        order.count(task, counts[task])
        expected = sorted((t.digest for t in REGULAR),
                          key=lambda t: (-scores.get(t, 1.0), counts.get(t, 0), t))
        assert list(order) == expected


def test_lease_ranks_and_lazy_assignments_give_what_assign_gives() -> None:
    rng = random.Random(9)
    people = [Identity.derive(3, n).public_key for n in range(30)]
    for trial in range(40):
        policy = AssignmentPolicy(redundancy=rng.randint(1, 35), gold_rate=0.3,
                                  lease_rounds=rng.randint(1, 5), seed=trial)
        ranks = LeaseRanks(policy, limit=4)  # smaller than the task set: eviction works
        roster = set(rng.sample(people, rng.randint(1, 30)))
        answered = {t.digest: set(rng.sample(people, rng.randint(0, 6))) for t in REGULAR}
        for _ in range(3):
            who = rng.choice(people)
            rnd = rng.randint(0, 40)
            kwargs = dict(tasks=TASKS, answered=answered, roster=roster, committed_round=rnd,
                          done=rng.randint(0, 9), policy=policy)
            plain = assign(who, 25, **kwargs)  # type: ignore[arg-type]
            lazy = list(assignments(who, ranks=ranks, **kwargs))[:25]  # type: ignore[arg-type]
            assert lazy == plain
            for t in REGULAR[:5]:
                holders = lease_holders(t.digest, answered[t.digest], roster, rnd, policy)
                ranked = [a for a in ranks.ranking(t.digest, roster, rnd // policy.lease_rounds)
                          if a not in answered[t.digest]]
                assert holders == ranked[:len(holders)]
