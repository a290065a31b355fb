"""Reputation and rewards, from signed records through the curation log's committed answers."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from phalanx.engine.curation.client import AnnotatorClient
from phalanx.engine.curation.labels import Annotations, MajorityVote
from phalanx.engine.curation.log import AnswerRow, CurationLog
from phalanx.engine.curation.records import Annotation, sign_annotation
from phalanx.engine.curation.reputation import (
    ReputationPolicy,
    Standing,
    reputation,
    submission_gaps,
)
from phalanx.engine.curation.tasks import Answer, Task, TaskSet
from phalanx.net.crypto import Identity

N_TASKS, N_GOLD = 40, 10
TRUTH = {f"t{i}": i % 3 for i in range(N_TASKS + N_GOLD)}
TASKS = TaskSet(
    [Task.make(id=t, kind="single_choice", text=f"item {t}", options=("a", "b", "c"))
     for t in TRUTH] + [Task.make(id="note", kind="free_text", text="say", max_length=40)],
    gold={f"t{i}": Answer((TRUTH[f"t{i}"],)) for i in range(N_TASKS, N_TASKS + N_GOLD)})
REGULAR = [f"t{i}" for i in range(N_TASKS)]
GOLD = [f"t{i}" for i in range(N_TASKS, N_TASKS + N_GOLD)]

Behaviour = Callable[[str, random.Random], int]


def honest(accuracy: float) -> Behaviour:
    def answer(task: str, rng: random.Random) -> int:
        return TRUTH[task] if rng.random() < accuracy else (TRUTH[task] + rng.choice((1, 2))) % 3
    return answer


def colluder(task: str, rng: random.Random) -> int:
    return (TRUTH[task] + 1) % 3  # every colluder gives the same wrong label


def constant(task: str, rng: random.Random) -> int:
    return 0


def clicker(task: str, rng: random.Random) -> int:
    return rng.randrange(3)


def key(n: int) -> bytes:
    return Identity.derive(11, n).public_key


def answers(crowd: list[Behaviour], tasks: list[str] | None = None, seed: int = 0,
            log: CurationLog | None = None) -> list[AnswerRow]:
    """Every annotator of `crowd` answers `tasks` (default: all, gold interleaved) in order."""
    log = CurationLog(TASKS) if log is None else log
    order = tasks or [t for pair in zip(REGULAR, GOLD * 4, strict=False) for t in pair] + \
        REGULAR[len(GOLD) * 4:]
    for n, behave in enumerate(crowd):
        rng = random.Random(seed * 1000 + n)
        client = AnnotatorClient(Identity.derive(11, n))
        client.resume(*log.head(client.public_key))
        for t in order:
            log.add(client.sign(TASKS.by_id[t], Answer((behave(t, rng),))))
    return log.answers()


def test_colluders_in_the_majority_still_lose_their_weight() -> None:
    # three colluders and two honest annotators on every task: the raw majority is wrong
    crowd = [honest(0.9), honest(0.85), colluder, colluder, colluder]
    rows = answers(crowd)
    raw = MajorityVote().fit(Annotations.from_records(
        (r.task.hex(), r.annotator.hex(), r.answer.choice[0]) for r in rows
        if not TASKS.is_gold(r.task)))
    wrong = sum(raw.labels_[t.hex()] != TRUTH[TASKS.tasks[t].id] for t in {r.task for r in rows}
                if not TASKS.is_gold(t))
    assert wrong == N_TASKS  # majority vote is fooled on every task

    standing = reputation(rows, TASKS)
    honest_w = [standing[key(n)].weight for n in (0, 1)]
    colluder_w = [standing[key(n)].weight for n in (2, 3, 4)]
    print("honest", honest_w, "colluders", colluder_w)
    assert min(honest_w) > 0.5 and max(colluder_w) == 0.0
    assert all(standing[key(n)].flags == ("low_gold_accuracy",) for n in (2, 3, 4))
    assert all(standing[key(n)].suspended for n in (2, 3, 4))
    assert standing[key(2)].gold_seen == N_GOLD and standing[key(2)].gold_correct == 0
    # the honest agree with the gold-weighted vote (here the other honest one): rewarded
    assert standing[key(0)].accepted > 0.7 * (N_TASKS + N_GOLD)


def test_skill_orders_honest_above_random_and_constant() -> None:
    standing = reputation(answers([honest(0.95), honest(0.7), clicker, constant,
                                   honest(0.9)]), TASKS)
    w = [standing[key(n)].weight for n in range(5)]
    print("weights", w)
    assert w[0] > w[1] > w[2] and w[1] > w[3]
    assert w[2] < 0.35 and w[3] < 0.2
    assert "constant" in standing[key(3)].flags and not standing[key(0)].flags


def test_constant_rule_needs_min_answers() -> None:
    few = answers([constant, honest(0.9), honest(0.9)], tasks=REGULAR[:5])
    assert "constant" not in reputation(few, TASKS)[key(0)].flags
    many = answers([constant, honest(0.9), honest(0.9)], tasks=REGULAR[:12])
    assert "constant" in reputation(many, TASKS)[key(0)].flags
    loose = ReputationPolicy(constant_share=1.0, min_answers=13)
    assert "constant" not in reputation(many, TASKS, policy=loose)[key(0)].flags


def test_too_fast_reads_the_node_clock_not_the_client_clock() -> None:
    rows = answers([honest(0.9), honest(0.9)], tasks=REGULAR[:15])
    fast, slow = key(0), key(1)
    arrived: dict[bytes, float] = {}
    for r in rows:
        arrived[r.digest] = r.seq * (0.5 if r.annotator == fast else 12.0)
    gaps = submission_gaps(rows, arrived)
    assert len(gaps) == 2 * 14  # every record but each annotator's first
    assert {gaps[r.digest] for r in rows if r.annotator == slow and r.seq} == {12.0}
    standing = reputation(rows, TASKS, seconds=gaps)
    assert standing[fast].flags == ("too_fast",) and not standing[fast].suspended
    assert standing[fast].weight == pytest.approx(0.5 * reputation(rows, TASKS)[fast].weight)
    assert standing[slow].flags == ()
    assert reputation(rows, TASKS)[fast].flags == ()  # no timings, no speed rule


def test_two_flags_suspend() -> None:
    rows = answers([constant, honest(0.9), honest(0.9)], tasks=REGULAR[:15])
    seconds = {r.digest: 0.1 for r in rows}
    spammer = reputation(rows, TASKS, seconds=seconds)[key(0)]
    assert spammer.flags == ("too_fast", "constant")
    assert spammer.suspended and spammer.weight == 0.0 and spammer.reward == 0.0
    lenient = ReputationPolicy(suspend_flags=3)
    assert not reputation(rows, TASKS, policy=lenient, seconds=seconds)[key(0)].suspended


def test_equivocation_suspends() -> None:
    log = CurationLog(TASKS)
    ident = Identity.derive(11, 0)
    client = AnnotatorClient(ident)
    first = client.sign(TASKS.by_id["t0"], Answer((0,)))
    log.add(first)
    fork = sign_annotation(ident, Annotation(
        task=TASKS.by_id["t1"].digest, kind="single_choice", annotator=ident.public_key,
        seq=0, prev=bytes(32), choice=(1,), text="", client_time_ms=0))
    log.add(fork)
    assert log.equivocators == {ident.public_key}
    standing = reputation(log.answers(), TASKS, equivocators=log.equivocators)
    assert standing[ident.public_key] == Standing(
        weight=0.0, skill=0.5, gold_seen=0, gold_correct=0, answers=0, accepted=0,
        flags=("equivocation",), suspended=True, reward=0.0)


def test_low_gold_accuracy_needs_min_gold_and_recovers_with_decay() -> None:
    # wrong on every gold task first, then right on every one: with decay the recent
    # evidence wins; without, the early failures still weigh as much
    order = GOLD[:5] + REGULAR[:30] + GOLD[5:]
    def reformed(task: str, rng: random.Random) -> int:
        return (TRUTH[task] + 1) % 3 if task in GOLD[:5] else TRUTH[task]

    rows = answers([reformed, honest(0.95), honest(0.95)], tasks=order)
    remembering = ReputationPolicy(decay=1.0)
    forgetting = ReputationPolicy(decay=0.9)
    kept = reputation(rows, TASKS, policy=remembering)[key(0)]
    faded = reputation(rows, TASKS, policy=forgetting)[key(0)]
    assert kept.gold_seen == faded.gold_seen == 10 and kept.gold_correct == 5
    assert faded.weight > kept.weight
    assert faded.flags == ()
    harsh = ReputationPolicy(decay=1.0, min_gold_accuracy=0.6)
    assert reputation(rows, TASKS, policy=harsh)[key(0)].flags == ("low_gold_accuracy",)
    wrong_gold = [r for r in rows if r.seq < 5]  # five gold answers, all wrong
    assert reputation(wrong_gold, TASKS)[key(0)].flags == ("low_gold_accuracy",)
    assert reputation(wrong_gold, TASKS, policy=ReputationPolicy(min_gold=6)
                      )[key(0)].flags == ()


def test_newcomer_starts_at_the_prior_and_free_text_earns_reward() -> None:
    log = CurationLog(TASKS)
    client = AnnotatorClient(Identity.derive(11, 0))
    log.add(client.sign(TASKS.by_id["note"], Answer(text="a cat")))
    standing = reputation(log.answers(), TASKS, policy=ReputationPolicy(prior_skill=0.3))
    mine = standing[client.public_key]
    assert mine.weight == 0.3 and mine.accepted == 1 and mine.reward == pytest.approx(0.3)


def test_rewards_count_accepted_answers_weighted_by_quality() -> None:
    rows = answers([honest(0.8), honest(0.9), honest(0.9), clicker])
    policy = ReputationPolicy(reward_per_annotation=2.5)
    standing = reputation(rows, TASKS, policy=policy)
    for s in standing.values():
        assert s.reward == pytest.approx(2.5 * s.accepted * s.weight)
    assert standing[key(1)].reward > standing[key(3)].reward
    # the platform's labels, when given, decide acceptance: here the truth
    truth = {TASKS.by_id[t].digest: Answer((c,)) for t, c in TRUTH.items()}
    given = reputation(rows, TASKS, truth, policy)
    for n in range(4):
        right = sum(r.answer == truth[r.task] for r in rows if r.annotator == key(n))
        assert given[key(n)].accepted == right
    assert [given[key(n)].weight for n in range(4)] == [standing[key(n)].weight
                                                      for n in range(4)]


def test_a_pure_function_of_the_answer_set() -> None:
    rows = answers([honest(0.9), honest(0.6), colluder, colluder, clicker, constant], seed=3)
    first = reputation(rows, TASKS)
    for seed in range(3):
        shuffled = rows[:]
        random.Random(seed).shuffle(shuffled)
        again = reputation(shuffled, TASKS)
        assert list(again) == list(first) == sorted(first)
        assert [repr(s) for s in again.values()] == [repr(s) for s in first.values()]
    # a second log fed the same records in another order agrees to the bit
    other = CurationLog(TASKS)
    log = CurationLog(TASKS)
    answers([honest(0.9), honest(0.6), colluder, colluder, clicker, constant], seed=3, log=log)
    report = other.merge(list(reversed(log.encoded(log.digests()))))
    assert not report.refused
    assert [repr(s) for s in reputation(other.answers(), TASKS).values()] == [
        repr(s) for s in first.values()]


@pytest.mark.parametrize(("fields", "message"), [
    ({"decay": 0.0}, "decay must be in (0, 1]"),
    ({"decay": 1.5}, "decay must be in [0, 1]"),
    ({"gold_share": -0.1}, "gold_share must be a finite number >= 0"),
    ({"prior_strength": float("nan")}, "prior_strength must be a finite number >= 0"),
    ({"min_seconds": float("inf")}, "min_seconds must be a finite number >= 0"),
    ({"iterations": 0}, "iterations and suspend_flags must be >= 1"),
    ({"min_gold": 2.5}, "min_gold must be an integer"),
    ({"min_answers": True}, "min_answers must be an integer"),
    ({"reward_per_annotation": "1"}, "reward_per_annotation must be a number"),
    ({"suspend_on": ("spam",)}, "suspend_on must be a tuple of flags from too_fast"),
])
def test_policy_refuses_bad_fields_in_one_line(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match="ReputationPolicy") as caught:
        ReputationPolicy(**fields)  # type: ignore[arg-type]
    assert message in str(caught.value) and "\n" not in str(caught.value)
