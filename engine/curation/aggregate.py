"""The label of every task from its committed answers: one rule per schema kind.

=============== =================================================================== ==========
kind            rule                                                                method
=============== =================================================================== ==========
single_choice   Dawid–Skene over every task with the same options (option indices as dawid_skene
                classes); weighted majority vote when a group has a single           / majority
                annotator or no task with two answers (Dawid–Skene has nothing to
                learn there)
multi_label     each option in when its weighted vote share is above one half       majority
rating          weighted mean; the answer is the scale step nearest to it           mean
pairwise        Bradley–Terry over the completions of every pairwise task: the      bradley_terry
                stronger of a task's two wins; a task with only ties is a tie
free_text       no label, only the count of answers                                 none
=============== =================================================================== ==========

Confidence is the posterior (Dawid–Skene), the vote share (majority, per option averaged for
multi_label), the share of weight on the chosen step (rating) or P(winner beats loser)
(Bradley–Terry). Weights come from reputation (1.0 when none is given); an annotator of weight
0 counts for nothing. Everything is a function of the answers and weights alone (ids sorted
before use), so every node computes the same labels from the same committed records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from phalanx.net.crypto import sha256

from .labels import Annotations, BradleyTerry, Comparisons, DawidSkene, LabelError, MajorityVote
from .log import AnswerRow
from .tasks import Answer, Task, TaskSet

__all__ = ["LabelRow", "aggregate_labels"]

Value = str | float | list[str] | None


@dataclass(frozen=True, slots=True)
class LabelRow:
    """A task's label: in the task's own terms (`value`), as an Answer (`answer`, None for
    free text and unlabelled tasks), how sure (`confidence` in [0, 1], None without a
    label), from how many answers and by which method."""

    task: bytes
    task_id: str
    kind: str
    value: Value
    answer: Answer | None
    confidence: float | None
    answers: int
    method: str


def aggregate_labels(tasks: TaskSet, rows: Sequence[AnswerRow],
                     weights: Mapping[bytes, float] | None = None) -> list[LabelRow]:
    """One row per task with at least one answer, in task-id order."""
    weight = weights or {}
    by_task: dict[bytes, list[AnswerRow]] = {}
    for row in rows:
        if weight.get(row.annotator, 1.0) > 0.0 and row.task in tasks:
            by_task.setdefault(row.task, []).append(row)
    labels: dict[bytes, LabelRow] = {}
    choice_groups: dict[tuple[str, ...], list[bytes]] = {}
    pairwise: list[bytes] = []
    for digest, answers in by_task.items():
        task = tasks.tasks[digest]
        if task.kind == "single_choice":
            choice_groups.setdefault(task.options, []).append(digest)
        elif task.kind == "pairwise":
            pairwise.append(digest)
        elif task.kind == "multi_label":
            labels[digest] = _multi_label(task, answers, weight)
        elif task.kind == "rating":
            labels[digest] = _rating(task, answers, weight)
        else:
            labels[digest] = LabelRow(digest, task.id, task.kind, None, None, None,
                                      len(answers), "none")
    for options, group in sorted(choice_groups.items()):
        labels.update(_single_choice(tasks, len(options), group, by_task, weight))
    labels.update(_pairwise(tasks, pairwise, by_task))
    return sorted(labels.values(), key=lambda row: row.task_id)


def _row(task: Task, digest: bytes, answer: Answer, confidence: float, answers: int,
         method: str) -> LabelRow:
    # the digest is passed in: hashing every task again would cost more than the labels
    return LabelRow(digest, task.id, task.kind, task.value_of(answer), answer,
                    min(1.0, max(0.0, confidence)), answers, method)


def _single_choice(tasks: TaskSet, classes: int, group: list[bytes],
                   by_task: Mapping[bytes, list[AnswerRow]], weight: Mapping[bytes, float]
                   ) -> dict[bytes, LabelRow]:
    records = [(d.hex(), r.annotator.hex(), r.answer.choice[0])
               for d in group for r in by_task[d]]
    data = Annotations.from_records(records, classes=list(range(classes)))
    learnable = len(data.workers) > 1 and int(data.labels_per_task().max()) > 1
    method = "dawid_skene" if learnable else "majority_vote"
    try:
        if learnable:
            probas = DawidSkene().fit(data).probas_
        else:
            skills = {a.hex(): w for a, w in weight.items()}
            probas = MajorityVote().fit(data, skills=skills).probas_
    except LabelError:  # cannot happen on records checked by the log; stay total anyway
        method = "majority_vote"
        probas = MajorityVote().fit(data).probas_
    out = {}
    for digest in group:
        shares = probas[digest.hex()]
        best = max(range(classes), key=lambda c: (shares[c], -c))  # ties: the lowest index
        out[digest] = _row(tasks.tasks[digest], digest, Answer((best,)), shares[best],
                           len(by_task[digest]), method)
    return out


def _weighted(answers: Iterable[AnswerRow], weight: Mapping[bytes, float]
              ) -> list[tuple[float, AnswerRow]]:
    return [(weight.get(r.annotator, 1.0), r) for r in answers]


def _multi_label(task: Task, answers: list[AnswerRow], weight: Mapping[bytes, float]
                 ) -> LabelRow:
    votes = _weighted(answers, weight)
    total = sum(w for w, _ in votes)
    chosen, sure = [], 0.0
    for option in range(len(task.options)):
        share = sum(w for w, r in votes if option in r.answer.choice) / total
        if share > 0.5:
            chosen.append(option)
        sure += max(share, 1.0 - share)
    return _row(task, answers[0].task, Answer(tuple(chosen)), sure / len(task.options),
                len(answers), "majority_vote")


def _rating(task: Task, answers: list[AnswerRow], weight: Mapping[bytes, float]) -> LabelRow:
    votes = _weighted(answers, weight)
    total = sum(w for w, _ in votes)
    mean_step = sum(w * r.answer.choice[0] for w, r in votes) / total
    step = min(task.rating_steps(), max(0, round(mean_step)))
    share = sum(w for w, r in votes if r.answer.choice[0] == step) / total
    low, _, size = task.scale
    row = _row(task, answers[0].task, Answer((step,)), share, len(answers), "mean")
    return LabelRow(row.task, row.task_id, row.kind, low + mean_step * size, row.answer,
                    row.confidence, row.answers, row.method)


def _item(text: str) -> str:
    """A completion's id for Bradley–Terry: the same text is the same item in every task."""
    return sha256(text.encode()).hex()


def _pairwise(tasks: TaskSet, group: list[bytes], by_task: Mapping[bytes, list[AnswerRow]]
              ) -> dict[bytes, LabelRow]:
    comparisons = []
    for digest in group:
        left, right = (_item(t) for t in tasks.tasks[digest].completions)
        for row in by_task[digest]:
            pick = row.answer.choice[0]
            if pick < 2 and left != right:
                comparisons.append((left, right, left if pick == 0 else right))
    scores = (BradleyTerry().fit(Comparisons.from_records(comparisons)).scores_
              if comparisons else {})
    out = {}
    for digest in group:
        task = tasks.tasks[digest]
        left, right = (_item(t) for t in task.completions)
        answers = by_task[digest]
        if left not in scores or right not in scores or left == right:
            ties = sum(1 for r in answers if r.answer.choice[0] == 2)
            out[digest] = _row(task, digest, Answer((2,)), ties / len(answers), len(answers),
                               "bradley_terry")
            continue
        p_left = scores[left] / (scores[left] + scores[right])
        pick, sure = (0, p_left) if p_left >= 0.5 else (1, 1.0 - p_left)
        out[digest] = _row(task, digest, Answer((pick,)), sure, len(answers), "bradley_terry")
    return out
