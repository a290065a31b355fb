"""The safety filter: text that must reach neither annotators nor the reward model.

Two rules, either of which refuses a text:

- a **blocklist** of terms, matched case-insensitively as whole words: a term matches where
  it is not preceded or followed by a letter, digit or underscore, so "kill" refuses "kill
  it" and "Kill!" but not "skill" (substring matching would refuse every text that merely
  contains the letters; a term may hold spaces or punctuation, matched as written);
- an optional **scoring hook**, `module:function` taking the text and returning a score in
  [0, 1] (loaded as engine/plugins.py loads user code: once, when the filter is built), that
  refuses a text whose score is at least `threshold`.

The filter is applied to tasks before they are offered (`filter_tasks`: a task goes when its
prompt or any completion or option is refused) and, by the RLHF workload, to completions
before they are scored. A refusal is counted by its reason ("blocklist" or "score").
Deterministic as long as the hook is: the rules hold no state but the counters.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from numbers import Real

from phalanx.engine.curation.tasks import Task, TaskSet
from phalanx.engine.plugins import load_function

__all__ = ["REASONS", "SafetyFilter", "filter_tasks"]

REASONS = ("blocklist", "score")
Hook = Callable[[str], object]


class SafetyFilter:
    """`allows(text)`, `reason(text)` and the refusals counted by reason (`refused`).

    Example::

        safety = SafetyFilter(blocklist=["kill"])
        safety.allows("a b c"), safety.reason("Kill it")   # (True, "blocklist")
    """

    def __init__(self, blocklist: Iterable[str] = (), hook: Hook | None = None,
                 threshold: float = 0.5, hook_name: str = "hook") -> None:
        """`hook`: the scorer (see `load` to name one by `module:function`); `hook_name`:
        how its errors name it."""
        terms = tuple(blocklist)
        if any(not isinstance(t, str) or not t.strip() for t in terms):
            raise ValueError("blocklist terms must be non-empty strings")
        if isinstance(threshold, bool) or not (isinstance(threshold, Real)
                                               and 0.0 <= float(threshold) <= 1.0):
            raise ValueError("threshold must be a number in [0, 1]")
        self.blocklist = terms
        self.threshold = float(threshold)
        self.hook = hook
        self.hook_name = hook_name
        self.refused: Counter[str] = Counter()
        # one alternation, longest terms first so a longer term wins where two overlap
        words = sorted({t.casefold() for t in terms}, key=lambda t: (-len(t), t))
        self._pattern = (re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, words)) + r")(?!\w)")
                         if words else None)

    @classmethod
    def load(cls, blocklist: Iterable[str] = (), hook: str | None = None,
             threshold: float = 0.5) -> SafetyFilter:
        """A filter whose hook is named `module:function`; ValueError (one line) when it
        cannot be imported or is not a function."""
        what = f"safety hook {hook[:200]!r}" if hook else "safety hook"
        scorer = load_function(hook, what) if hook else None
        return cls(blocklist, scorer, threshold, what)

    def reason(self, text: str) -> str | None:
        """Why `text` is refused ("blocklist" or "score"), None when it is allowed; counts
        nothing. ValueError (one line) when the hook fails or returns no score in [0, 1]."""
        if self._pattern is not None and self._pattern.search(text.casefold()):
            return "blocklist"
        if self.hook is not None and self._score(text) >= self.threshold:
            return "score"
        return None

    def allows(self, text: str) -> bool:
        """Whether `text` may be shown or scored; a refusal is counted in `refused`."""
        why = self.reason(text)
        if why is not None:
            self.refused[why] += 1
        return why is None

    def _score(self, text: str) -> float:
        assert self.hook is not None
        try:
            score = self.hook(text)
        except Exception as err:  # the user's code: one line, never a traceback
            raise ValueError(f"{self.hook_name} raised {type(err).__name__}") from None
        if isinstance(score, bool) or not isinstance(score, Real) or not (
                math.isfinite(float(score)) and 0.0 <= float(score) <= 1.0):
            raise ValueError(f"{self.hook_name} must return a number in [0, 1], got "
                             f"{type(score).__name__}"
                             + (f" {float(score)!r}" if isinstance(score, Real) else ""))
        return float(score)


def _texts(task: Task) -> tuple[str, ...]:
    """What an annotator reads of a task: its prompt, completions and options."""
    return (task.text, *task.completions, *task.options)


def filter_tasks(tasks: TaskSet, safety: SafetyFilter) -> tuple[TaskSet, int]:
    """`tasks` without those the filter refuses any text of (kept tasks keep their gold
    answers), and how many were withheld."""
    kept = [t for t in tasks.tasks.values() if all(safety.allows(x) for x in _texts(t))]
    if len(kept) == len(tasks):
        return tasks, 0
    gold = {tasks.tasks[d].id: answer for d, answer in tasks.gold.items()}
    return TaskSet(kept, {t.id: gold[t.id] for t in kept if t.id in gold}), len(tasks) - len(kept)
