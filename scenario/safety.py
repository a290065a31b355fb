"""A scenario's `curation.safety:` section: the safety filter (engine/rlhf/safety.py) that
withholds tasks from annotators before they are offered.

    curation:
      safety:
        blocklist: [kill, "credit card"]   # whole words, case-insensitive
        hook: mylab.safety:toxicity        # module:function, text -> score in [0, 1]
        threshold: 0.5                     # the hook refuses a score at or above it
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from phalanx.engine.rlhf.safety import SafetyFilter
from phalanx.scenario.section import Section

__all__ = ["SafetySection"]

MAX_TERMS = 10_000
Term = Annotated[str, Field(min_length=1, max_length=200, pattern=r"\S")]


class SafetySection(Section):
    """Text that must not reach annotators: a task whose prompt, completions or options the
    filter refuses is withheld (the run's summary counts them as `tasks_withheld`)."""

    blocklist: Annotated[list[Term], Field(max_length=MAX_TERMS, description=(
        "Terms that refuse a text where they occur as whole words (not inside a longer "
        "word), case-insensitively."), default_factory=list)]
    hook: Annotated[str | None, Field(max_length=300, description=(
        "`module:function` scoring a text from 0 (safe) to 1, loaded like a user plugin; "
        "null: none."))] = None
    threshold: Annotated[float, Field(ge=0, le=1, description=(
        "The hook refuses a text whose score is at least this."))] = 0.5

    @model_validator(mode="after")
    def _loadable(self) -> SafetySection:
        self.filter()  # a hook that cannot be imported is a scenario error, found early
        return self

    def filter(self) -> SafetyFilter:
        """A fresh filter (its refusal counters at zero); ValueError for a bad hook."""
        return SafetyFilter.load(self.blocklist, self.hook, self.threshold)
