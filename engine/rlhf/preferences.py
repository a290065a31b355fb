"""Preferences from committed curation data: what the reward model and DPO train on.

`collect_preferences(desk, toy)` reads the desk's committed snapshot only (`desk.labels()`,
`desk.root`, `desk.round`), so every node that committed the same log builds the same bytes
(`PreferenceSet.digest()`), whatever records it holds pending. Each pairwise task labelled
left or right becomes one pair, chosen and rejected by the label, weighted by its confidence;
the rest is skipped and counted by reason:

============== ===========================================================================
reason         the task
============== ===========================================================================
not_pairwise   is not a pairwise task
unlabelled     has no committed answer, or a label without a confidence
tie            was labelled a tie
unparseable    has a prompt or completion that is not the toy's token text (`toy.parse`)
============== ===========================================================================
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from phalanx.engine.curation.aggregate import LabelRow
from phalanx.engine.curation.desk import CurationDesk
from phalanx.engine.curation.tasks import Task

from .data import Preference, PreferenceSet
from .toy import ToyTask

__all__ = ["SKIP_REASONS", "PreferenceReport", "collect_preferences", "preference_set"]

SKIP_REASONS = ("not_pairwise", "unlabelled", "tie", "unparseable")
LEFT, RIGHT = 0, 1


@dataclass(frozen=True)
class PreferenceReport:
    """What became of the desk's tasks: `used` pairs, and the rest skipped by reason (every
    reason of SKIP_REASONS present, 0 when none)."""

    used: int
    skipped: Mapping[str, int]

    @property
    def total(self) -> int:
        return self.used + sum(self.skipped.values())


def preference_set(desk: CurationDesk, toy: ToyTask) -> PreferenceSet:
    """The preferences of the desk's committed snapshot (see `collect_preferences`)."""
    return collect_preferences(desk, toy)[0]


def collect_preferences(desk: CurationDesk, toy: ToyTask
                        ) -> tuple[PreferenceSet, PreferenceReport]:
    """The committed snapshot's preferences, pairs in task-digest order, and the report."""
    labels = {row.task: row for row in desk.labels()}
    skipped: Counter[str] = Counter(dict.fromkeys(SKIP_REASONS, 0))
    pairs = []
    for digest in sorted(desk.tasks.tasks):
        pair, why = _preference(desk.tasks.tasks[digest], labels.get(digest), toy)
        if pair is None:
            skipped[why] += 1
        else:
            pairs.append(pair)
    report = PreferenceReport(len(pairs), MappingProxyType(dict(skipped)))
    return PreferenceSet(root=desk.root, round=desk.round, pairs=tuple(pairs)), report


def _preference(task: Task, label: LabelRow | None, toy: ToyTask
                ) -> tuple[Preference, str] | tuple[None, str]:
    """The task's pair, or None and why it was skipped."""
    if task.kind != "pairwise":
        return None, "not_pairwise"
    if label is None or label.answer is None or label.confidence is None:
        return None, "unlabelled"
    pick = label.answer.choice[0]
    if pick not in (LEFT, RIGHT):
        return None, "tie"
    try:
        prompt = toy.parse(task.text)
        left, right = (toy.parse(text) for text in task.completions)
    except ValueError:
        return None, "unparseable"
    chosen, rejected = (left, right) if pick == LEFT else (right, left)
    return Preference(prompt, chosen, rejected, float(label.confidence)), ""
