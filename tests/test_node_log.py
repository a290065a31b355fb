"""The SQLite node log (what a node persists) and `phalanx audit` (re-verifying the logs)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgpack
import pytest
from typer.testing import CliRunner

import phalanx
from phalanx.apps.audit import audit_run
from phalanx.apps.cli import app
from phalanx.apps.node_log import FORMAT, NodeLog, _encode_record
from phalanx.engine.node.persisted import StoreError
from phalanx.net.messages import RoundRecord

SMALL = """
name: small
seed: 3
nodes: {count: 4}
workload: {kind: linear, dim: 4, samples_per_node: 32, eval_samples: 64}
training: {rounds: 4, lr: 0.1, momentum: 0.5, step_time: 0.02, round_timeout: 0.3,
           view_timeout: 1.0}
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("audit")
    (root / "small.yaml").write_text(SMALL)
    result = phalanx.run(root / "small.yaml", out=root / "out")
    assert result.ok
    return root / "out"


def test_log_round_trips_what_the_node_persisted(run_dir: Path, tmp_path: Path) -> None:
    log = NodeLog(run_dir / "nodes" / "2.sqlite")
    disk = log.read_all()
    assert {"checkpoint", "votes", "log/0", "log/3"} <= set(disk)
    copy = NodeLog(tmp_path / "copy.sqlite")
    copy.write_all(disk)
    assert copy.read_all() == disk
    rows = log.db.execute("SELECT round, signers FROM rounds ORDER BY round").fetchall()
    assert [r for r, _ in rows] == [0, 1, 2, 3] and all(s >= 3 for _, s in rows)


def test_audit_verifies_every_round_of_every_node(run_dir: Path) -> None:
    audits, split = audit_run(run_dir)
    assert [(a.node, a.rounds, a.problem) for a in audits] == [(i, 4, None) for i in range(4)]
    assert len({a.model_hash for a in audits}) == 1 and split == []
    result = CliRunner().invoke(app, ["audit", str(run_dir)])
    assert result.exit_code == 0 and "16 rounds verified" in result.output


def _tamper(path: Path, rnd: int, change: str) -> None:
    log = NodeLog(path)
    record = log.get(f"log/{rnd}")
    assert isinstance(record, RoundRecord)
    if change == "certificate":  # one signer short of a quorum
        record = RoundRecord(record.round, record.proposal, record.gradients,
                             record.certificate[:2])
    else:  # a gradient's signed bytes altered: its signature no longer holds
        frame = msgpack.unpackb(record.gradients[0])
        frame[6] = bytes([frame[6][0] ^ 1]) + frame[6][1:]
        record = RoundRecord(record.round, record.proposal,
                             (msgpack.packb(frame), *record.gradients[1:]), record.certificate)
    log.write(f"log/{rnd}", record)
    log.close()


@pytest.mark.parametrize(("change", "reason"), [("certificate", "certificate_too_small"),
                                                ("gradient", "sync_bad_signature")])
def test_audit_finds_a_tampered_record(run_dir: Path, tmp_path: Path, change: str,
                                       reason: str) -> None:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    _tamper(copy / "nodes" / "1.sqlite", 2, change)
    audits, _ = audit_run(copy)
    bad = {a.node: a for a in audits if a.problem}
    assert set(bad) == {1} and bad[1].rounds == 2 and reason in (bad[1].problem or "")
    assert CliRunner().invoke(app, ["audit", str(copy)]).exit_code == 1


def test_a_run_keeps_each_gradient_frame_once_for_all_its_nodes(run_dir: Path) -> None:
    """Every node logs the same signed gradients: the logs name them by digest and the
    frames are kept once, in nodes/frames.sqlite."""
    frames = sqlite3.connect(run_dir / "nodes" / "frames.sqlite")
    stored = dict(frames.execute("SELECT digest, frame FROM frames"))
    frames.close()
    logged = set()
    for node in range(4):
        log = NodeLog(run_dir / "nodes" / f"{node}.sqlite")
        for record in log.records():
            logged |= set(record.gradients)
        raw = log.db.execute("SELECT record FROM rounds").fetchall()
        assert all(len(blob) < 2000 for (blob,) in raw)  # digests, not 4-dim gradient frames
        log.close()
    assert sorted(logged) == sorted(stored.values())


