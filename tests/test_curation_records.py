"""Signed annotation records and the replicated curation log, through the public API."""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import VerifyKey

from phalanx.engine.curation.client import AnnotatorClient
from phalanx.engine.curation.log import CurationLog, LogLimits
from phalanx.engine.curation.records import (
    GENESIS,
    MAX_RECORD_BYTES,
    RecordRefused,
    SignedAnnotation,
    decode_annotation,
    sign_annotation,
)
from phalanx.engine.curation.store import SqliteStore
from phalanx.engine.curation.tasks import Answer, Task, TaskSet
from phalanx.net.crypto import Identity
from phalanx.net.merkle import verify_chunk

TASKS = TaskSet([
    Task.make(id=f"t{i}", kind="single_choice", text=f"item {i}", options=("a", "b", "c"))
    for i in range(8)
] + [Task.make(id="note", kind="free_text", text="describe", max_length=50)])
CHOICE = [TASKS.by_id[f"t{i}"] for i in range(8)]


def client(n: int) -> AnnotatorClient:
    return AnnotatorClient(Identity.derive(7, n))


def crowd(annotators: int = 4, each: int = 5) -> list[SignedAnnotation]:
    records = []
    for n in range(annotators):
        c = client(n)
        records += [c.sign(CHOICE[i], Answer(((n + i) % 3,))) for i in range(each)]
    return records


def refusal(log: CurationLog, record: bytes | SignedAnnotation) -> str:
    with pytest.raises(RecordRefused) as caught:
        log.add(record)
    assert "\n" not in str(caught.value)
    return caught.value.reason


def test_merge_is_order_free_and_idempotent() -> None:
    records = crowd()
    reference = CurationLog(TASKS)
    assert len(reference.merge(records).accepted) == 20
    for seed in range(5):
        shuffled = [r.encode() for r in records]
        random.Random(seed).shuffle(shuffled)
        log = CurationLog(TASKS)
        half = len(shuffled) // 2
        log.merge(shuffled[half:])  # later links arrive first: refused as gaps ...
        log.merge(shuffled)  # ... and taken once their predecessors come
        assert log.root == reference.root
        assert log.answers() == reference.answers()
    again = reference.merge(records)
    assert again.accepted == () and again.refused == {"replay": 20}


def test_root_is_a_function_of_the_set_only() -> None:
    records = crowd()
    one, two = CurationLog(TASKS), CurationLog(TASKS)
    one.merge(records)
    for r in reversed(records):  # one by one, newest first: every gap comes back later
        two.merge([r])
    two.merge(records)
    assert one.root == two.root and len(one) == len(two) == 20
    assert one.root != CurationLog(TASKS).root


def test_forged_and_altered_records_are_refused_and_counted() -> None:
    log = CurationLog(TASKS)
    honest = client(0)
    record = honest.sign(CHOICE[0], Answer((1,)))
    unsigned = SignedAnnotation(replace(record.body, choice=(2,)), bytes(64))
    mallory = Identity.derive(7, 99)  # signs the right bytes, with the wrong key
    forged = replace(unsigned, signature=mallory.sign(b"phalanx/annotation/v1"
                                                      + unsigned.digest))
    assert refusal(log, forged) == "bad_signature"
    altered = SignedAnnotation(replace(record.body, choice=(2,)), record.signature)
    assert refusal(log, altered) == "bad_signature"
    fetched = log.merge([altered], expected={record.digest})  # asked for the original
    assert fetched.refused == {"altered": 1}
    log.add(record)
    assert refusal(log, record) == "replay"
    assert log.counts == {"bad_signature": 2, "altered": 1, "replay": 1}


def test_a_signature_by_another_key_fails_even_when_well_formed() -> None:
    record = client(0).sign(CHOICE[0], Answer((1,)))
    impostor = client(1)
    with pytest.raises(ValueError, match="own annotator"):
        sign_annotation(impostor.identity, record.body)
    resigned = SignedAnnotation(record.body, impostor.identity.sign(b"phalanx/annotation/v1"
                                                                     + record.digest))
    assert refusal(CurationLog(TASKS), resigned) == "bad_signature"


def test_chain_links_gaps_and_bad_links() -> None:
    c = client(0)
    first, second, third = (c.sign(CHOICE[i], Answer((0,))) for i in range(3))
    log = CurationLog(TASKS)
    assert refusal(log, second) == "sequence_gap"
    log.add(first)
    identity = c.identity
    skip = sign_annotation(identity, replace(third.body, prev=first.digest))  # seq 2 -> seq 0
    assert refusal(log, skip) == "chain_link"
    genesis_late = sign_annotation(identity, replace(first.body, seq=5))
    assert refusal(log, genesis_late) == "chain_link"
    other = client(1).sign(CHOICE[0], Answer((0,)))
    log.add(other)
    borrowed = sign_annotation(identity, replace(second.body, prev=other.digest))
    assert refusal(log, borrowed) == "chain_link"
    log.merge([third, second])
    assert len(log) == 4 and log.head(c.public_key) == (3, third.digest)


