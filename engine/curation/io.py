"""Tasks in, labels out: JSONL and CSV task files to a TaskSet, labels to JSONL and Parquet.

Bytes in and bytes out (the caller reads and writes the files), so this stays sans-IO.

Task rows use the same field names in both formats (a CSV header names the columns):

    id, kind, text        every task (text is a pairwise task's prompt)
    options               single_choice, multi_label (JSONL: a list; CSV: "a|b|c")
    left, right           pairwise: the two completions
    min, max, step        rating
    max_length            free_text
    gold                  optional known answer, in the task's own terms (an option, a list of
                          options, a rating, left/right/tie); never shown to annotators

An import is all or nothing: every bad row is reported on a line of its own naming the row
(data rows count from 1) and the field, with long values clipped, and no task is kept.
Exported labels carry their confidence and provenance (the digests of the records they came
from); the label itself comes from the caller, so any aggregation method plugs in.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from .log import AnswerRow
from .tasks import MAX_TASKS, Answer, Task, TaskError, TaskSet

__all__ = ["Label", "TaskImportError", "label_rows", "labels_jsonl", "labels_parquet",
           "tasks_from_csv", "tasks_from_jsonl"]

MAX_IMPORT_BYTES = 64 * 1024 * 1024
MAX_REPORTED = 20  # bad rows listed one per line; the rest are counted
FIELDS = ("id", "kind", "text", "options", "left", "right", "min", "max", "step", "max_length",
          "gold")


class TaskImportError(ValueError):
    """A task file that was not imported; one line per bad row, in `problems` too."""

    def __init__(self, problems: Sequence[str]) -> None:
        shown = list(problems[:MAX_REPORTED])
        if len(problems) > MAX_REPORTED:
            shown.append(f"... and {len(problems) - MAX_REPORTED} more bad rows")
        super().__init__("\n".join(shown))
        self.problems = shown


class _RowError(Exception):
    """One bad row; `field` is None when the problem (a TaskError) names its field itself."""

    def __init__(self, field: str | None, problem: str) -> None:
        super().__init__(problem if field is None else f"field {field}: {problem}")


def _clip(value: object, n: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def tasks_from_jsonl(data: bytes) -> TaskSet:
    """Tasks from JSON Lines (one object per line; blank lines are skipped)."""
    text = _text(data)
    return _import(_jsonl_rows(text), listed=True)


def tasks_from_csv(data: bytes) -> TaskSet:
    """Tasks from CSV with a header row; an empty cell is an absent field."""
    reader = csv.DictReader(io.StringIO(_text(data), newline=""))
    unknown = sorted(set(reader.fieldnames or ()) - set(FIELDS))
    if unknown or not reader.fieldnames:
        raise TaskImportError([f"header: unknown columns {_clip(unknown, 80)}; allowed: "
                               f"{', '.join(FIELDS)}" if unknown else "header: the file is empty"])

    def rows() -> Iterator[dict[str, Any] | str]:
        for row in reader:
            if None in row:  # DictReader's key for cells beyond the header
                yield "more cells than the header has columns"
            else:
                yield {k: v for k, v in row.items() if v != ""}

    try:
        return _import(rows(), listed=False)
    except csv.Error as e:  # a cell over csv's size limit, a NUL byte, a stray quote
        raise TaskImportError([f"line {reader.line_num + 1}: not CSV ({str(e)[:80]})"]) from None


def _text(data: bytes) -> str:
    if len(data) > MAX_IMPORT_BYTES:
        raise TaskImportError([f"file of {len(data)} bytes is over {MAX_IMPORT_BYTES}"])
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise TaskImportError([f"not UTF-8 text (byte {e.start})"]) from None


def _jsonl_rows(text: str) -> Iterator[dict[str, Any] | str]:
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as e:
            yield f"not JSON ({str(e).split(':')[0]})"
            continue
        yield row if isinstance(row, dict) else "a row must be a JSON object"


def _import(rows: Iterator[dict[str, Any] | str], listed: bool) -> TaskSet:
    """A TaskSet of all rows, or TaskImportError naming every bad one. `listed`: whether list
    fields come as lists (JSONL) or "|"-separated strings (CSV)."""
    tasks: list[Task] = []
    gold: dict[str, Answer] = {}
    problems: list[str] = []
    seen: set[str] = set()
    for number, row in enumerate(rows, start=1):
        if number > MAX_TASKS:
            problems.append(f"more than {MAX_TASKS} rows")
            break
        try:
            if isinstance(row, str):
                raise _RowError(None, row)
            task, answer = _task(row, listed)
            if task.id in seen:
                raise _RowError("id", f"{_clip(task.id)} appears in an earlier row")
        except _RowError as e:
            problems.append(f"row {number}: {e}")
            continue
        seen.add(task.id)
        tasks.append(task)
        if answer is not None:
            gold[task.id] = answer
    if problems:
        raise TaskImportError(problems)
    return TaskSet(tasks, gold)


def _task(row: Mapping[str, Any], listed: bool) -> tuple[Task, Answer | None]:
    unknown = sorted(set(row) - set(FIELDS))
    if unknown:
        raise _RowError(_clip(unknown[0]), f"unknown; allowed: {', '.join(FIELDS)}")
    for name in ("id", "kind", "text"):
        if not isinstance(row.get(name), str):
            raise _RowError(name, f"required text, got {_clip(row.get(name))}")
    fields: dict[str, Any] = {"id": row["id"], "kind": row["kind"], "text": row["text"]}
    if "options" in row:
        fields["options"] = _strings(row, "options", listed)
    if "left" in row or "right" in row:
        fields["completions"] = (_text_field(row, "left"), _text_field(row, "right"))
    if any(k in row for k in ("min", "max", "step")):
        fields["scale"] = tuple(_number(row, k) for k in ("min", "max", "step"))
    if "max_length" in row:
        fields["max_length"] = int(_number(row, "max_length", integer=True))
    try:
        task = Task.make(**fields)
    except TaskError as e:
        raise _RowError(None, str(e)) from None
    return task, (_gold(task, row["gold"], listed) if "gold" in row else None)


def _gold(task: Task, value: Any, listed: bool) -> Answer:
    if task.kind == "free_text":
        raise _RowError("gold", "free_text tasks have no gold answer")
    if task.kind == "multi_label" and not listed:
        value = value.split("|") if value else []
    try:
        return task.answer_from(value)
    except TaskError as e:
        raise _RowError("gold", str(e)) from None


def _strings(row: Mapping[str, Any], name: str, listed: bool) -> tuple[str, ...]:
    value = row[name]
    if not listed and isinstance(value, str):
        return tuple(value.split("|"))
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _RowError(name, f"a list of strings, got {_clip(value)}")
    return tuple(value)


def _text_field(row: Mapping[str, Any], name: str) -> str:
    value = row.get(name)
    if not isinstance(value, str):
        raise _RowError(name, f"required text, got {_clip(value)}")
    return value


def _number(row: Mapping[str, Any], name: str, integer: bool = False) -> float:
    value = row.get(name)
    try:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError
        number = float(value)
    except (ValueError, OverflowError):
        raise _RowError(name, f"a number, got {_clip(value)}") from None
    if not math.isfinite(number) or (integer and number != int(number)):
        raise _RowError(name, f"a {'whole' if integer else 'finite'} number, got {_clip(value)}")
    return number


# --- labels out ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Label:
    """A task's aggregated answer and how sure the aggregation is of it, in [0, 1]."""

    answer: Answer
    confidence: float