def test_a_log_of_the_format_before_is_read_and_audited(run_dir: Path, tmp_path: Path) -> None:
    """Format 1 (each record holding its gradient frames, no user_version) is still read, and
    a node restarting on such a disk goes on writing it in that format."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    path = copy / "nodes" / "3.sqlite"
    disk = NodeLog(path).read_all()
    path.unlink()
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE state (key TEXT PRIMARY KEY, value BLOB NOT NULL);
        CREATE TABLE rounds (round INTEGER PRIMARY KEY, view INTEGER NOT NULL,
            set_digest TEXT NOT NULL, model_hash TEXT NOT NULL, signers INTEGER NOT NULL,
            record BLOB NOT NULL);
        CREATE TABLE evidence (offender INTEGER PRIMARY KEY, proof BLOB NOT NULL);""")
    for key, value in disk.items():
        if isinstance(value, RoundRecord):
            db.execute("INSERT INTO rounds VALUES (?, 0, '', '', 3, ?)",
                       (value.round, _encode_record(value)))
        else:
            db.execute("INSERT INTO state VALUES (?, ?)", (key, value))
    db.commit()
    db.close()
    old = NodeLog(path)
    assert old.format == 1 and old.read_all() == disk
    old.write("log/0", disk["log/0"])
    (blob,) = old.db.execute("SELECT record FROM rounds WHERE round = 0").fetchone()
    assert len(blob) > 100 * len(disk["log/0"].gradients)  # the frames, inline as before
    old.close()
    audits, split = audit_run(copy)
    assert [(a.node, a.rounds, a.problem) for a in audits] == [(i, 4, None) for i in range(4)]
    assert split == []


def test_a_log_without_its_frames_or_of_a_newer_format_fails_in_one_line(
        run_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "nodes" / "frames.sqlite").unlink()
    result = CliRunner().invoke(app, ["audit", str(copy)])
    assert result.exit_code == 2 and "frames.sqlite, which is missing" in result.output
    newer = tmp_path / "newer.sqlite"
    db = sqlite3.connect(newer)
    db.execute(f"PRAGMA user_version = {FORMAT + 1}")
    db.close()
    with pytest.raises(StoreError, match=f"node log format {FORMAT + 1} is newer"):
        NodeLog(newer)


def test_audit_of_a_folder_that_is_not_a_run_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["audit", str(tmp_path)])
    assert result.exit_code == 2 and "no scenario.resolved.yaml" in result.output


def test_audit_names_the_members_the_logs_prove_equivocated() -> None:
    """Offline forensics for forks beyond the bound: two records of one round that name
    different outcomes. In one view, those who signed both commit certificates are the
    culprits; across views, those who commit-voted the earlier set and prepared the later one
    citing an older justification (a broken lock)."""
    from nodekit import Kit

    from phalanx.apps.audit import _culprits
    from phalanx.net.envelope import FrameOpener
    from phalanx.net.messages import COMMIT, PREPARE

    kit = Kit(11)
    opener = FrameOpener(kit.keyring)
    a, b, model, base = b"a" * 32, b"b" * 32, b"m" * 32, b"z" * 32

    def record(view: int, digest: bytes, signers: tuple[int, ...],
               cites: int | None = None) -> RoundRecord:
        commits = tuple(kit.vote(s, 3, view, COMMIT, digest, model) for s in signers)
        prepared = () if cites is None else tuple(
            kit.vote(s, 3, view, PREPARE, digest, base, justify_view=cites) for s in signers)
        return RoundRecord(3, b"", (), commits, prepared)

    first = record(0, a, (0, 2, 3))
    assert _culprits(opener, [first, record(0, b, (1, 2, 3))]) == [2, 3]
    assert _culprits(opener, [first, record(1, b, (1, 2, 3), cites=-1)]) == [2, 3]
    # citing a certificate from view 0 frees the lock: this round alone proves nothing
    assert _culprits(opener, [first, record(1, b, (1, 2, 3), cites=0)]) == []
    assert _culprits(opener, [first, record(1, b, (1, 2, 3))]) == []


def test_the_real_host_writes_a_batch_in_one_transaction_before_its_sends(
        tmp_path: Path) -> None:
    """A vote must be on disk before it leaves: the host writes every Persist of an action
    batch (one transaction) before it hands any frame of that batch to the transport, even a
    frame listed first; a batch whose write fails leaves nothing half-written."""
    import asyncio

    from phalanx.apps.node_host import AsyncHost
    from phalanx.engine.events import Persist, Send
    from phalanx.engine.node import Node

    log = NodeLog(tmp_path / "node.sqlite")
    seen: list[dict[str, object]] = []

    class Recorder:  # what the disk held when each frame went out
        def send(self, peer: int, frame: bytes) -> None:
            seen.append(log.read_all())

    async def run() -> None:
        host = AsyncHost(object.__new__(Node), Recorder(), log)
        host.execute([Send(1, b"vote", 6, 0), Persist("votes", b"v"),
                      Persist("checkpoint", b"c")])
        with pytest.raises(sqlite3.Error):
            host.execute([Persist("a", b"1"), Persist("b", None)])  # type: ignore[arg-type]

    asyncio.run(run())
    assert seen == [{"votes": b"v", "checkpoint": b"c"}]
    assert "a" not in log.read_all()  # rolled back with the bad write
