"""Preferences from committed curation data, the safety filter, and preference tasks in a
scenario: through the desk's public API, the scenario's CLI and a simulated run."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from phalanx.apps.cli import app
from phalanx.engine.curation.assignment import AssignmentPolicy
from phalanx.engine.curation.client import AnnotatorClient
from phalanx.engine.curation.desk import CurationDesk
from phalanx.engine.curation.tasks import Answer, Task, TaskSet
from phalanx.engine.rlhf.preferences import collect_preferences, preference_set
from phalanx.engine.rlhf.safety import SafetyFilter, filter_tasks
from phalanx.engine.rlhf.toy import ToyTask, preference_tasks
from phalanx.net.crypto import Identity
from phalanx.scenario.schema import parse_scenario
from phalanx.sim.world import SimWorld

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
TOY = ToyTask()
TOY_TASKS = preference_tasks(TOY, count=8, gold=2, seed=5)
TIE = Task.make(id="tie", kind="pairwise", text="b c d a",
                completions=("a a b b c c d d", "a b a b c d c d"))
PROSE = Task.make(id="prose", kind="pairwise", text="which is kinder?",
                  completions=("thank you", "go away"))
CHOICE = Task.make(id="choice", kind="single_choice", text="cat?", options=("yes", "no"))
UNANSWERED = Task.make(id="unanswered", kind="pairwise", text="a b c d",
                       completions=("a a a a b b b b", "b b b b c c c c"))
ALL = TaskSet([*TOY_TASKS.tasks.tasks.values(), TIE, PROSE, CHOICE, UNANSWERED],
              {t.id: a for t in TOY_TASKS.tasks.tasks.values()
               if (a := TOY_TASKS.tasks.gold.get(t.digest)) is not None})


def answers(n: int) -> dict[str, Answer]:
    """Annotator n's answers: the truth on the toy tasks (annotator 2 inverts one), a tie,
    left on the prose, yes on the choice."""
    out = {tid: Answer(truth.choice) for tid, truth in TOY_TASKS.truth.items()}
    if n == 2:
        out["t0003"] = Answer((1 - TOY_TASKS.truth["t0003"].choice[0],))
    return {**out, "tie": Answer((2,)), "prose": Answer((0,)), "choice": Answer((0,))}


def records(annotators: range) -> list[bytes]:
    out = []
    for n in annotators:
        client = AnnotatorClient(Identity.derive(23, n))
        out += [client.sign(ALL.by_id[tid], answer).encode()
                for tid, answer in answers(n).items()]
    return out


def committed(held: Sequence[bytes], pending: Sequence[bytes] = ()) -> CurationDesk:
    """A desk that committed `held` in rounds of 9 records, then holds `pending` uncommitted."""
    desk = CurationDesk(ALL, policy=AssignmentPolicy(redundancy=3, gold_rate=0.0))
    for record in held:
        desk.submit(record)
    rnd = 0
    while desk.pending:
        batch = desk.proposal(max_records=9)
        assert desk.batch_problem(batch) is None
        desk.commit(batch, rnd)
        rnd += 1
    for record in pending:
        desk.submit(record)
    return desk


def test_pairs_come_from_committed_labels_in_digest_order_with_skips_counted() -> None:
    desk = committed(records(range(3)))
    prefs, report = collect_preferences(desk, TOY)
    assert (prefs.root, prefs.round) == (desk.root, desk.round)
    assert desk.round >= 1 and prefs.root != CurationDesk(ALL).root
    assert report.used == len(prefs) == 8
    assert dict(report.skipped) == {"not_pairwise": 1, "unlabelled": 1, "tie": 1,
                                    "unparseable": 1}
    assert report.total == len(ALL)
    labels = {row.task_id: row for row in desk.labels()}
    toy_tasks = sorted((t for t in ALL.tasks.values() if t.id.startswith("t0")),
                       key=lambda t: t.digest)
    for task, pair in zip(toy_tasks, prefs.pairs, strict=True):
        left, right = (TOY.parse(c) for c in task.completions)
        better = TOY_TASKS.truth[task.id].choice[0]  # every label follows the majority
        assert (pair.chosen, pair.rejected) == ((left, right) if better == 0 else (right, left))
        assert pair.prompt == TOY.parse(task.text)
        assert pair.confidence == labels[task.id].confidence
        assert TOY.score(pair.chosen) > TOY.score(pair.rejected)
    # the one dissent lowers that task's confidence below a unanimous one's
    assert labels["t0003"].confidence < labels["t0004"].confidence  # type: ignore[operator]
    assert preference_set(desk, TOY) == prefs


def test_the_set_is_a_pure_function_of_the_committed_log() -> None:
    early = records(range(3))
    late = records(range(3, 5))
    a = committed(early)
    b = committed(early, pending=late)  # holds more, not committed
    assert b.pending == len(late)
    assert preference_set(a, TOY).digest() == preference_set(b, TOY).digest()
    before = preference_set(b, TOY)
    b.commit(b.proposal(max_records=len(late)), b.round + 1)
    after = preference_set(b, TOY)
    assert after.root != before.root and after.digest() != before.digest()
    assert preference_set(committed([]), TOY).pairs == ()


def test_the_blocklist_matches_whole_words_case_insensitively() -> None:
    safety = SafetyFilter(blocklist=["kill", "credit card"])
    assert safety.reason("Kill it!") == "blocklist"
    assert safety.reason("your CREDIT  card") is None  # a term matches as written
    assert safety.reason("credit card number") == "blocklist"
    assert safety.allows("a skill, a killer app") and safety.allows("")
    assert safety.allows("kill_")  # "_" is a word character: no whole word
    assert not safety.allows("(kill)")
    assert dict(safety.refused) == {"blocklist": 1}
    with pytest.raises(ValueError, match="non-empty"):
        SafetyFilter(blocklist=["  "])
    with pytest.raises(ValueError, match="threshold"):
        SafetyFilter(threshold=1.5)


HOOKS = """\
def share_of_z(text):
    return text.count("z") / max(1, len(text))
