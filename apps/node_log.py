"""A node's durable state in one SQLite file, and the audit that re-verifies it.

The node persists through `Persist(key, value)` actions; this store gives each key a home:
- `rounds`: one row per committed round (view, set digest, model hash after it, and the whole
  signed record: proposal, gradients and the commit certificate), queryable with any SQLite
  client; each gradient frame in a record stands as the SHA-256 of the frame, the frame itself
  being kept once in `frames` (the dense payloads are nearly all of a log's bytes);
- `frames`: the gradient frames by digest, in the node's own file; or, for a simulated run's
  output, in one `frames.sqlite` beside the logs that all nodes share (every node logs the same
  frames: one copy instead of n), named in the log's `meta`;
- `evidence`: the signed proofs that excluded equivocating peers;
- `state`: everything else (checkpoint, the votes and lock of the round in progress, each
  encoded here from the typed record the node persisted).
Each write (or batch of writes, `write_many`) is one transaction, so a crash leaves the old
values or the new ones.

A (re)starting node gets `view()`, a mapping that reads a key only when the node asks for it:
it reads back its newest rounds and its state, not the whole log (`read_all` does, for tools).
`load` answers a node's `Load` (older rounds a syncing peer asks for).

`audit_log` replays a log through a fresh node's state-sync path: every signature, every
certificate and every recomputed model hash is checked, as any peer would check them.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack

from phalanx.engine.events import Stored
from phalanx.engine.node.persisted import StoreError
from phalanx.net.codec import decode_payload, encode_payload
from phalanx.net.errors import DecodeError
from phalanx.net.messages import RoundRecord, SyncResponse, Vote

# 1: each record held its gradient frames (still read, and still written to such a file, so an
# upgraded node restarts on its old disk); 2: frames by digest (PRAGMA user_version)
FORMAT = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY, view INTEGER NOT NULL, set_digest TEXT NOT NULL,
    model_hash TEXT NOT NULL, signers INTEGER NOT NULL, record BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS evidence (offender INTEGER PRIMARY KEY, proof BLOB NOT NULL);
"""


def _encode_record(record: RoundRecord) -> bytes:
    return encode_payload(SyncResponse(record.round, (record,)))


def _decode_record(blob: bytes) -> RoundRecord:
    response: SyncResponse = decode_payload(SyncResponse.KIND, blob)  # type: ignore[assignment]
    return response.records[0]


def frame_digest(frame: bytes) -> bytes:
    return hashlib.sha256(frame).digest()


def _round_of(key: str) -> int | None:
    """The round of a "log/<round>" key, None for any other key."""
    prefix, _, rest = key.partition("/")
    return int(rest) if prefix == "log" and rest.isdigit() else None


def _row_of(key: str) -> tuple[str, str, str, int | str]:
    """Where `write` keeps `key`: (table, value column, key column, key value)."""
    rnd = _round_of(key)
    if rnd is not None:
        return "rounds", "record", "round", rnd
    prefix, _, rest = key.partition("/")
    if prefix == "evidence" and rest.isdigit():
        return "evidence", "proof", "offender", int(rest)
    return "state", "value", "key", key


class StoreView(Mapping[str, Stored]):
    """A node's disk as `Started(disk)` hands it over, read key by key as the node asks:
    a restart reads its state and the newest rounds, never every record of a long log."""

    def __init__(self, log: NodeLog) -> None:
        self.log = log

    def __getitem__(self, key: str) -> Stored:
        value = self.log.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.log.has(key)

    def __iter__(self) -> Iterator[str]:
        yield from self.log.stored_keys()

    def __len__(self) -> int:
        return sum(1 for _ in self.log.stored_keys())


