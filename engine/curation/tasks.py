"""Annotation tasks: what an annotator sees, the answers each schema kind allows, and the set
of tasks a curation run works on.

Five schema kinds, one `Task` record for all of them (the fields a kind does not use stay
empty, so the canonical encoding needs no union type):

=============== ===================================== =========================================
kind            fields it uses                        an answer (`Answer`)
=============== ===================================== =========================================
single_choice   options (2..64)                       choice = (index,)
multi_label     options (1..64)                       choice = strictly increasing indices
rating          scale = (min, max, step)              choice = (step index,): min + index·step
pairwise        text = prompt, completions = (a, b)   choice = (0,) left, (1,) right, (2,) tie
free_text       max_length                            text, 1..max_length characters
=============== ===================================== =========================================

Answers are indices, not option strings: exact, small, and the same bytes in every client.
A task is content-addressed: its digest is the SHA-256 of its canonical encoding, and records
name the task by that digest, so an answer is bound to the exact options the annotator saw.

Gold (honeypot) tasks have a known answer kept *beside* the task, in `TaskSet.gold`: the task
an annotator sees (and whose digest they sign) carries no trace of it, so neither the content
nor the digest tells a gold task from another (hashing every candidate answer into the digest
would give the gold answer away).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from types import MappingProxyType
from typing import Any

from phalanx.net.codec import encode_record
from phalanx.net.crypto import sha256
from phalanx.net.merkle import merkle_root

__all__ = [
    "KINDS",
    "PAIRWISE_CHOICES",
    "Answer",
    "Task",
    "TaskError",
    "TaskSet",
    "ordered_root",
]

KINDS = ("single_choice", "multi_label", "rating", "pairwise", "free_text")
PAIRWISE_CHOICES = ("left", "right", "tie")

MAX_ID_CHARS = 128
MAX_TEXT_CHARS = 20_000
MAX_OPTIONS = 64
MAX_OPTION_CHARS = 200
MAX_RATING_STEPS = 1000
MAX_FREE_TEXT_CHARS = 10_000
MAX_TASKS = 1_000_000


class TaskError(ValueError):
    """A task or an answer does not fit its schema; the message is one line naming the field."""


def _clip(value: object, n: int = 40) -> str:
    """A short repr of untrusted input for error messages (never echo a huge value)."""
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


@dataclass(frozen=True, slots=True)
class Answer:
    """One annotator's answer to one task (see the module table for what each kind uses)."""

    choice: tuple[int, ...] = ()
    text: str = ""