def label_rows(tasks: TaskSet, answers: Sequence[AnswerRow],
               label_of: Callable[[bytes], Label | None]) -> list[dict[str, Any]]:
    """One row per task that `label_of` (task digest -> Label or None) labels, by task id:
    the label in the task's own terms, its confidence, and its provenance."""
    provenance: dict[bytes, list[str]] = {}
    for row in answers:
        provenance.setdefault(row.task, []).append(row.digest.hex())
    out = []
    for task_id, task in sorted(tasks.by_id.items()):
        label = label_of(task.digest)
        if label is None:
            continue
        if not (isinstance(label.confidence, float | int)
                and 0.0 <= label.confidence <= 1.0):
            raise ValueError(f"task {_clip(task_id)}: confidence must be in [0, 1], got "
                             f"{_clip(label.confidence)}")
        task.validate(label.answer)
        out.append({"task_id": task_id, "task_digest": task.digest.hex(), "kind": task.kind,
                    "label": task.value_of(label.answer),
                    "confidence": float(label.confidence),
                    "provenance": sorted(provenance.get(task.digest, []))})
    return out


def labels_jsonl(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """Label rows as JSON Lines (UTF-8, keys in a fixed order)."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()


def labels_parquet(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """Label rows as Parquet; `label` holds the JSON text of the label, since its type
    differs between kinds."""
    frame = pl.DataFrame(
        {"task_id": [r["task_id"] for r in rows],
         "task_digest": [r["task_digest"] for r in rows],
         "kind": [r["kind"] for r in rows],
         "label": [json.dumps(r["label"], ensure_ascii=False) for r in rows],
         "confidence": [r["confidence"] for r in rows],
         "provenance": [r["provenance"] for r in rows]},
        schema={"task_id": pl.String, "task_digest": pl.String, "kind": pl.String,
                "label": pl.String, "confidence": pl.Float64,
                "provenance": pl.List(pl.String)})
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()
