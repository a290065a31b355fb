"""The curation desk: intake, assignment, the round's batch, the committed snapshot, through
the desk's public API."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest

from phalanx.engine.curation.assignment import AssignmentPolicy
from phalanx.engine.curation.client import AnnotatorClient
from phalanx.engine.curation.desk import CurationDesk
from phalanx.engine.curation.records import GENESIS, RecordRefused, sign_annotation
from phalanx.engine.curation.store import SqliteStore
from phalanx.engine.curation.tasks import Answer, Task, TaskError, TaskSet
from phalanx.net.crypto import Identity

CHOICE = [Task.make(id=f"c{i:02d}", kind="single_choice", text=f"item {i}",
                    options=("cat", "dog", "bird")) for i in range(12)]
PAIRS = [Task.make(id=f"p{i}", kind="pairwise", text="which is kinder?",
                   completions=(f"answer {i}", f"reply {i}")) for i in range(3)]
RATING = Task.make(id="r0", kind="rating", text="how clear?", scale=(1, 5, 1))
MULTI = Task.make(id="m0", kind="multi_label", text="topics", options=("a", "b", "c"))
NOTE = Task.make(id="n0", kind="free_text", text="say why", max_length=40)
TASKS = TaskSet([*CHOICE, *PAIRS, RATING, MULTI, NOTE], gold={"c00": Answer((0,))})
POLICY = AssignmentPolicy(redundancy=3, gold_rate=0.0)


def client(n: int) -> AnnotatorClient:
    return AnnotatorClient(Identity.derive(11, n))


def desk(**kwargs: object) -> CurationDesk:
    return CurationDesk(TASKS, policy=POLICY, **kwargs)  # type: ignore[arg-type]


def refusal(d: CurationDesk, record: bytes) -> str:
    with pytest.raises(RecordRefused) as caught:
        d.submit(record)
    assert "\n" not in str(caught.value)
    return caught.value.reason


def crowd_records() -> list[bytes]:
    """Four annotators: three agree with the truth (index i % 3) on every choice task, one
    always says "bird"; everyone prefers the left completion, rates 4, picks a and b."""
    out = []
    for n in range(4):
        c = client(n)
        for i, task in enumerate(CHOICE):
            out.append(c.sign(task, Answer((2,) if n == 3 else (i % 3,))).encode())
        out += [c.sign(t, Answer((0,))).encode() for t in PAIRS]
        out.append(c.sign(RATING, Answer((3,))).encode())
        out.append(c.sign(MULTI, Answer((0, 1))).encode())
        out.append(c.sign(NOTE, Answer(text=f"because {n}")).encode())
    return out


def committed_desk(records: list[bytes]) -> CurationDesk:
    d = desk()
    for r in records:
        d.submit(r)
    rnd = 0
    while d.pending:
        batch = d.proposal(max_records=7)
        assert batch and d.batch_problem(batch) is None
        d.commit(batch, rnd)
        rnd += 1
    return d


def test_submit_holds_pending_and_refuses_with_counted_reasons() -> None:
    d, c = desk(), client(0)
    first = c.sign(CHOICE[0], Answer((1,)))
    assert d.submit(first.encode()) == first.digest
    assert (d.pending, d.committed) == (1, 0)
    assert d.head(c.public_key) == (1, first.digest)
    assert refusal(d, first.encode()) == "replay"
    altered = bytearray(c.sign(CHOICE[1], Answer((1,))).encode())
    altered[-70] ^= 1  # a byte of the body: the signature no longer matches
    assert refusal(d, bytes(altered)) in ("bad_signature", "malformed")
    assert refusal(d, b"\x93junk") == "malformed"
    foreign = Task.make(id="x", kind="single_choice", text="?", options=("y", "n"))
    assert refusal(d, c.sign(foreign, Answer((0,))).encode()) == "unknown_task"
    gap = AnnotatorClient(c.identity, seq=5, prev=b"\x01" * 32)
    assert refusal(d, gap.sign(CHOICE[2], Answer((0,))).encode()) == "sequence_gap"
    forged = sign_annotation(Identity.derive(11, 9), replace(
        c.sign(CHOICE[3], Answer((0,))).body, annotator=Identity.derive(11, 9).public_key))
    body = replace(forged.body, annotator=c.public_key)  # claims another's key
    stolen = replace(forged, body=body)
    assert refusal(d, stolen.encode()) == "bad_signature"
    assert d.counts["replay"] == 1 and d.counts["unknown_task"] == 1
    assert d.counts["sequence_gap"] == 1 and d.counts["bad_signature"] >= 1
    assert d.pending == 1  # nothing refused was kept


def test_next_tasks_are_blind_and_never_repeat_for_an_annotator() -> None:
    d, c = desk(), client(0)
    seen: set[str] = set()
    for _ in range(len(TASKS)):
        tasks = d.next_tasks(c.public_key, 2)
        if not tasks:
            break
        assert all(t.id not in seen for t in tasks)
        task = tasks[0]
        seen.add(task.id)
        answer = Answer(text="ok") if task.kind == "free_text" else Answer((0,))
        d.submit(c.sign(task, answer).encode())  # pending only: still never handed again
    assert len(seen) == len(TASKS) - 1  # all but the gold task (gold_rate 0)
    assert d.next_tasks(c.public_key, 5) == []
    # gold stays invisible: a task carries no trace of its answer
    assert all("gold" not in repr(t) for t in TASKS.tasks.values())
    with pytest.raises(ValueError, match="count"):
        d.next_tasks(c.public_key, -1)


def test_proposal_keeps_chains_whole_within_bounds() -> None:
    d = desk()
    records = crowd_records()
    for r in records:
        d.submit(r)
    batch = d.proposal(max_records=5)
    assert len(batch) == 5 and d.batch_problem(batch) is None
    small = d.proposal(max_bytes=600)
    assert 0 < sum(map(len, small)) <= 600 and d.batch_problem(small) is None
    # a batch missing a chain's start is refused as a gap, however it is ordered
    assert d.batch_problem(batch[1:]) == "sequence_gap"
    assert d.batch_problem(list(reversed(batch))) is None  # order inside a batch is free
    d.commit(batch, 0)
    assert (d.committed, d.pending, d.round) == (5, len(records) - 5, 0)
    assert d.batch_problem(batch[:1]) == "replay"  # already committed
    assert d.batch_problem(batch[:1] * 0 + d.proposal(2) * 2) == "replay"  # twice in one
    with pytest.raises(ValueError, match="round"):
        d.commit([], 0)


def test_forged_and_altered_batches_are_refused() -> None:
    d = desk()
    c = client(1)
    good = c.sign(CHOICE[0], Answer((0,)))
    altered = replace(good, body=replace(good.body, choice=(1,))).encode()
    assert d.batch_problem([altered]) == "bad_signature"
    assert d.batch_problem([b"\xc1"]) == "malformed"
    valid = AnnotatorClient(c.identity, 1, good.digest).sign(CHOICE[1], Answer((0,)))
    twisted = sign_annotation(c.identity, replace(valid.body, choice=(7,)))  # signed, bad
    assert d.batch_problem([good.encode(), twisted.encode()]) == "invalid_answer"
    wrong_link = AnnotatorClient(c.identity, seq=1, prev=GENESIS).sign(CHOICE[2], Answer((0,)))
    assert d.batch_problem([wrong_link.encode()]) == "chain_link"
    assert d.batch_problem([good.encode()]) is None
    d.submit(good.encode())  # held: the committed log trusts its verification, not its digest
    resigned = replace(good, signature=bytes(64)).encode()
    assert d.batch_problem([resigned]) == "bad_signature"
    assert d.committed == 0  # checking changes nothing


def test_desks_fed_the_same_batches_agree_on_root_and_labels() -> None:
    records = crowd_records()
    one = committed_desk(records)
    two = desk()
    for rnd, point in enumerate(one.stats().history):  # the other learns only by commits
        assert point.round == rnd
    replay = desk()
    for r in records:
        replay.submit(r)
    rnd = 0
    while replay.pending:
        batch = replay.proposal(max_records=7)
        two.commit(batch, rnd)
        replay.commit(batch, rnd)
        rnd += 1
    assert two.pending == 0 and two.root == one.root and two.committed == len(records)
    assert two.labels() == one.labels()
    assert two.export_labels("jsonl") == one.export_labels("jsonl")
    by_id = {row.task_id: row for row in one.labels()}
    assert [by_id[t.id].value for t in CHOICE] == [("cat", "dog", "bird")[i % 3]
                                                    for i in range(12)]
    assert by_id["c01"].method == "dawid_skene" and by_id["c01"].confidence > 0.9
    assert by_id["p0"].value == "left" and by_id["p0"].method == "bradley_terry"
    assert by_id["r0"].value == 4.0 and by_id["r0"].method == "mean"
    assert by_id["m0"].value == ["a", "b"]
    assert by_id["n0"].value is None and by_id["n0"].answers == 4
    stats = one.stats()
    assert (stats.records, stats.pending, stats.annotators, stats.tasks) == (
        len(records), 0, 4, len(TASKS))
    assert stats.labelled == len(TASKS) - 1 and stats.alpha is not None
    view = one.annotator(client(3).public_key)
    assert (view.committed, view.pending, view.gold_seen, view.gold_correct) == (
        18, 0, 1, 0)
    assert one.annotator(client(0).public_key).gold_correct == 1
    assert len(one.leaderboard(limit=2)) == 2


def test_a_lone_annotator_gets_majority_vote_and_export_round_trips() -> None:
    d = desk()
    c = client(0)
    for task in CHOICE[:3]:
        d.submit(c.sign(task, Answer((1,))).encode())
    d.commit(d.proposal(), 0)
    rows = d.labels()
    assert {r.method for r in rows} == {"majority_vote"}
    lines = [json.loads(line) for line in d.export_labels("jsonl").decode().splitlines()]
    assert [line["label"] for line in lines] == ["dog"] * 3
    assert all(len(line["provenance"]) == 1 for line in lines)
    frame = pl.read_parquet(d.export_labels("parquet"))
    assert frame["task_id"].to_list() == ["c00", "c01", "c02"]
    with pytest.raises(ValueError, match="format"):
        d.export_labels("xml")  # type: ignore[arg-type]


def test_add_tasks_grows_the_set_and_refuses_a_reused_id() -> None:
    d = desk()
    extra = Task.make(id="c99", kind="single_choice", text="new", options=("x", "y"))
    assert d.add_tasks(TaskSet([extra, CHOICE[0]], gold={"c99": Answer((1,))})) == 1
    assert d.task(extra.digest) == extra and d.tasks.is_gold(extra.digest)
    assert d.tasks.is_gold(CHOICE[0].digest)  # the old gold stays
    assert d.add_tasks(TaskSet([extra])) == 0
    clash = Task.make(id="c99", kind="single_choice", text="other", options=("x", "y"))
    with pytest.raises(TaskError, match="taken"):
        d.add_tasks(TaskSet([clash]))
    record = client(0).sign(extra, Answer((0,))).encode()
    assert d.submit(record)


def test_acknowledged_submissions_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "desk.sqlite"
    d = desk(store=SqliteStore(path))
    records = crowd_records()[:10]
    digests = [d.submit(r) for r in records]
    d.close()
    again = desk(store=SqliteStore(path))
    assert again.pending == 10 and again.committed == 0
    assert again.head(client(0).public_key) == (10, digests[-1])
    assert refusal(again, records[0]) == "replay"
    again.commit(again.proposal(), 0)
    assert again.committed == 10
    again.close()


def test_a_task_fetched_earlier_is_no_longer_offered_once_its_slots_are_filled() -> None:
    """A client that fetched a task asks `still_offered` before answering: once others filled
    its k slots (or it answered it itself) the task is no longer theirs; gold stays offered
    until they answer it."""
    d = CurationDesk(TASKS, policy=AssignmentPolicy(redundancy=1, gold_rate=0.0))
    late, others = client(0), [client(n) for n in range(1, 6)]
    fetched = d.next_tasks(late.public_key, 20)
    task = next(t for t in fetched if t.id.startswith("c"))
    assert d.still_offered(late.public_key, task.digest)
    gold = TASKS.get(next(t for t in TASKS.gold))
    assert gold is not None and d.still_offered(late.public_key, gold.digest)
    # someone else answers the task's one slot (a lease of theirs in another node's view)
    d.submit(others[0].sign(task, Answer((0,))).encode())
    assert not d.still_offered(late.public_key, task.digest)
    d.submit(late.sign(gold, Answer((0,))).encode())
    assert not d.still_offered(late.public_key, gold.digest)
    assert not d.still_offered(late.public_key, bytes(32))  # no such task