@dataclass(frozen=True, slots=True)
class Task:
    """A task as every annotator sees it. Build with `Task.make` (which checks it)."""

    id: str
    kind: str
    text: str
    options: tuple[str, ...] = ()
    completions: tuple[str, ...] = ()
    scale: tuple[float, ...] = ()  # rating: (min, max, step)
    max_length: int = 0  # free_text

    @classmethod
    def make(cls, **fields: Any) -> Task:
        """A checked task (a rating scale may be given as ints); TaskError names the first
        bad field."""
        for name in ("options", "completions"):
            if isinstance(fields.get(name), list):  # JSON and callers give lists
                fields[name] = tuple(fields[name])
        scale = fields.get("scale", ())
        if isinstance(scale, list | tuple) and all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in scale):
            fields["scale"] = tuple(float(v) for v in scale)
        try:
            task = cls(**fields)
        except TypeError:
            raise TaskError(f"unknown task fields; allowed: {', '.join(_ALL_FIELDS)}") from None
        task.check()
        return task

    def check(self) -> None:
        if not isinstance(self.id, str) or not 0 < len(self.id) <= MAX_ID_CHARS:
            raise TaskError(f"id must be 1..{MAX_ID_CHARS} characters, got {_clip(self.id)}")
        if self.kind not in KINDS:
            raise TaskError(f"kind {_clip(self.kind)} is not one of {', '.join(KINDS)}")
        if not isinstance(self.text, str) or len(self.text) > MAX_TEXT_CHARS:
            raise TaskError(f"text must be a string of at most {MAX_TEXT_CHARS} characters")
        _check_strings("options", self.options, MAX_OPTIONS, MAX_OPTION_CHARS)
        _check_strings("completions", self.completions, 2, MAX_TEXT_CHARS)
        wants = _FIELDS_OF[self.kind]
        for name in ("options", "completions", "scale", "max_length"):
            if name not in wants and getattr(self, name):
                raise TaskError(f"field {name} is not used by {self.kind} tasks")
        _KIND_CHECKS[self.kind](self)

    @property
    def digest(self) -> bytes:
        """SHA-256 of the canonical encoding: the task's id in records."""
        return sha256(encode_record(self))

    def rating_steps(self) -> int:
        """Number of steps between min and max of a rating scale (answers are 0..steps)."""
        low, high, step = self.scale
        return round((high - low) / step)

    def validate(self, answer: Answer) -> None:
        """TaskError unless `answer` is a valid answer to this task."""
        if self.kind == "free_text":
            if answer.choice or not 0 < len(answer.text) <= self.max_length:
                raise TaskError(f"a free_text answer is 1..{self.max_length} characters of text")
            return
        if answer.text:
            raise TaskError(f"a {self.kind} answer carries no text")
        choice, top = answer.choice, self._choice_count()
        if any(not 0 <= i < top for i in choice):
            raise TaskError(f"{self.kind} answer {_clip(choice)}: indices must be in 0..{top - 1}")
        if self.kind == "multi_label":
            if any(a >= b for a, b in pairwise(choice)):
                raise TaskError("a multi_label answer lists option indices in increasing order")
        elif len(choice) != 1:
            raise TaskError(f"a {self.kind} answer is exactly one index, got {len(choice)}")

    def _choice_count(self) -> int:
        if self.kind == "rating":
            return self.rating_steps() + 1
        if self.kind == "pairwise":
            return len(PAIRWISE_CHOICES)
        return len(self.options)

    def value_of(self, answer: Answer) -> str | float | list[str]:
        """The answer in the task's own terms: an option, a list of options, a rating value,
        left/right/tie, or the text."""
        if self.kind == "free_text":
            return answer.text
        if self.kind == "multi_label":
            return [self.options[i] for i in answer.choice]
        (i,) = answer.choice
        if self.kind == "rating":
            low, _, step = self.scale
            return low + i * step
        if self.kind == "pairwise":
            return PAIRWISE_CHOICES[i]
        return self.options[i]

    def answer_from(self, value: object) -> Answer:
        """The Answer for a value in the task's own terms (inverse of `value_of`); TaskError
        when it is not one."""
        answer = self._parse(value)
        self.validate(answer)
        return answer

    def _parse(self, value: object) -> Answer:
        if self.kind == "free_text":
            if not isinstance(value, str):
                raise TaskError(f"a free_text answer is a string, got {_clip(value)}")
            return Answer(text=value)
        if self.kind == "multi_label":
            values = value if isinstance(value, list | tuple) else [value]
            return Answer(tuple(sorted(self._index(v, self.options) for v in values)))
        if self.kind == "rating":
            return Answer((self._rating_index(value),))
        names = PAIRWISE_CHOICES if self.kind == "pairwise" else self.options
        return Answer((self._index(value, names),))

    def _index(self, value: object, names: Sequence[str]) -> int:
        if value not in names:
            raise TaskError(f"{_clip(value)} is not one of {_clip(list(names), 80)}")
        return names.index(value)  # type: ignore[arg-type]

    def _rating_index(self, value: object) -> int:
        low, _, step = self.scale
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise TaskError(f"a rating is a number, got {_clip(value)}")
        try:
            position = (float(value) - low) / step
        except ValueError:
            raise TaskError(f"a rating is a number, got {_clip(value)}") from None
        index = round(position) if math.isfinite(position) else -1
        if abs(position - index) > 1e-9 or not 0 <= index <= self.rating_steps():
            raise TaskError(f"rating {_clip(value)} is not on the scale {self.scale}")
        return index


def _check_strings(name: str, values: object, most: int, chars: int) -> None:
    if not isinstance(values, tuple) or len(values) > most:
        raise TaskError(f"{name} must be a list of at most {most} strings")
    for v in values:
        if not isinstance(v, str) or not 0 < len(v) <= chars:
            raise TaskError(f"each of {name} must be 1..{chars} characters, got {_clip(v)}")
    if len(set(values)) != len(values):
        raise TaskError(f"{name} must not repeat an entry")


