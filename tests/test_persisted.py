"""What a node keeps on disk (engine/node/persisted.py): typed records that round-trip, the
positional msgpack lists earlier builds wrote still read (a node upgraded mid-run restarts on
its old disk and goes on exactly as it would have), and an unreadable record stops the start
with one line naming it."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nodekit import Kit

from phalanx.engine.events import Started
from phalanx.engine.node import StoreError
from phalanx.engine.node.persisted import SavedLock, SavedState, SignedSlots, Slot
from phalanx.net.messages import Epoch


def _legacy_state(s: SavedState) -> bytes:
    """The checkpoint as builds before the typed records wrote it."""
    return msgpack.packb([s.round, s.view, s.model_hash, s.params.tobytes(),
                          s.velocity.tobytes(), s.last_update.tobytes(),
                          s.worker_momentum.tobytes(),
                          [[e.round, list(e.members)] for e in s.epochs], s.sender_adam])


def _legacy_votes(slots: SignedSlots) -> bytes:
    return msgpack.packb(sorted((s.round, s.view, s.phase) for s in slots.slots))


def _legacy_lock(lock: SavedLock) -> bytes:
    return msgpack.packb([lock.round, list(lock.votes), lock.proposal])


def _state(n: int = 5) -> SavedState:
    rng = np.random.default_rng(n)
    vec = [rng.standard_normal(n).astype(np.float32) for _ in range(4)]
    return SavedState(7, 2, bytes(range(32)), *vec, (Epoch(0, (0, 1, 2, 3)), Epoch(5, (0, 1, 2))),
                      b"adam")


def _same(a: SavedState, b: SavedState) -> bool:
    arrays = ("params", "velocity", "last_update", "worker_momentum")
    return all(getattr(a, f) == getattr(b, f) for f in ("round", "view", "model_hash", "epochs",
                                                         "sender_adam")) and all(
        np.array_equal(getattr(a, f), getattr(b, f)) for f in arrays)


def test_typed_records_round_trip_and_legacy_lists_still_read() -> None:
    state = _state()
    assert _same(SavedState.from_bytes(state.to_bytes()), state)
    assert _same(SavedState.from_bytes(_legacy_state(state)), state)
    slots = SignedSlots((Slot(3, 0, 0), Slot(3, 0, 1), Slot(3, 1, 2)))
    assert SignedSlots.from_bytes(slots.to_bytes()) == slots
    assert SignedSlots.from_bytes(_legacy_votes(slots)) == slots
    assert SignedSlots.from_bytes(msgpack.packb([])) == SignedSlots(())
    lock = SavedLock(4, (b"v1", b"v2", b"v3"), b"proposal")
    assert SavedLock.from_bytes(lock.to_bytes()) == lock
    assert SavedLock.from_bytes(_legacy_lock(lock)) == lock


@given(st.binary(max_size=64))
def test_garbage_is_a_one_line_store_error(blob: bytes) -> None:
    for cls in (SavedState, SignedSlots, SavedLock):
        try:
            cls.from_bytes(blob)
        except StoreError as err:
            assert "\n" not in str(err) and "is unreadable" in str(err)


def test_a_node_restarts_on_an_old_builds_disk_exactly_as_on_its_own() -> None:
    """Run a cluster, take one node's disk as the simulator keeps it (records), as a file
    keeps it (encoded) and as an older build wrote it, and restart it from each: the three
    restarts are the same node (round, model, what it signed, its lock, its next actions)."""
    kit = Kit(21)
    pump = kit.cluster(rounds=8)
    pump.start()
    pump.run(until=lambda: pump.nodes[2].round >= 3)
    disk = dict(pump.disks[2])
    old = dict(disk)
    old["checkpoint"] = _legacy_state(SavedState.read(disk["checkpoint"]))
    old["votes"] = _legacy_votes(SignedSlots.read(disk["votes"]))
    if "lock" in disk:
        old["lock"] = _legacy_lock(SavedLock.read(disk["lock"]))
    assert old["checkpoint"] != disk["checkpoint"]
    new = {k: v if isinstance(v, bytes) or not hasattr(v, "to_bytes") else v.to_bytes()
           for k, v in disk.items()}  # as a file keeps them
    restarted = []
    for d in (disk, new, old):
        node = kit.node(2, rounds=8)
        actions = node.handle(Started(d), 100.0)
        restarted.append((node.round, node.view, node.model_hash, node.protocol.signed,
                          node.protocol.lock, [type(a).__name__ for a in actions],
                          node.params.tobytes(), node.velocity.tobytes()))
    assert restarted[0] == restarted[1] == restarted[2]
    assert restarted[0][0] >= 3


def test_a_node_refuses_to_start_on_an_unreadable_checkpoint() -> None:
    node = Kit(22).node(0)
    with pytest.raises(StoreError, match="'checkpoint' is unreadable"):
        node.handle(Started({"checkpoint": b"\x93\x01\x02"}), 0.0)