def test_a_fork_is_kept_as_evidence_and_marks_the_annotator() -> None:
    identity = Identity.derive(7, 0)
    a, b = AnnotatorClient(identity), AnnotatorClient(identity)  # one key, two histories
    left = [a.sign(CHOICE[0], Answer((0,))), a.sign(CHOICE[1], Answer((0,)))]
    right = [b.sign(CHOICE[0], Answer((2,)))]
    honest = client(1).sign(CHOICE[0], Answer((1,)))
    log = CurationLog(TASKS)
    report = log.merge([*left, *right, honest])
    assert len(report.accepted) == 4 and report.equivocations == 1
    assert log.equivocators == {identity.public_key}
    assert log.counts["equivocation"] == 1
    assert [row.annotator for row in log.answers()] == [honest.body.annotator]
    assert len(log.answers(include_equivocators=True)) == 3
    other = CurationLog(TASKS)
    other.merge([honest, *right, *left])
    assert other.root == log.root and other.equivocators == log.equivocators


def test_answers_must_fit_the_task() -> None:
    log = CurationLog(TASKS)
    identity = Identity.derive(7, 0)
    good = client(0).sign(CHOICE[0], Answer((1,)))

    def resigned(**changes: object) -> SignedAnnotation:
        return sign_annotation(identity, replace(good.body, **changes))

    assert refusal(log, resigned(choice=(3,))) == "invalid_answer"
    assert refusal(log, resigned(choice=(0, 1))) == "invalid_answer"
    assert refusal(log, resigned(kind="rating")) == "invalid_answer"
    assert refusal(log, resigned(task=hashlib.sha256(b"nothing").digest())) == "unknown_task"
    assert refusal(log, resigned(text="x" * 10_001)) == "oversized"
    note = TASKS.by_id["note"]
    assert refusal(log, resigned(task=note.digest, kind="free_text", choice=(),
                                 text="y" * 51)) == "invalid_answer"
    assert refusal(log, b"\x93\x01\x02\x03") == "malformed"
    assert refusal(log, b"\x00" * (MAX_RECORD_BYTES + 1)) == "oversized"
    assert len(log) == 0


def test_floods_are_refused_by_count() -> None:
    records = crowd(annotators=2, each=4)
    log = CurationLog(TASKS, limits=LogLimits(max_batch=5, max_per_annotator=3,
                                              max_records=100))
    report = log.merge(records)
    assert report.refused["flood"] == 3 + 1  # 3 beyond the batch, then annotator 0's 4th
    assert len(log) == 4 and log.records_of(client(0).public_key) == 3


def test_signed_bytes_match_the_documented_layout() -> None:
    """What the browser reproduces: msgpack body, SHA-256, Ed25519 over domain + digest."""
    c = client(3)
    record = c.sign(CHOICE[2], Answer((2,)), client_time_ms=1_700_000_000_000)
    body = msgpack.packb([CHOICE[2].digest, "single_choice", c.public_key, 0, GENESIS, [2], "",
                          1_700_000_000_000], use_bin_type=True)
    digest = hashlib.sha256(body).digest()
    assert digest == record.digest
    VerifyKey(c.public_key).verify(b"phalanx/annotation/v1" + digest, record.signature)
    assert record.encode() == msgpack.packb([msgpack.unpackb(body), record.signature],
                                            use_bin_type=True)
    assert decode_annotation(record.encode()) == record


def test_client_resumes_its_chain_from_the_log() -> None:
    log = CurationLog(TASKS)
    first = client(0)
    log.merge([first.sign(CHOICE[i], Answer((0,))) for i in range(3)])
    again = client(0)  # a restarted client with the same key
    again.resume(*log.head(again.public_key))
    log.add(again.sign(CHOICE[3], Answer((1,))))
    assert len(log) == 4 and not log.counts


def test_two_partitioned_logs_converge_by_exchanging_what_the_other_lacks() -> None:
    records = crowd(annotators=6, each=4)
    east, west = CurationLog(TASKS), CurationLog(TASKS)
    east.merge(records[:14])
    west.merge(records[10:])  # annotator 2's chain starts in the east: its tail waits
    assert east.root != west.root
    for here, there in ((east, west), (west, east)):
        wanted = there.wanted(here.digests())
        assert wanted == here.lacking(there.digests())
        there.merge(here.encoded(wanted), expected=set(wanted))
    assert east.root == west.root and len(east) == 24
    assert east.answers() == west.answers()