def _check_choices(task: Task) -> None:
    least = 2 if task.kind == "single_choice" else 1
    if len(task.options) < least:
        raise TaskError(f"a {task.kind} task needs at least {least} options")


def _check_rating(task: Task) -> None:
    if len(task.scale) != 3 or not all(isinstance(v, float) and math.isfinite(v)
                                       for v in task.scale):
        raise TaskError("a rating task needs a scale of three finite numbers: min, max, step")
    low, high, step = task.scale
    if not (step > 0 and high > low):
        raise TaskError(f"rating scale {task.scale}: needs max > min and step > 0")
    steps = (high - low) / step
    if abs(steps - round(steps)) > 1e-9 * max(1.0, steps) or round(steps) > MAX_RATING_STEPS:
        raise TaskError(f"rating scale {task.scale}: (max - min) must be a whole number of "
                        f"steps, at most {MAX_RATING_STEPS}")


def _check_pairwise(task: Task) -> None:
    if len(task.completions) != 2:
        raise TaskError("a pairwise task needs exactly two completions (left, right)")


def _check_free_text(task: Task) -> None:
    if isinstance(task.max_length, bool) or not isinstance(task.max_length, int) or not (
            0 < task.max_length <= MAX_FREE_TEXT_CHARS):
        raise TaskError(f"a free_text task needs max_length in 1..{MAX_FREE_TEXT_CHARS}, "
                        f"got {_clip(task.max_length)}")


_KIND_CHECKS = {
    "single_choice": _check_choices,
    "multi_label": _check_choices,
    "rating": _check_rating,
    "pairwise": _check_pairwise,
    "free_text": _check_free_text,
}
_ALL_FIELDS = ("id", "kind", "text", "options", "completions", "scale", "max_length")
_FIELDS_OF = {
    "single_choice": {"options"},
    "multi_label": {"options"},
    "rating": {"scale"},
    "pairwise": {"completions"},
    "free_text": {"max_length"},
}


def ordered_root(digests: Iterable[bytes]) -> bytes:
    """Merkle root over 32-byte digests sorted bytewise: the same set gives the same root
    whatever order it was built in (net/merkle's tree, one leaf per digest)."""
    return merkle_root(b"".join(sorted(digests)), chunk_size=32)


class TaskSet:
    """Tasks by digest, with the gold answers kept apart. Immutable once built."""

    def __init__(self, tasks: Iterable[Task] = (), gold: Mapping[str, Answer] | None = None):
        """`gold`: known answers by task id (each checked against its task)."""
        by_digest: dict[bytes, Task] = {}
        by_id: dict[str, Task] = {}
        for task in tasks:
            task.check()
            if task.id in by_id:
                raise TaskError(f"task id {_clip(task.id)} appears twice")
            if len(by_id) >= MAX_TASKS:
                raise TaskError(f"more than {MAX_TASKS} tasks")
            by_id[task.id] = task
            by_digest[task.digest] = task
        golden: dict[bytes, Answer] = {}
        for task_id, answer in (gold or {}).items():
            task = by_id.get(task_id)
            if task is None:
                raise TaskError(f"gold answer for unknown task {_clip(task_id)}")
            if task.kind == "free_text":
                raise TaskError(f"task {_clip(task_id)}: free_text tasks cannot be gold")
            task.validate(answer)
            golden[task.digest] = answer
        self.tasks: Mapping[bytes, Task] = MappingProxyType(by_digest)
        self.by_id: Mapping[str, Task] = MappingProxyType(by_id)
        self.gold: Mapping[bytes, Answer] = MappingProxyType(golden)

    def __len__(self) -> int:
        return len(self.tasks)

    def __contains__(self, digest: object) -> bool:
        return digest in self.tasks

    def get(self, digest: bytes) -> Task | None:
        return self.tasks.get(digest)

    def is_gold(self, digest: bytes) -> bool:
        return digest in self.gold

    @property
    def root(self) -> bytes:
        """Merkle root over the task digests (gold answers excluded), for a round to commit."""
        return ordered_root(self.tasks)
