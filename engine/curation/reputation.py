"""Reputation and rewards: how much each annotator's answers count, from committed data only.

`reputation(answers, tasks, labels, policy)` is a pure function of the committed answers
(`CurationLog.answers()`), the task set with its gold answers, and the policy; every node
holding the same committed records computes the same `Standing` for every annotator, bit for
bit (floats are added and multiplied in one fixed order, no `pow`, `exp` or `log`: libm's may
differ between machines in the last bit).

Skill
-----
Each answer is scored above chance: 1 when right, 0 at chance level (1/k for a task of k
choices), negative when worse than chance — an adversary who always answers wrong lands below
0, a random clicker near 0. Two estimates, each a decayed mean shrunk towards
`prior_skill` by `prior_strength` pseudo-answers:

* gold skill: answers to gold tasks, scored against the known answer — the anchor, which
  colluders cannot fake by agreeing with each other;
* agreement skill: answers to other tasks, scored against the weighted vote of the *other*
  annotators of the task (leave-one-out), weighted by their current weights. The weights start
  from gold skill alone and are refined `iterations` times, so a clique that agrees on wrong
  labels but fails gold carries little weight in the vote it is compared against: it agrees
  with a gold-weighted aggregation, not with the raw majority it might hold on some tasks.

skill = gold_share × gold skill + (1 − gold_share) × agreement skill, and the weight is skill
clipped to [0, 1], halved (`flag_penalty`) per spam flag, 0 once suspended.

Decay runs over the annotator's own signed order of work (`seq`), which every node holds
identically: their newest answer counts 1, the one before `decay`, then `decay`², ...
(half-life ≈ 0.69 / (1 − decay) answers).

Spam signals (flags)
--------------------
* ``too_fast``: the median seconds per task, as the caller measured them (`seconds`: what a
  node saw between an annotator's submissions, see `submission_gaps`; never the client's own
  clock), below `min_seconds` once `min_answers` are timed;
* ``constant``: one answer makes up at least `constant_share` of `min_answers` or more;
* ``low_gold_accuracy``: decayed gold accuracy, shrunk towards a newcomer's like skill,
  below `min_gold_accuracy` after `min_gold` gold answers;
* ``equivocation``: the annotator signed two records at one seq (the log's evidence).

An annotator is suspended when any flag in `suspend_on` is raised, or `suspend_flags` flags at
once. A standing is recomputed from scratch on every commit, so suspension lifts when the
decayed evidence recovers.

Rewards
-------
An answer is accepted when it is right on a gold task, or matches the task's label (from
`labels` when given, else the others' weighted vote) elsewhere; a free-text answer, which
nothing checks, is accepted as given. reward = reward_per_annotation × accepted × weight.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, fields

from .log import AnswerRow
from .tasks import PAIRWISE_CHOICES, Answer, Task, TaskSet

__all__ = ["FLAGS", "ReputationPolicy", "Standing", "reputation", "submission_gaps"]

FLAGS = ("too_fast", "constant", "low_gold_accuracy", "equivocation")


@dataclass(frozen=True, slots=True)
class ReputationPolicy:
    """How skill, spam flags, suspension and rewards are computed (module docstring)."""

    decay: float = 0.99  # per answer; 1.0: every answer counts forever
    gold_share: float = 0.5  # share of skill from gold accuracy, the rest from agreement
    prior_skill: float = 0.5  # skill of a newcomer (0: chance level, 1: perfect)
    prior_strength: float = 4.0  # pseudo-answers the prior weighs
    iterations: int = 3  # rounds of weights -> leave-one-out vote -> weights
    min_answers: int = 10  # answers before the too-fast and constant rules apply
    min_seconds: float = 2.0
    constant_share: float = 0.9
    min_gold: int = 5
    min_gold_accuracy: float = 0.4
    suspend_on: tuple[str, ...] = ("low_gold_accuracy", "equivocation")
    suspend_flags: int = 2
    flag_penalty: float = 0.5  # weight multiplier per flag
    reward_per_annotation: float = 1.0

    def __post_init__(self) -> None:
        shares = ("decay", "gold_share", "prior_skill", "constant_share", "min_gold_accuracy",
                  "flag_penalty")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "suspend_on":
                if not isinstance(value, tuple) or any(v not in FLAGS for v in value):
                    raise ValueError(f"ReputationPolicy.suspend_on must be a tuple of flags "
                                     f"from {', '.join(FLAGS)}")
                continue
            integral = f.type in ("int", int)
            if isinstance(value, bool) or not isinstance(value, int if integral else int | float):
                kind = "an integer" if integral else "a number"
                raise ValueError(f"ReputationPolicy.{f.name} must be {kind}")
            if not value >= 0 or value != value or value == float("inf"):
                raise ValueError(f"ReputationPolicy.{f.name} must be a finite number >= 0")
            if f.name in shares and value > 1:
                raise ValueError(f"ReputationPolicy.{f.name} must be in [0, 1]")
        if self.decay == 0:
            raise ValueError("ReputationPolicy.decay must be in (0, 1]: 0 forgets every answer "
                             "but the last")
        if self.iterations < 1 or self.suspend_flags < 1:
            raise ValueError("ReputationPolicy.iterations and suspend_flags must be >= 1")


@dataclass(frozen=True, slots=True)
class Standing:
    """One annotator's reputation after a committed round."""

    weight: float  # in [0, 1]: how much their answers count in the labels
    skill: float  # above-chance accuracy estimate (may be negative)
    gold_seen: int
    gold_correct: int
    answers: int
    accepted: int
    flags: tuple[str, ...]  # in FLAGS order
    suspended: bool
    reward: float


