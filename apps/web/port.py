"""What the web app needs from a node: its curation desk, a way in for submissions and task
imports, and a health verdict. A real node (apps/node.py) and a simulated cluster provide
their own port; `LocalPort` is one desk with no cluster.

Every call happens on the event loop that owns the desk (the app's routes are async for that
reason), so the app always reads a consistent snapshot between two events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from phalanx.engine.curation.desk import CurationDesk, merge_tasks
from phalanx.engine.curation.records import MAX_RECORD_BYTES, RecordRefused
from phalanx.engine.curation.tasks import TaskSet

from .durable import GroupCommit
from .taskfile import save_tasks

__all__ = ["CurationPort", "LocalPort"]


class CurationPort(Protocol):
    @property
    def desk(self) -> CurationDesk:
        """The node's desk: read it, never change it but through the calls below."""
        ...

    async def submit(self, record: bytes) -> bytes:
        """Verify and hold a record as pending and pass it on to the members; its digest
        once the record is durable, or RecordRefused."""
        ...

    def import_tasks(self, tasks: TaskSet) -> int:
        """Add tasks here and replicate them; how many were new."""
        ...

    def health(self) -> dict[str, Any]:
        """status ("ok" | "degraded" | "stalled"), mode, detail, seconds_since_commit."""
        ...


class LocalPort:
    """A single node's desk and no cluster: its own pending records are committed as the next
    round every `commit_seconds` (by `run`, or by hand with `commit_now`). A fallback for
    tests, benchmarks and a solo operator, and it says so in its health: nothing here is
    replicated or certified by a quorum."""

    def __init__(self, desk: CurationDesk, commit_seconds: float = 1.0,
                 tasks_file: Path | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 group: GroupCommit | None = None) -> None:
        """`tasks_file`: where imported tasks are kept (JSONL), written before an import is
        acknowledged, so the records that answer them reload after a restart; `group`: the
        desk's store when it is a GroupCommit (a submission then waits for its flush; with
        any other store, the desk's own write is durable when `desk.submit` returns)."""
        if not commit_seconds > 0:
            raise ValueError(f"commit_seconds must be > 0, got {commit_seconds}")
        self._desk = desk
        self.commit_seconds = commit_seconds
        self._clock = clock
        self._tasks_file = tasks_file
        self._last_commit = clock()
        self._group = group

    @property
    def desk(self) -> CurationDesk:
        return self._desk

    async def submit(self, record: bytes) -> bytes:
        try:
            digest = self._desk.submit(record)
        except RecordRefused as e:  # a "replay" may be a retry after a failed flush: held
            if e.reason == "replay" and self._group is not None:  # already means durable
                await self._group.durable()
            raise
        if self._group is not None:
            await self._group.durable()
        return digest

    def import_tasks(self, tasks: TaskSet) -> int:
        grown, added = merge_tasks(self._desk.tasks, tasks)  # TaskError: nothing changes
        if added and self._tasks_file is not None:
            save_tasks(grown, self._tasks_file)
        return self._desk.add_tasks(tasks)

    def commit_now(self) -> int:
        """Commit what is pending as the next round (each batch checked as a voter would);
        how many records were committed. With no network between proposer and voters, a
        round takes as many records as the log takes in one batch."""
        total = 0
        while self._desk.pending:
            batch = self._desk.proposal(max_records=self._desk.limits.max_batch,
                                        max_bytes=self._desk.limits.max_batch * MAX_RECORD_BYTES)
            if not batch:
                break
            problem = self._desk.batch_problem(batch)
            if problem is not None:  # the desk's own proposal: a bug, not an attack
                raise RuntimeError(f"local commit refused its own batch: {problem}")
            self._desk.commit(batch, self._desk.round + 1)
            total += len(batch)
        self._last_commit = self._clock()
        return total

    async def run(self) -> None:
        """Commit every `commit_seconds` until cancelled."""
        while True:
            await asyncio.sleep(self.commit_seconds)
            self.commit_now()

    def health(self) -> dict[str, Any]:
        since = self._clock() - self._last_commit
        late = since > 5 * self.commit_seconds + 5
        return {"status": "stalled" if late else "ok", "mode": "local",
                "detail": f"a single desk with no cluster: it commits its own pending records "
                          f"every {self.commit_seconds:g} s (not replicated, no quorum)",
                "seconds_since_commit": round(since, 3)}
