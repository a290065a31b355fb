"""Annotation tasks, their import and export, and assignment, through the public API."""

from __future__ import annotations

import io
import json
from collections import Counter

import polars as pl
import pytest

from phalanx.engine.curation.assignment import AssignmentPolicy, assign, lease_holders
from phalanx.engine.curation.client import AnnotatorClient
from phalanx.engine.curation.io import (
    Label,
    TaskImportError,
    label_rows,
    labels_jsonl,
    labels_parquet,
    tasks_from_csv,
    tasks_from_jsonl,
)
from phalanx.engine.curation.log import CurationLog
from phalanx.engine.curation.tasks import Answer, Task, TaskError, TaskSet
from phalanx.net.crypto import Identity

JSONL = b"""\
{"id": "q1", "kind": "single_choice", "text": "Is this spam?", "options": ["spam", "ham"], "gold": "ham"}
{"id": "q2", "kind": "multi_label", "text": "Topics", "options": ["sport", "art", "news"]}

{"id": "q3", "kind": "rating", "text": "Fluency", "min": 1, "max": 3, "step": 0.5}
{"id": "q4", "kind": "pairwise", "text": "Say hi", "left": "Hello!", "right": "Go away.", "gold": "left"}
{"id": "q5", "kind": "free_text", "text": "Summarise", "max_length": 100}
"""

CSV = b"""\
id,kind,text,options,left,right,min,max,step,max_length,gold
q1,single_choice,Is this spam?,spam|ham,,,,,,,ham
q2,multi_label,Topics,sport|art|news,,,,,,,
q3,rating,Fluency,,,,1,3,0.5,,
q4,pairwise,Say hi,,Hello!,Go away.,,,,,left
q5,free_text,Summarise,,,,,,,100,
"""


def test_each_kind_accepts_its_answers_and_refuses_others() -> None:
    tasks = tasks_from_jsonl(JSONL).by_id
    assert tasks["q1"].answer_from("spam") == Answer((0,))
    assert tasks["q2"].answer_from(["news", "sport"]) == Answer((0, 2))
    assert tasks["q3"].answer_from(2.5) == Answer((3,))
    assert tasks["q3"].value_of(Answer((3,))) == 2.5
    assert tasks["q4"].answer_from("tie") == Answer((2,))
    assert tasks["q5"].answer_from("short") == Answer(text="short")
    for task_id, bad in [("q1", Answer((2,))), ("q1", Answer((0, 1))), ("q2", Answer((2, 0))),
                         ("q3", Answer((5,))), ("q4", Answer((3,))), ("q5", Answer(text="")),
                         ("q5", Answer(text="x" * 101)), ("q1", Answer((0,), "note"))]:
        with pytest.raises(TaskError):
            tasks[task_id].validate(bad)
    with pytest.raises(TaskError, match="not on the scale"):
        tasks["q3"].answer_from(1.25)
    with pytest.raises(TaskError, match="not one of"):
        tasks["q1"].answer_from("eggs")


@pytest.mark.parametrize(("fields", "message"), [
    ({"kind": "essay"}, "kind 'essay' is not one of single_choice, multi_label"),
    ({"kind": "rating", "scale": (1, 2, 0.3)}, "whole number of steps"),
    ({"kind": "pairwise", "completions": ("one",)}, "exactly two completions"),
    ({"kind": "single_choice", "options": ("a",)}, "at least 2 options"),
    ({"kind": "single_choice", "options": ("a", "a")}, "must not repeat"),
    ({"kind": "free_text", "max_length": 0}, "max_length in 1..10000"),
    ({"kind": "free_text", "max_length": 5, "options": ("a", "b")}, "options is not used"),
])
def test_bad_tasks_are_refused_in_one_line(fields: dict[str, object], message: str) -> None:
    with pytest.raises(TaskError, match=message) as caught:
        Task.make(id="x", text="t", **fields)
    assert "\n" not in str(caught.value)


def test_gold_answers_leave_no_trace_in_the_task_an_annotator_sees() -> None:
    with_gold = tasks_from_jsonl(JSONL)
    without = tasks_from_jsonl(b"\n".join(
        json.dumps({k: v for k, v in json.loads(line).items() if k != "gold"}).encode()
        for line in JSONL.splitlines() if line.strip()))
    assert with_gold.root == without.root
    assert set(with_gold.tasks) == set(without.tasks)
    assert with_gold.gold == {with_gold.by_id["q1"].digest: Answer((1,)),
                              with_gold.by_id["q4"].digest: Answer((0,))}
    assert not without.gold
    with pytest.raises(TaskError, match="free_text tasks cannot be gold"):
        TaskSet(with_gold.tasks.values(), {"q5": Answer(text="x")})


