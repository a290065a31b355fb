"""What the curation service puts on the wire and into a round, in the strict codec's terms.

Two message kinds (a node's MessageSet adds them through `CurationService.messages`):

- `CurationRecords`: signed annotation records a node holds pending, forwarded to the
  members (from an annotation node too: observers may send it) until a round commits them;
- `CurationTasks`: a task import (tasks with their gold answers) a node took, forwarded the
  same way until a round commits it.

A round's contribution is a `CurationBatch`: the records (full signed bytes) and at most one
task import the leader puts to the round. Gold answers travel with the tasks between nodes:
nodes are trusted with gold, annotators never see it through any API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Final

from phalanx.net.codec import Limits, decode_record, encode_record
from phalanx.net.errors import DecodeError
from phalanx.net.messages import Hash32

from .records import MAX_RECORD_BYTES
from .tasks import Answer, Task, TaskError, TaskSet

__all__ = ["MAX_IMPORT_BYTES", "CurationBatch", "CurationRecords", "CurationTasks",
           "GoldAnswer", "TaskImport", "decode_batch", "decode_import", "encode_batch",
           "encode_import"]

MAX_IMPORT_BYTES: Final = 4 * 1024 * 1024  # one task import, encoded (split larger files)
MAX_FORWARD_RECORDS: Final = 512  # records per CurationRecords message
MAX_BATCH_RECORDS: Final = 4096  # records a batch may carry, whatever a leader is set to
_BATCH_LIMITS = Limits(max_frame=MAX_IMPORT_BYTES + MAX_BATCH_RECORDS * MAX_RECORD_BYTES,
                       max_elements=0, max_dims=0, max_items=MAX_BATCH_RECORDS,
                       dtypes=frozenset())
_IMPORT_LIMITS = Limits(max_frame=MAX_IMPORT_BYTES, max_elements=0, max_dims=0,
                        max_items=200_000, dtypes=frozenset())


@dataclass(frozen=True, slots=True)
class CurationRecords:
    KIND: ClassVar[int] = 40
    round: int
    records: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class CurationTasks:
    KIND: ClassVar[int] = 41
    round: int
    tasks: bytes  # an encoded TaskImport


@dataclass(frozen=True, slots=True)
class GoldAnswer:
    task: Hash32
    choice: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TaskImport:
    tasks: tuple[Task, ...]
    gold: tuple[GoldAnswer, ...] = ()


@dataclass(frozen=True, slots=True)
class CurationBatch:
    records: tuple[bytes, ...]
    tasks: bytes = b""  # an encoded TaskImport, or nothing


def encode_import(tasks: TaskSet) -> bytes:
    """A task set as one import; ValueError when it is over MAX_IMPORT_BYTES."""
    gold = tuple(GoldAnswer(d, a.choice) for d, a in sorted(tasks.gold.items()))
    data = encode_record(TaskImport(tuple(t for _, t in sorted(tasks.by_id.items())), gold))
    if len(data) > MAX_IMPORT_BYTES:
        raise ValueError(f"a task import is at most {MAX_IMPORT_BYTES} bytes encoded, this "
                         f"one is {len(data)}: split the file")
    return data


def decode_import(data: bytes) -> TaskSet:
    """The task set an import encodes; TaskError (one line) for anything else."""
    try:
        imported = decode_record(TaskImport, data, _IMPORT_LIMITS)
    except DecodeError as e:
        raise TaskError(f"not a task import ({e.reason})") from None
    by_digest = {t.digest: t for t in imported.tasks}
    gold = {}
    for g in imported.gold:
        task = by_digest.get(g.task)
        if task is None:
            raise TaskError("a gold answer names a task the import lacks")
        gold[task.id] = Answer(g.choice)
    return TaskSet(imported.tasks, gold)


def encode_batch(records: list[bytes], tasks: bytes = b"") -> bytes:
    """A round's contribution: b"" when there is nothing to put to it."""
    if not records and not tasks:
        return b""
    return encode_record(CurationBatch(tuple(records), tasks))


def decode_batch(data: bytes) -> CurationBatch:
    """DecodeError for anything but a non-empty batch within bounds."""
    batch = decode_record(CurationBatch, data, _BATCH_LIMITS)
    if not batch.records and not batch.tasks:
        raise DecodeError("malformed", "an empty curation batch is sent as nothing")
    return batch
