"""A task set written back as the JSONL that engine/curation/io.py reads (gold answers
included): how a solo node keeps the tasks it imported across restarts, so every stored
record still finds its task when the log is reloaded."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from phalanx.engine.curation.io import tasks_from_jsonl
from phalanx.engine.curation.tasks import Task, TaskSet

__all__ = ["load_tasks", "save_tasks", "task_row"]


def task_row(task: Task, tasks: TaskSet) -> dict[str, Any]:
    row: dict[str, Any] = {"id": task.id, "kind": task.kind, "text": task.text}
    if task.options:
        row["options"] = list(task.options)
    if task.completions:
        row["left"], row["right"] = task.completions
    if task.scale:
        row["min"], row["max"], row["step"] = task.scale
    if task.max_length:
        row["max_length"] = task.max_length
    gold = tasks.gold.get(task.digest)
    if gold is not None:
        row["gold"] = task.value_of(gold)
    return row


def save_tasks(tasks: TaskSet, path: Path) -> None:
    """Write atomically (a temporary file, flushed to disk, renamed over the old one)."""
    text = "".join(json.dumps(task_row(t, tasks), ensure_ascii=False) + "\n"
                   for _, t in sorted(tasks.by_id.items()))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_tasks(path: Path) -> TaskSet:
    return tasks_from_jsonl(path.read_bytes()) if path.exists() else TaskSet()