@dataclass(slots=True)
class _Scored:
    """One answer as reputation reads it; `decay` is its weight in its author's means."""

    row: AnswerRow
    task: Task
    chance: float
    gold: Answer | None
    decay: float = 1.0


def _chance(task: Task) -> float:
    """Probability of hitting one given answer by clicking at random."""
    if task.kind == "multi_label":
        return 0.5 ** min(len(task.options), 60)  # any subset of the options
    if task.kind == "free_text":
        return 0.0  # never scored: nothing to compare free text with
    if task.kind == "rating":
        return 1.0 / (task.rating_steps() + 1)
    return 1.0 / (len(PAIRWISE_CHOICES) if task.kind == "pairwise" else len(task.options))


def _above_chance(right: bool, chance: float) -> float:
    return (float(right) - chance) / (1.0 - chance)


def _shrunk(total: float, mass: float, policy: ReputationPolicy) -> float:
    """A decayed mean pulled towards the prior by `prior_strength` pseudo-answers."""
    strength = policy.prior_strength
    if mass + strength == 0:
        return policy.prior_skill
    return (total + strength * policy.prior_skill) / (mass + strength)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2.0


def _vote_others(scored: list[_Scored], weights: Mapping[bytes, float]
                 ) -> dict[bytes, tuple[int, ...] | None]:
    """For each answer (by digest), the others' weighted vote on its task: the choice with
    the most weight, None when the others weigh nothing or tie at the top."""
    by_task: dict[bytes, list[_Scored]] = {}
    for s in scored:
        if s.gold is None and s.task.kind != "free_text":
            by_task.setdefault(s.row.task, []).append(s)
    out: dict[bytes, tuple[int, ...] | None] = {}
    for group in by_task.values():  # built in (task, annotator) order: a fixed order
        for s in group:
            tally: dict[tuple[int, ...], float] = {}
            for other in group:  # summed afresh: subtracting one's own weight could leave
                if other is not s:  # a rounding residue where the others weigh nothing
                    choice = other.row.answer.choice
                    tally[choice] = tally.get(choice, 0.0) + weights[other.row.annotator]
            best: tuple[int, ...] | None = None
            top = 0.0
            for choice in sorted(tally):
                if tally[choice] > top:
                    best, top = choice, tally[choice]
                elif tally[choice] == top and top > 0:
                    best = None  # a tie says nothing about who is right
            out[s.row.digest] = best
    return out


