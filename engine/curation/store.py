"""Where a curation log keeps its records: the only I/O the curation engine does.

A store holds encoded records by digest and appends a batch atomically: after a crash it holds
every batch that `append` returned from, and nothing of a batch it was writing. The log keeps
its own index in memory and rebuilds it from `records()` when it opens, so a store needs no
more than these three calls.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

__all__ = ["MemoryStore", "RecordStore", "SqliteStore"]


class RecordStore(Protocol):
    def records(self) -> Iterator[bytes]:
        """Every stored record (encoded), in the order they were appended."""
        ...

    def append(self, batch: Sequence[tuple[bytes, bytes]]) -> None:
        """Store (digest, encoded record) pairs, all or none; a digest already held is skipped."""
        ...

    def close(self) -> None: ...


class MemoryStore:
    """A store in a dict: simulated nodes and tests."""

    def __init__(self) -> None:
        self._records: dict[bytes, bytes] = {}

    def records(self) -> Iterator[bytes]:
        return iter(list(self._records.values()))

    def append(self, batch: Sequence[tuple[bytes, bytes]]) -> None:
        for digest, data in batch:
            self._records.setdefault(digest, data)

    def close(self) -> None:
        pass


class SqliteStore:
    """Records in one SQLite table, write-ahead logged, one transaction per batch (a kill
    between batches loses nothing `append` returned from; a kill inside one loses that batch
    only, never part of it)."""

    def __init__(self, path: str | Path, *, any_thread: bool = False) -> None:
        """`any_thread`: the connection may be used from another thread than the one that
        opened it (one at a time: the caller serializes, as GroupCommit does)."""
        self._db = sqlite3.connect(str(path), isolation_level=None,  # transactions by hand
                                   check_same_thread=not any_thread)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: an append that returned survives a power cut too, not just a killed process.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS annotations ("
                         "n INTEGER PRIMARY KEY, digest BLOB UNIQUE NOT NULL, "
                         "record BLOB NOT NULL)")

    def records(self) -> Iterator[bytes]:
        for (data,) in self._db.execute("SELECT record FROM annotations ORDER BY n"):
            yield bytes(data)

    def append(self, batch: Sequence[tuple[bytes, bytes]]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany("INSERT OR IGNORE INTO annotations (digest, record) "
                                 "VALUES (?, ?)", batch)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()