def test_sqlite_store_reloads_the_same_log(tmp_path: Path) -> None:
    path = tmp_path / "curation.sqlite"
    log = CurationLog(TASKS, SqliteStore(path))
    log.merge(crowd())
    root = log.root
    log.close()
    reopened = CurationLog(TASKS, SqliteStore(path))
    assert reopened.root == root and len(reopened) == 20 and not reopened.counts
    reopened.close()


_WRITER = textwrap.dedent("""
    import sys
    from phalanx.engine.curation.client import AnnotatorClient
    from phalanx.engine.curation.log import CurationLog
    from phalanx.engine.curation.store import SqliteStore
    from phalanx.engine.curation.tasks import Answer, Task, TaskSet
    from phalanx.net.crypto import Identity

    tasks = [Task.make(id=f"t{i}", kind="single_choice", text="x", options=("a", "b"))
             for i in range(50)]
    log = CurationLog(TaskSet(tasks), SqliteStore(sys.argv[1]))
    clients = [AnnotatorClient(Identity.derive(3, n)) for n in range(10)]
    for batch in range(10_000):
        log.merge([c.sign(tasks[batch % 50], Answer((batch % 2,))) for c in clients])
        print(batch, flush=True)
""")


def test_a_killed_writer_loses_no_finished_batch_and_leaves_no_partial_one(
        tmp_path: Path) -> None:
    path = tmp_path / "curation.sqlite"
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)],
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    for _ in range(30):  # thirty batches returned, then kill it, likely inside a write
        line = writer.stdout.readline()
        assert line, "the writer died before it was killed"
        last = int(line)
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    tasks = TaskSet([Task.make(id=f"t{i}", kind="single_choice", text="x", options=("a", "b"))
                     for i in range(50)])
    log = CurationLog(tasks, SqliteStore(path))
    assert len(log) % 10 == 0 and len(log) >= 10 * (last + 1)
    assert not log.counts  # every stored chain is whole
    log.close()


def test_a_record_proves_its_place_in_the_committed_root() -> None:
    log = CurationLog(TASKS)
    records = crowd(annotators=3, each=3)
    log.merge(records)
    for record in records:
        index, count, path = log.proof(record.digest)
        assert verify_chunk(log.root, index, count, record.digest, path)
        assert not verify_chunk(log.root, index, count, bytes(32), path)


def test_new_tasks_extend_the_log_but_none_may_vanish() -> None:
    extra = Task.make(id="late", kind="single_choice", text="later", options=("x", "y"))
    record = client(0).sign(extra, Answer((1,)))
    log = CurationLog(TASKS)
    assert refusal(log, record) == "unknown_task"
    log.extend_tasks(TaskSet([*TASKS.tasks.values(), extra]))
    log.add(record)
    with pytest.raises(ValueError, match="lacks 9 of the log's tasks"):
        log.extend_tasks(TaskSet([extra]))


def _with_a_fork() -> list[SignedAnnotation]:
    twin = AnnotatorClient(Identity.derive(7, 0))  # annotator 0's key, a second history
    return [*crowd(annotators=3, each=3), twin.sign(CHOICE[5], Answer((2,))),
            twin.sign(CHOICE[6], Answer((2,)))]


MIXED = _with_a_fork()
MIXED_REFERENCE = CurationLog(TASKS)
MIXED_REFERENCE.merge(MIXED)


@settings(max_examples=40, deadline=None)
@given(st.permutations(range(len(MIXED))), st.lists(st.integers(1, len(MIXED)), max_size=6))
def test_any_arrival_order_and_batching_gives_the_same_state(order: list[int],
                                                              cuts: list[int]) -> None:
    arrivals = [MIXED[i] for i in order]
    log = CurationLog(TASKS)
    start = 0
    for cut in sorted(cuts):
        log.merge(arrivals[start:cut])
        start = cut
    log.merge(arrivals)  # redelivery, as a sync exchange does: fills every gap
    assert log.root == MIXED_REFERENCE.root
    assert log.equivocators == MIXED_REFERENCE.equivocators == {client(0).public_key}
    assert log.answers(include_equivocators=True) == MIXED_REFERENCE.answers(
        include_equivocators=True)
    assert log.head(client(0).public_key) == MIXED_REFERENCE.head(client(0).public_key)
