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

`audit_log` replays a log through a fresh node's state-sync path: every signature, every
certificate and every recomputed model hash is checked, as any peer would check them.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import msgpack

from phalanx.engine.events import Stored
from phalanx.net.codec import decode_payload, encode_payload
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


class NodeLog:
    """The SQLite file behind one node's `Persist` actions."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None)  # autocommit: one write, one txn
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)

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

    def records(self) -> list[RoundRecord]:
        return [_decode_record(bytes(blob)) for (blob,) in
                self.db.execute("SELECT record FROM rounds ORDER BY round")]
