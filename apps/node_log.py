"""A node's durable state in one SQLite file, and the audit that re-verifies it.

The node persists through `Persist(key, value)` actions; this store gives each key a home:
- `rounds`: one row per committed round (view, set digest, model hash after it, and the whole
  signed record: proposal, gradients and the commit certificate), queryable with any SQLite
  client;
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

import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import msgpack

from phalanx.engine.events import Stored
from phalanx.engine.node.persisted import StoreError
from phalanx.net.codec import decode_payload, encode_payload
from phalanx.net.errors import DecodeError
from phalanx.net.messages import RoundRecord, SyncResponse, Vote

_SCHEMA = """
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

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None)  # autocommit: one write, one txn
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        self.unreadable = 0  # records a `load` found undecodable

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
                 len(value.certificate), _encode_record(value)))
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
        for key, value in disk.items():
            self.write(key, value)

    def read_all(self) -> dict[str, Stored]:
        """What the node gets back in `Started(disk)`."""
        disk: dict[str, Stored] = {
            key: bytes(value) for key, value in self.db.execute("SELECT key, value FROM state")}
        for rnd, blob in self.db.execute("SELECT round, record FROM rounds ORDER BY round"):
            disk[f"log/{rnd}"] = _decode_record(bytes(blob))
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
            return _decode_record(bytes(blob))
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
        return [_decode_record(bytes(blob)) for (blob,) in
                self.db.execute("SELECT record FROM rounds ORDER BY round")]