def _skills(scored: list[_Scored], labels: Mapping[bytes, tuple[int, ...] | None],
            policy: ReputationPolicy, annotators: Iterable[bytes]
            ) -> tuple[dict[bytes, float], dict[bytes, float]]:
    """(gold skill, agreement skill) per annotator; `labels` by answer digest."""
    sums: dict[bytes, list[float]] = {a: [0.0, 0.0, 0.0, 0.0] for a in annotators}
    for s in scored:
        acc = sums[s.row.annotator]
        if s.gold is not None:
            acc[0] += s.decay * _above_chance(s.row.answer == s.gold, s.chance)
            acc[1] += s.decay
        elif (label := labels.get(s.row.digest)) is not None:
            acc[2] += s.decay * _above_chance(s.row.answer.choice == label, s.chance)
            acc[3] += s.decay
    gold = {a: _shrunk(v[0], v[1], policy) for a, v in sums.items()}
    agree = {a: _shrunk(v[2], v[3], policy) for a, v in sums.items()}
    return gold, agree


def _flags(mine: list[_Scored], seconds: Mapping[bytes, float], equivocator: bool,
           policy: ReputationPolicy) -> tuple[str, ...]:
    raised: set[str] = set()
    timed = [seconds[s.row.digest] for s in mine if s.row.digest in seconds]
    if len(timed) >= max(1, policy.min_answers) and _median(timed) < policy.min_seconds:
        raised.add("too_fast")
    choices = Counter(s.row.answer.choice for s in mine if s.task.kind != "free_text")
    total = sum(choices.values())
    if total >= max(1, policy.min_answers) and (
            choices.most_common(1)[0][1] >= policy.constant_share * total):
        raised.add("constant")
    gold = [s for s in mine if s.gold is not None]
    if len(gold) >= max(1, policy.min_gold) and (
            _gold_accuracy(gold, policy) < policy.min_gold_accuracy):
        raised.add("low_gold_accuracy")
    if equivocator:
        raised.add("equivocation")
    return tuple(f for f in FLAGS if f in raised)


def _gold_accuracy(gold: list[_Scored], policy: ReputationPolicy) -> float:
    """Decayed share of right gold answers, shrunk like skill: `prior_strength` pseudo-answers
    at a newcomer's accuracy (prior_skill of the way from chance to perfect), so a few unlucky
    answers of an honest annotator do not read as spam, while an adversary who fails every
    gold task falls below any sensible bound within a handful."""
    right = sum(s.decay for s in gold if s.row.answer == s.gold)
    mass = sum(s.decay for s in gold)
    chance = sum(s.chance for s in gold) / len(gold)
    prior = chance + policy.prior_skill * (1.0 - chance)
    return (right + policy.prior_strength * prior) / (mass + policy.prior_strength)


def _weight(skill: float, flags: tuple[str, ...], suspended: bool,
            policy: ReputationPolicy) -> float:
    if suspended:
        return 0.0
    weight = min(1.0, max(0.0, skill))
    for _ in flags:
        weight *= policy.flag_penalty
    return weight