def test_jsonl_and_csv_import_the_same_tasks() -> None:
    from_jsonl, from_csv = tasks_from_jsonl(JSONL), tasks_from_csv(CSV)
    assert from_jsonl.root == from_csv.root and len(from_csv) == 5
    assert dict(from_jsonl.gold) == dict(from_csv.gold)


def test_a_bad_file_names_each_bad_row_and_field_and_imports_nothing() -> None:
    huge = "z" * 100_000
    rows = [
        {"id": "ok", "kind": "single_choice", "text": "t", "options": ["a", "b"]},
        {"id": "r2", "kind": "rating", "text": "t", "min": 1, "max": "high", "step": 1},
        {"id": "r3", "kind": "single_choice", "text": "t", "options": ["a", "b"], "gold": huge},
        {"id": "ok", "kind": "free_text", "text": "t", "max_length": 5},
        {"id": "r5", "kind": "single_choice", "text": "t", "options": ["a", "b"], "colour": 1},
        {"id": "r6", "kind": "free_text", "text": "t", "max_length": 10**400},
        {"id": "r7", "kind": "free_text", "text": "t", "max_length": 9, "gold": "words"},
    ]
    data = "\n".join(json.dumps(r) for r in rows).encode() + b"\n{not json\n"
    with pytest.raises(TaskImportError) as caught:
        tasks_from_jsonl(data)
    lines = str(caught.value).splitlines()
    assert [line.split(":")[0] for line in lines] == [f"row {n}" for n in range(2, 9)]
    assert "field max" in lines[0] and "field gold" in lines[1] and "field id" in lines[2]
    assert "'colour'" in lines[3] and "field max_length" in lines[4]
    assert "field gold" in lines[5] and "not JSON" in lines[6]
    assert max(len(line) for line in lines) < 300  # the huge value is clipped


def test_csv_header_and_cells_are_checked() -> None:
    with pytest.raises(TaskImportError, match="unknown columns"):
        tasks_from_csv(b"id,kind,text,colour\nq,single_choice,t,red\n")
    with pytest.raises(TaskImportError, match="row 1: field max_length"):
        tasks_from_csv(b"id,kind,text,max_length\nq,free_text,t,2.5\n")
    with pytest.raises(TaskImportError, match="row 2: more cells"):
        tasks_from_csv(b"id,kind,text,options\nq,single_choice,t,a|b\nr,x,y,z,extra\n")
    with pytest.raises(TaskImportError, match="line 2: not CSV"):
        tasks_from_csv(b"id,kind,text\nq,free_text," + b"w" * 200_000 + b"\n")
    with pytest.raises(TaskImportError, match="not UTF-8"):
        tasks_from_csv(b"id,kind,text\n\xff\xfe,x,y\n")


def test_labels_export_with_confidence_and_provenance() -> None:
    tasks = tasks_from_jsonl(JSONL)
    log = CurationLog(tasks)
    clients = [AnnotatorClient(Identity.derive(5, n)) for n in range(3)]
    q1, q3 = tasks.by_id["q1"], tasks.by_id["q3"]
    for n, c in enumerate(clients):
        log.merge([c.sign(q1, Answer((n % 2,))), c.sign(q3, Answer((2,)))])
    labels = {q1.digest: Label(Answer((0,)), 2 / 3), q3.digest: Label(Answer((2,)), 1.0)}
    rows = label_rows(tasks, log.answers(), labels.get)
    assert [r["task_id"] for r in rows] == ["q1", "q3"]
    assert rows[1]["label"] == 2.0 and rows[0]["label"] == "spam"
    assert len(rows[0]["provenance"]) == 3
    assert set(rows[0]["provenance"]) == {r.digest.hex() for r in log.answers()
                                          if r.task == q1.digest}
    back = [json.loads(line) for line in labels_jsonl(rows).decode().splitlines()]
    assert back == rows
    frame = pl.read_parquet(io.BytesIO(labels_parquet(rows)))
    assert frame["confidence"].to_list() == [2 / 3, 1.0]
    assert frame["label"].to_list() == ['"spam"', "2.0"]
    assert frame["provenance"].to_list()[0] == rows[0]["provenance"]
    with pytest.raises(ValueError, match="confidence must be in"):
        label_rows(tasks, [], {q1.digest: Label(Answer((0,)), 1.5)}.get)


