"""Bounded memory (issue 16): a node keeps only its newest `history_window` committed rounds in
memory; older ones stay on its disk, are read back through the driver (`Load` -> `Loaded`) when a
syncing peer asks for them, and a restart reads back only the window."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest
from nodekit import DIM, MEMBERS, Kit

from phalanx.apps.node_host import SPOOL_AFTER, AsyncHost
from phalanx.apps.node_log import NodeLog
from phalanx.engine.events import Load, Received, RoundCommitted, Started, Stored
from phalanx.engine.node import StoreError
from phalanx.net.messages import SyncRequest, SyncResponse

KIT = Kit(seed=16)
WINDOW, ROUNDS = 4, 12


def _finished_cluster(**kw: object):  # type: ignore[no-untyped-def]
    pump = KIT.cluster(rounds=ROUNDS, history_window=WINDOW, **kw)
    pump.start()
    pump.run_to_end()
    return pump


class _ReadCounting(Mapping[str, Stored]):
    """A disk dict that remembers which values a node read (membership tests are free)."""

    def __init__(self, disk: dict[str, Stored]) -> None:
        self.disk, self.read = disk, []

    def __getitem__(self, key: str) -> Stored:
        self.read.append(key)
        return self.disk[key]

    def __contains__(self, key: object) -> bool:
        return key in self.disk

    def __iter__(self) -> Iterator[str]:
        return iter(self.disk)

    def __len__(self) -> int:
        return len(self.disk)


def test_a_node_keeps_only_the_window_in_memory() -> None:
    pump = _finished_cluster()
    for i in MEMBERS:
        node = pump.nodes[i]
        assert node.round == ROUNDS and node.history_base == 0
        assert [r.round for r in node.history] == list(range(ROUNDS - WINDOW, ROUNDS))
        assert sum(k.startswith("log/") for k in pump.disks[i]) == ROUNDS  # all on disk


def test_the_window_changes_nothing_but_memory() -> None:
    narrow = _finished_cluster()
    wide = KIT.cluster(rounds=ROUNDS, history_window=64)
    wide.start()
    wide.run_to_end()
    for i in MEMBERS:
        assert narrow.nodes[i].model_hash == wide.nodes[i].model_hash
        assert all(narrow.disks[i][f"log/{r}"] == wide.disks[i][f"log/{r}"]
                   for r in range(ROUNDS))
        assert wide.nodes[i].history[-WINDOW:] == narrow.nodes[i].history


def test_rounds_older_than_the_window_are_served_from_disk() -> None:
    pump = _finished_cluster()
    node = pump.nodes[0]
    since = len(pump.log)
    sent = pump.feed(0, Received(KIT.forge(1, SyncRequest(0, 0, 16))))
    # the node asked its driver for rounds 0..11 (the pump answers at once, as the simulator
    # does) and answered with them, exactly the records it committed
    (load,) = [a for i, a in pump.log[since:] if i == 0 and isinstance(a, Load)]
    assert load.keys == tuple(f"log/{r}" for r in range(ROUNDS))
    assert sent == [load]
    (resp,) = [e.message for e in pump.sent_by(0, SyncResponse, since=len(pump.sent) - 1)]
    assert resp.records == tuple(pump.disks[0][f"log/{r}"] for r in range(ROUNDS))
    # a request inside the window is answered from memory, with no disk read
    (send,) = node.handle(Received(KIT.forge(1, SyncRequest(0, ROUNDS - 2, 16))), pump.now)
    assert KIT.open(send.frame).message.records == tuple(node.history[-2:])  # type: ignore[union-attr]


def test_a_peer_that_lost_its_disk_catches_up_from_older_rounds_on_disk() -> None:
    pump = _finished_cluster()
    target = pump.nodes[0].model_hash
    pump.now += 1.0
    pump.restart(3, KIT.node(3, ROUNDS, history_window=WINDOW), keep_disk=False)
    pump.run_to_end(nodes=(3,))
    late = pump.nodes[3]
    assert late.round == ROUNDS and late.model_hash == target and late.rejections == {}
    # every round came by record sync, most of them read back from the peers' disks
    synced = [c for c in pump.commits(3) if c.via_sync]
    assert [c.round for c in synced][-ROUNDS:] == list(range(ROUNDS))
    assert any(isinstance(a, Load) for i, a in pump.log if i != 3)
    assert len(late.history) == WINDOW


def test_a_restart_reads_back_only_the_window() -> None:
    pump = _finished_cluster()
    disk = _ReadCounting(dict(pump.disks[2]))
    reborn = KIT.node(2, ROUNDS, history_window=WINDOW)
    reborn.handle(Started(disk), pump.now + 1.0)
    logs_read = sorted(k for k in disk.read if k.startswith("log/"))  # each read once
    assert logs_read == sorted(f"log/{r}" for r in range(ROUNDS - WINDOW, ROUNDS))
    assert reborn.history == pump.nodes[2].history and reborn.history_base == 0
    assert reborn.model_hash == pump.nodes[2].model_hash
    # and it still serves round 0, from its disk, to a peer that asks
    since = len(pump.log)
    pump.nodes[2] = reborn
    pump.disks[2] = disk.disk
    pump.feed(2, Received(KIT.forge(1, SyncRequest(0, 0, 2))))
    (resp,) = [KIT.open(a.frame).message for i, a in pump.log[since:]
               if i == 2 and type(a).__name__ == "Send"]
    assert [r.round for r in resp.records] == [0, 1]  # type: ignore[union-attr]


def test_sqlite_restart_reads_the_window_and_serves_older_rounds(tmp_path: Path) -> None:
    pump = _finished_cluster()
    log = NodeLog(tmp_path / "node.sqlite")
    log.write_all(dict(pump.disks[1]))
    decoded: list[str] = []
    get = log.get
    log.get = lambda key: (decoded.append(key), get(key))[1]  # type: ignore[method-assign]
    reborn = KIT.node(1, ROUNDS, history_window=WINDOW)
    reborn.handle(Started(log.view()), pump.now + 1.0)
    assert sorted(k for k in decoded if k.startswith("log/")) == sorted(
        f"log/{r}" for r in range(ROUNDS - WINDOW, ROUNDS))
    assert reborn.history == pump.nodes[1].history
    assert reborn.model_hash == pump.nodes[1].model_hash
    values = log.load(("log/0", "log/1", f"log/{ROUNDS}"))
    assert values[:2] == (pump.disks[1]["log/0"], pump.disks[1]["log/1"]) and values[2] is None
    log.close()


def test_an_unreadable_record_fails_the_restart_in_one_line_and_a_load_skips_it(
        tmp_path: Path) -> None:
    pump = _finished_cluster()
    log = NodeLog(tmp_path / "node.sqlite")
    log.write_all(dict(pump.disks[1]))
    for rnd in (0, ROUNDS - 1):
        log.db.execute("UPDATE rounds SET record = ? WHERE round = ?", (b"\x01garbage", rnd))
    assert log.load(("log/0", "log/1")) == (None, pump.disks[1]["log/1"])
    assert log.unreadable == 1
    with pytest.raises(StoreError, match=f"disk record 'log/{ROUNDS - 1}' is unreadable"):
        KIT.node(1, ROUNDS, history_window=WINDOW).handle(Started(log.view()), 1.0)
    log.close()


def test_the_window_must_hold_a_round() -> None:
    with pytest.raises(ValueError, match="history_window must be at least 1, got 0"):
        KIT.node(0, history_window=0)



def test_the_real_host_spools_its_commit_rows_and_keeps_few(tmp_path: Path) -> None:
    """A long run's commit rows go to `<log>.commits.jsonl`; `results()` still lists every one
    of this process, in order, with the bytes sent for its round."""

    class Wire:
        def send(self, peer: int, frame: bytes) -> None:
            pass

    async def run() -> None:
        host = AsyncHost(KIT.node(0), Wire(), NodeLog(tmp_path / "node.sqlite"),
                         keep_model=lambda r: r == 99)
        try:
            for r in range(100):
                host.send(1, b"x" * (r + 1), 1, r)  # the round's traffic, before its commit
                host.emit(RoundCommitted(0, r, 0, 4, float(r), bytes([r]) * 32, False,
                                         np.full(DIM, r, dtype=np.float32)))
                assert len(host._recent) <= SPOOL_AFTER + 1
                assert len(host.bytes_sent) <= SPOOL_AFTER + 1
            assert host.commit_count == 100 and host.last_train_loss == 99.0
            assert list(host.kept_models()) == [(bytes([99]) * 32).hex()]
        finally:
            host.close()
        rows = host.results()["commits"]  # after close, as a node's shutdown asks
        host.write_results(tmp_path / "result.json", {"node": 0})
        written = json.loads((tmp_path / "result.json").read_text())
        assert written == {**host.results(), "node": 0}
        assert [row["round"] for row in rows] == list(range(100))
        assert [row["bytes_sent"] for row in rows] == [r + 1 for r in range(100)]
        assert [row["order"] for row in rows] == list(range(1, 101))
        assert (tmp_path / "node.commits.jsonl").exists()

    asyncio.run(run())