def words(text):
    return "high"
def too_big(text):
    return 1.5
def nan(text):
    return float("nan")
def flag(text):
    return True
def broken(text):
    raise RuntimeError("secret " + text)
NOT_A_FUNCTION = 3
"""


@pytest.fixture
def hooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "prefs_hooks.py").write_text(HOOKS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "prefs_hooks"


def test_a_hook_refuses_at_or_above_the_threshold(hooks: str) -> None:
    safety = SafetyFilter.load(blocklist=["b"], hook=f"{hooks}:share_of_z", threshold=0.5)
    assert safety.allows("a z") and not safety.allows("z z")  # 1/3, then 2/3 of the chars
    assert not safety.allows("b zzz")  # the blocklist is asked first
    assert dict(safety.refused) == {"score": 1, "blocklist": 1}
    assert SafetyFilter.load(hook=f"{hooks}:share_of_z", threshold=0.0).reason("a") == "score"


@pytest.mark.parametrize(("name", "message"), [
    ("no_such_module_here:f", "cannot import no_such_module_here"),
    ("{}:missing", "has no missing"),
    ("{}:NOT_A_FUNCTION", "is not a function"),
    ("{}", "expected 'module:function'"),
    ("{}:words", "must return a number in [0, 1], got str"),
    ("{}:too_big", "got float 1.5"),
    ("{}:nan", "got float nan"),
    ("{}:flag", "got bool"),
    ("{}:broken", "raised RuntimeError"),
])
def test_a_bad_hook_is_one_clear_line(hooks: str, name: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        SafetyFilter.load(hook=name.format(hooks)).reason("the text")
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert "the text" not in str(caught.value)


def test_filter_tasks_withholds_refused_text_and_keeps_gold_of_the_rest() -> None:
    tasks = TaskSet([
        Task.make(id="g1", kind="single_choice", text="kill?", options=("a", "b")),
        Task.make(id="g2", kind="single_choice", text="fine", options=("a", "b")),
        Task.make(id="p1", kind="pairwise", text="fine", completions=("ok", "KILL now")),
        Task.make(id="o1", kind="single_choice", text="fine", options=("kill", "b")),
        Task.make(id="r1", kind="rating", text="fine", scale=(1, 5, 1)),
    ], gold={"g1": Answer((0,)), "g2": Answer((1,))})
    safety = SafetyFilter(blocklist=["kill"])
    kept, withheld = filter_tasks(tasks, safety)
    assert withheld == 3 and sorted(kept.by_id) == ["g2", "r1"]
    assert {kept.tasks[d].id: a for d, a in kept.gold.items()} == {"g2": Answer((1,))}
    assert safety.refused["blocklist"] == 3
    same, none = filter_tasks(kept, SafetyFilter(blocklist=["kill"]))
    assert (same, none) == (kept, 0)


def scenario(**curation: Any) -> dict[str, Any]:
    return {"name": "prefs", "seed": 4, "nodes": {"count": 4},
            "workload": {"kind": "linear", "dim": 4, "samples_per_node": 32},
            "training": {"rounds": 40, "step_time": 4.0, "round_timeout": 5.0,
                         "view_timeout": 12.0},
            "record": "drops", "node_logs": False,
            "curation": {"tasks": {"kind": "preferences", "count": 60, "gold": 8},
                         "redundancy": 3, "gold_rate": 0.2, "lease_rounds": 3, **curation}}


def validate(tmp_path: Path, data: dict[str, Any]) -> tuple[int, list[str]]:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert "Traceback" not in result.output
    return result.exit_code, [line for line in result.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize(("tasks", "safety", "expected"), [
    ({"vocab": 30}, None, "curation.tasks.preferences.vocab: Input should be less than or equal to 26"),
    ({"target": 8}, None, "curation.tasks.preferences: target: token 8 is not below vocab 8"),
    ({"gold": 61}, None, "curation.tasks.preferences: gold: 61 gold tasks but only 60"),
    ({"max_target_share": 0.0}, None, "max_target_share: Input should be greater than or equal to 0.05"),
    ({"colour": 1}, None, "curation.tasks.preferences.colour: unknown field"),
    ({}, {"threshold": 2}, "curation.safety.threshold: Input should be less than or equal to 1"),
    ({}, {"blocklist": "kill"}, "curation.safety.blocklist: Input should be a valid list"),
    ({}, {"blocklist": [""]}, "curation.safety.blocklist.0: String should have at least 1"),
    ({}, {"hook": "nowhere_at_all:f"}, "curation.safety: safety hook 'nowhere_at_all:f': "
                                       "cannot import nowhere_at_all"),
    ({}, {"filter": "on"}, "curation.safety.filter: unknown field"),
])
def test_validate_names_bad_values_in_one_line(tmp_path: Path, tasks: dict[str, Any],
                                               safety: dict[str, Any] | None,
                                               expected: str) -> None:
    data = scenario(**({"safety": safety} if safety is not None else {}))
    data["curation"]["tasks"].update(tasks)
    code, lines = validate(tmp_path, data)
    assert code == 2 and len(lines) == 1, lines
    assert expected in lines[0]


def crowd(reputation: bool) -> dict[str, Any]:
    return {"crowd": {"annotators": 10, "report_every": 5, "groups": [
        {"kind": "honest", "share": 0.6, "accuracy": [0.8, 0.95], "seconds": [2, 4]},
        {"kind": "colluder", "share": 0.2, "seconds": [2, 4]},
        {"kind": "random", "share": 0.2, "seconds": [2, 4]}]},
        "reputation": {"min_gold": 3} if reputation else None}


def test_a_simulated_crowd_labels_preference_tasks_into_a_preference_set() -> None:
    """6 honest / 2 inverting / 2 random raters, reputation on: the committed labels make a
    set whose chosen completions truly score higher, and every honest node builds the same
    bytes."""
    world = SimWorld(parse_scenario(scenario(**crowd(reputation=True))))
    world.run()
    sets = {preference_set(world.desk(n), TOY).digest() for n in range(4)}  # type: ignore[arg-type]
    prefs, report = collect_preferences(world.desk(0), TOY)  # type: ignore[arg-type]
    assert len(sets) == 1 and report.used >= 50 and report.skipped["unparseable"] == 0
    right = sum(TOY.score(p.chosen) > TOY.score(p.rejected) for p in prefs.pairs)
    print(f"preference accuracy {right / len(prefs):.3f} over {len(prefs)} pairs")
    assert right / len(prefs) >= 0.9


def test_the_run_summary_counts_tasks_the_safety_filter_withheld(tmp_path: Path) -> None:
    data = scenario(**crowd(reputation=True), safety={"blocklist": ["h h"]})
    data["training"]["rounds"] = 12
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output[-2000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    parsed = parse_scenario(data)
    tasks = parsed.curation.task_set(parsed.seed)  # type: ignore[union-attr]
    withheld = summary["curation"]["tasks_withheld"]
    assert withheld == 60 - len(tasks) > 0
    assert all("h h" not in text for t in tasks.tasks.values() for text in (t.text, *t.completions))