class NodeLog:
    """The SQLite file behind one node's `Persist` actions."""

    def __init__(self, path: Path, frames: Path | None = None) -> None:
        """Open (or create) the log at `path`. `frames`: where a new log keeps its gradient
        frames, a file several logs share (default: a table of this file); an existing log
        keeps where it was created with."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None)  # autocommit: one write, one txn
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.format = self._format()
        self.db.executescript(_SCHEMA)
        self.frames = "main"  # the schema that holds the `frames` table
        if self.format == FORMAT:
            self._open_frames(frames)
        self.unreadable = 0  # records a `load` found undecodable

    def _format(self) -> int:
        """This file's format: FORMAT for a new one (set now), 1 for a log from before."""
        (version,) = self.db.execute("PRAGMA user_version").fetchone()
        if version > FORMAT:
            self.db.close()
            raise StoreError(f"{self.path}: node log format {version} is newer than this "
                             f"phalanx reads (formats 1 to {FORMAT}); upgrade phalanx")
        if version == 0 and self.db.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'rounds'").fetchone():
            return 1
        self.db.execute(f"PRAGMA user_version = {FORMAT}")
        return FORMAT

    def _open_frames(self, frames: Path | None) -> None:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'frames'").fetchone()
        empty = self.db.execute("SELECT 1 FROM rounds LIMIT 1").fetchone() is None
        if row is None and frames is not None and empty:  # a new log: where its frames go
            name = str(frames.relative_to(self.path.parent))
            self.db.execute("INSERT INTO meta VALUES ('frames', ?)", (name,))
            row = (name,)
        if row is not None:
            shared = self.path.parent / row[0]
            if frames is None and not shared.exists():
                self.db.close()
                raise StoreError(f"{self.path}: its gradient frames are kept in {shared}, "
                                 f"which is missing")
            self.db.execute("ATTACH DATABASE ? AS shared", (str(shared),))
            self.db.execute("PRAGMA shared.journal_mode=WAL")
            self.frames = "shared"
        self.db.execute(f"CREATE TABLE IF NOT EXISTS {self.frames}.frames "
                        f"(digest BLOB PRIMARY KEY, frame BLOB NOT NULL)")

    def close(self) -> None:
        self.db.close()

    def write(self, key: str, value: Stored) -> None:
        if isinstance(value, RoundRecord):
            # the columns are for queries only (the audit verifies the signed frames), so the
            # first vote's payload is read without its signature check
            vote: Vote = decode_payload(Vote.KIND, msgpack.unpackb(value.certificate[0])[-1])  # type: ignore[assignment]
            self.db.execute(
                "INSERT OR REPLACE INTO rounds VALUES (?, ?, ?, ?, ?, ?)",
                (value.round, vote.view, vote.set_digest.hex(), vote.model_hash.hex(),
                 len(value.certificate), _encode_record(self._by_digest(value))))
        elif key.startswith("evidence/"):
            self.db.execute("INSERT OR REPLACE INTO evidence VALUES (?, ?)",
                            (int(key.split("/", 1)[1]), value))
        else:  # a typed record (engine/node/persisted.py) is encoded here, where it is kept
            encode = getattr(value, "to_bytes", None)
            blob = encode() if callable(encode) else value  # anything else: sqlite judges it
            self.db.execute("INSERT OR REPLACE INTO state VALUES (?, ?)", (key, blob))

    def write_many(self, items: list[tuple[str, Stored]]) -> None:
        """Several writes in one transaction: one flush to disk instead of one each, and a
        crash keeps all of them or none."""
        if len(items) == 1:
            self.write(*items[0])
            return
        self.db.execute("BEGIN")
        try:
            for key, value in items:
                self.write(key, value)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def write_all(self, disk: dict[str, Any]) -> None:
        self.write_many(list(disk.items()))  # one transaction: one flush, not one per key

    def _by_digest(self, record: RoundRecord) -> RoundRecord:
        """`record` as this log keeps it: in format 2 its gradient frames go to `frames` (once
        per digest) and the record names them by digest."""
        if self.format == 1:
            return record
        digests = tuple(frame_digest(frame) for frame in record.gradients)
        # frames first: a crash between the two leaves a frame no record names, never a
        # record without its frames
        self.db.executemany(f"INSERT OR IGNORE INTO {self.frames}.frames VALUES (?, ?)",
                            zip(digests, record.gradients, strict=True))
        return replace(record, gradients=digests)

    def _with_frames(self, blob: bytes) -> RoundRecord:
        """The record stored as `blob`, its gradient frames read back (DecodeError if a frame
        is missing: a record is whole or unreadable)."""
        record = _decode_record(blob)
        if self.format == 1 or not record.gradients:
            return record
        frames = []
        for digest in record.gradients:
            row = self.db.execute(f"SELECT frame FROM {self.frames}.frames WHERE digest = ?",
                                  (digest,)).fetchone()
            if row is None:
                raise DecodeError("bad_digest", f"gradient frame {digest.hex()[:16]} is missing")
            frames.append(bytes(row[0]))
        return replace(record, gradients=tuple(frames))

    def read_all(self) -> dict[str, Stored]:
        """What the node gets back in `Started(disk)`."""
        disk: dict[str, Stored] = {
            key: bytes(value) for key, value in self.db.execute("SELECT key, value FROM state")}
        for rnd, blob in self.db.execute("SELECT round, record FROM rounds ORDER BY round"):
            disk[f"log/{rnd}"] = self._with_frames(bytes(blob))
        for offender, proof in self.db.execute("SELECT offender, proof FROM evidence"):
            disk[f"evidence/{offender}"] = bytes(proof)
        return disk

    def view(self) -> StoreView:
        """What the node gets back in `Started(disk)`: read as it asks."""
        return StoreView(self)

    def stored_keys(self) -> list[str]:
        db = self.db
        return ([key for (key,) in db.execute("SELECT key FROM state")]
                + [f"log/{r}" for (r,) in db.execute("SELECT round FROM rounds ORDER BY round")]
                + [f"evidence/{o}" for (o,) in db.execute("SELECT offender FROM evidence")])

    def has(self, key: str) -> bool:
        return self._select(key, "1") is not None

    def get(self, key: str) -> Stored | None:
        """The value under `key`, None if there is none; StoreError if it is unreadable."""
        blob = self._select(key, "value")
        if blob is None:
            return None
        if _round_of(key) is None:
            return bytes(blob)
        try:
            return self._with_frames(bytes(blob))
        except DecodeError as err:
            raise StoreError(f"disk record {key!r} is unreadable: {err.reason}") from None

    def load(self, keys: tuple[str, ...]) -> tuple[Stored | None, ...]:
        """A node's `Load`: what is under each key; None for a key with nothing, or with a
        record that no longer decodes (counted in `unreadable`: the peer that asked for it
        gets the rounds before it, and fetches a checkpoint if that is none)."""
        values: list[Stored | None] = []
        for key in keys:
            try:
                values.append(self.get(key))
            except StoreError:
                self.unreadable += 1
                values.append(None)
        return tuple(values)

    def _select(self, key: str, column: str) -> Any:
        """`column` ("value", or "1" to test) of the row that holds `key`; None if none."""
        table, value, where, arg = _row_of(key)
        row = self.db.execute(f"SELECT {value if column == 'value' else column} FROM {table} "
                              f"WHERE {where} = ?", (arg,)).fetchone()
        return None if row is None else row[0]

    def records(self) -> list[RoundRecord]:
        return list(self.each_record())

    def each_record(self) -> Iterator[RoundRecord]:
        """The committed rounds in order, read one at a time."""
        for (blob,) in self.db.execute("SELECT record FROM rounds ORDER BY round"):
            yield self._with_frames(bytes(blob))