def reputation(answers: Iterable[AnswerRow], tasks: TaskSet,
               labels: Mapping[bytes, Answer] | None = None,
               policy: ReputationPolicy = ReputationPolicy(), *,
               seconds: Mapping[bytes, float] | None = None,
               equivocators: Collection[bytes] = ()) -> dict[bytes, Standing]:
    """Standing of every annotator with a committed answer (and every equivocator), by
    public key in bytewise order.

    `answers`: one per (task, annotator), as `CurationLog.answers()` gives them; answers to
    tasks not in `tasks` are ignored. `labels`: task digest -> the platform's label, used to
    decide which answers are accepted (rewards); None: the others' weighted vote. Agreement
    skill always uses the gold-weighted leave-one-out vote, whatever `labels` says, so a
    label from an unweighted majority cannot lift colluders. `seconds`: record digest ->
    seconds the annotator took on it, as a node measured (for the too-fast rule).
    """
    seconds = seconds or {}
    by_annotator: dict[bytes, list[_Scored]] = {a: [] for a in equivocators}
    for row in answers:
        task = tasks.get(row.task)
        if task is None:
            continue
        by_annotator.setdefault(row.annotator, []).append(
            _Scored(row, task, _chance(task), tasks.gold.get(row.task)))
    order = sorted(by_annotator)
    for mine in by_annotator.values():
        mine.sort(key=lambda s: (-s.row.seq, s.row.digest))  # newest first
        factor = 1.0
        for s in mine:
            s.decay = factor
            factor *= policy.decay
    scored = sorted((s for a in order for s in by_annotator[a]),
                    key=lambda s: (s.row.task, s.row.annotator))

    equivocating = set(equivocators)
    flags = {a: _flags(by_annotator[a], seconds, a in equivocating, policy) for a in order}
    suspended = {a: any(f in policy.suspend_on for f in flags[a])
                 or len(flags[a]) >= policy.suspend_flags for a in order}

    gold, _ = _skills(scored, {}, policy, order)
    weights = {a: _weight(gold[a], flags[a], suspended[a], policy) for a in order}
    skill = dict(gold)
    for _ in range(policy.iterations):
        votes = _vote_others(scored, weights)
        gold, agree = _skills(scored, votes, policy, order)
        share = policy.gold_share
        skill = {a: share * gold[a] + (1.0 - share) * agree[a] for a in order}
        weights = {a: _weight(skill[a], flags[a], suspended[a], policy) for a in order}

    votes = _vote_others(scored, weights)
    out: dict[bytes, Standing] = {}
    for a in order:
        mine = by_annotator[a]
        gold_rows = [s for s in mine if s.gold is not None]
        gold_right = sum(1 for s in gold_rows if s.row.answer == s.gold)
        accepted = gold_right + sum(1 for s in mine if s.gold is None and _accepted(
            s, labels, votes))
        out[a] = Standing(
            weight=weights[a], skill=skill[a], gold_seen=len(gold_rows),
            gold_correct=gold_right, answers=len(mine), accepted=accepted, flags=flags[a],
            suspended=suspended[a],
            reward=policy.reward_per_annotation * accepted * weights[a])
    return out


def _accepted(s: _Scored, labels: Mapping[bytes, Answer] | None,
              votes: Mapping[bytes, tuple[int, ...] | None]) -> bool:
    if s.task.kind == "free_text":
        return True
    if labels is not None:
        label = labels.get(s.row.task)
        return label is not None and label == s.row.answer
    return votes.get(s.row.digest) == s.row.answer.choice


def submission_gaps(answers: Iterable[AnswerRow], arrived: Mapping[bytes, float]
                    ) -> dict[bytes, float]:
    """Record digest -> seconds since the same annotator's previous record (seq − 1) reached
    the node, from `arrived` (digest -> the node's own clock at intake). A record without a
    timed predecessor has no gap. This is what `reputation(seconds=...)` reads: a client's
    `client_time_ms` is whatever the client says, the node's clock is not."""
    chains: dict[bytes, dict[int, bytes]] = {}
    for row in answers:
        chains.setdefault(row.annotator, {})[row.seq] = row.digest
    gaps: dict[bytes, float] = {}
    for chain in chains.values():
        for seq, digest in chain.items():
            before = chain.get(seq - 1)
            if before in arrived and digest in arrived:
                gaps[digest] = max(0.0, arrived[digest] - arrived[before])
    return gaps
