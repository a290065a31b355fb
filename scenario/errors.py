"""The scenario's errors, apart from its schema: the command line catches them without paying
for the schema's import (pydantic models, the aggregators they check) on paths that never
load a scenario."""

from __future__ import annotations

__all__ = ["InputsRefused", "ScenarioError", "ScenarioRefused"]


class ScenarioError(ValueError):
    """A scenario that cannot run; `str()` is one line per problem (`lines`), each naming the
    field and what is allowed."""

    def __init__(self, message: str, *more: str) -> None:
        # user text (a key, a tag, a path) may hold line breaks: escape them, so that a line
        # break only ever separates two problems
        self.lines = tuple(m.replace("\r", "\\r").replace("\n", "\\n") for m in (message, *more))
        super().__init__(*self.lines)  # (args: the lines, so a pickled copy reads the same)

    def __str__(self) -> str:
        return "\n".join(self.lines)


class ScenarioRefused(ScenarioError):
    """A well-formed scenario that could not stay live: its aggregation rule needs more
    gradients than the members are sure to send (the Byzantine matrix reports such a cell as
    refused instead of running it)."""


class InputsRefused(ValueError):
    """Raised inside validation for what `parse_scenario` turns into `ScenarioRefused`."""