def _many_tasks(n: int, gold: int = 0) -> TaskSet:
    tasks = [Task.make(id=f"t{i:03}", kind="single_choice", text=f"item {i}",
                       options=("a", "b")) for i in range(n)]
    return TaskSet(tasks, {f"t{i:03}": Answer((0,)) for i in range(gold)})


def test_leases_never_hand_a_task_to_more_than_its_open_slots() -> None:
    tasks = _many_tasks(30)
    policy = AssignmentPolicy(redundancy=3, gold_rate=0.0, seed=11)
    roster = [Identity.derive(9, n).public_key for n in range(12)]
    answered = {t: frozenset(roster[:i % 4]) for i, t in enumerate(sorted(tasks.tasks))}
    holders: Counter[bytes] = Counter()
    for annotator in roster:  # every annotator asks; any node computes the same answer
        got = assign(annotator, 30, tasks=tasks, answered=answered, roster=roster,
                     committed_round=40, done=0, policy=policy)
        assert got == assign(annotator, 30, tasks=tasks, answered=dict(answered),
                             roster=list(reversed(roster)), committed_round=41, done=0,
                             policy=policy)  # same epoch, roster order immaterial
        assert not any(annotator in answered[t] for t in got)
        holders.update(got)
    for task, who in answered.items():
        assert holders[task] == max(0, 3 - len(who))


def test_assignment_is_blind_and_puts_uncertain_tasks_first() -> None:
    tasks = _many_tasks(10)
    policy = AssignmentPolicy(redundancy=5, gold_rate=0.0)
    roster = [Identity.derive(9, n).public_key for n in range(5)]
    order = sorted(tasks.tasks)
    uncertainty = {t: i / 10 for i, t in enumerate(order)}
    got = assign(roster[0], 10, tasks=tasks, answered={}, roster=roster, committed_round=0,
                 done=0, policy=policy, uncertainty=uncertainty)
    assert got == order[::-1]  # five slots per task and five annotators: everyone holds all
    # Blind: only who answered matters; the answers themselves are no input at all.
    with_answers = assign(roster[0], 3, tasks=tasks, answered={order[9]: {roster[1]}},
                          roster=roster, committed_round=0, done=0, policy=policy,
                          uncertainty=uncertainty)
    assert with_answers == order[::-1][:3]


def test_gold_tasks_come_at_the_configured_rate_and_deterministically() -> None:
    tasks = _many_tasks(400, gold=100)
    policy = AssignmentPolicy(redundancy=2, gold_rate=0.2, seed=3)  # both hold every task
    roster = [Identity.derive(9, n).public_key for n in range(2)]
    got = assign(roster[0], 250, tasks=tasks, answered={}, roster=roster,
                 committed_round=0, done=0, policy=policy)
    share = sum(tasks.is_gold(t) for t in got) / len(got)
    assert len(got) == 250 and 0.14 < share < 0.26 and len(set(got)) == len(got)
    later = assign(roster[0], 50, tasks=tasks, answered={}, roster=roster,
                   committed_round=0, done=200, policy=policy)
    assert [tasks.is_gold(t) for t in later] == [tasks.is_gold(t) for t in got[200:250]]
    assert assign(roster[0], 250, tasks=tasks, answered={}, roster=roster,
                  committed_round=0, done=0, policy=AssignmentPolicy(
                      redundancy=2, gold_rate=0.2, seed=4)) != got


def test_a_crowd_working_through_leases_gives_each_task_exactly_k_answers() -> None:
    tasks = _many_tasks(20)
    policy = AssignmentPolicy(redundancy=3, gold_rate=0.0, lease_rounds=2)
    clients = [AnnotatorClient(Identity.derive(4, n)) for n in range(7)]
    roster = [c.public_key for c in clients]
    log = CurationLog(tasks)
    for rnd in range(40):  # each round: everyone takes one task, then the round commits
        answered = log.answered()
        batch = []
        for c in clients:
            got = assign(c.public_key, 1, tasks=tasks, answered=answered, roster=roster,
                         committed_round=rnd, done=log.records_of(c.public_key),
                         policy=policy)
            batch += [c.sign(tasks.tasks[t], Answer((0,))) for t in got]
        log.merge(batch)
    assert Counter(len(w) for w in log.answered().values()) == {3: 20}
    assert lease_holders(sorted(tasks.tasks)[0], roster[:3], roster, 0, policy) == []
