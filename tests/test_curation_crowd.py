"""A simulated crowd at work: colluding annotators and Byzantine annotation nodes against
reputation, through `phalanx run` and the simulator, with the labels scored against the
hidden truth (labels.parquet, task_labels.parquet, summary.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from test_cli import cli, invoke, one_error_line

from phalanx.apps.runner import run_scenario
from phalanx.engine.byzantine.curation import annotation_attack
from phalanx.engine.curation.crowd import AnnotatorGroup, CrowdError, CrowdSpec, SimulatedCrowd
from phalanx.engine.curation.records import decode_annotation
from phalanx.scenario.schema import Scenario, parse_scenario
from phalanx.sim.world import SimWorld

SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "curation.yaml"


def shipped() -> dict[str, Any]:
    return yaml.safe_load(SCENARIO.read_text())


def without_adversaries(data: dict[str, Any]) -> dict[str, Any]:
    """The same run with only its honest annotators and no Byzantine annotation node."""
    crowd = data["curation"]["crowd"]
    honest = [g for g in crowd["groups"] if g["kind"] == "honest"]
    kept = round(crowd["annotators"] * sum(g["share"] for g in honest))
    share = sum(g["share"] for g in honest)
    crowd["groups"] = [{**g, "share": g["share"] / share} for g in honest]
    crowd["annotators"] = kept
    data["curation"]["byzantine"] = []
    data["name"] = "curation-clean"
    return data


def run(tmp_path: Path, data: dict[str, Any], name: str) -> tuple[dict[str, Any], Path]:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / name
    done = cli("run", path, "--out", out, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "labels.parquet, task_labels.parquet" in " ".join(done.stdout.split())
    return json.loads((out / "summary.json").read_text()), out


def test_colluders_and_a_dropping_node_cost_under_two_points(tmp_path: Path) -> None:
    """Must-show 5: 20% colluders and an annotation node that drops everything, reputation
    on, against the same run with neither."""
    attacked, out = run(tmp_path, shipped(), "attacked")
    clean = run_scenario(parse_scenario(without_adversaries(shipped()))).summary
    labels = attacked["labels"]
    after = labels["colluders_below_honest_median_after_answers"]
    print(f"label accuracy: attacked {attacked['label_accuracy']:.4f} "
          f"({labels['labelled_tasks']} tasks), clean {clean['label_accuracy']:.4f}; "
          f"colluders' mean weight below the honest median after {after:.1f} answers each; "
          f"final weights: honest median {labels['weight_honest_median']:.3f}, colluders "
          f"{labels['weight_colluder_mean']:.3f}; resubmitted "
          f"{labels['annotator_actions']['resubmitted']} records the node dropped")
    assert labels["annotators"] == {"colluder": 3, "honest": 12}
    assert clean["labels"]["annotators"] == {"honest": 12}
    assert attacked["label_accuracy"] >= clean["label_accuracy"] - 0.02
    assert labels["labelled_tasks"] == clean["labels"]["labelled_tasks"] == 108  # 120 - gold
    assert after is not None and after <= 20
    assert labels["weight_colluder_mean"] == 0.0 < labels["weight_honest_median"]
    # the dropping node bit: what it acknowledged was resubmitted elsewhere, and committed
    actions = labels["annotator_actions"]
    # every answer committed (the annotators notice the last ones only at a later visit)
    assert actions["resubmitted"] > 0 and labels["records_committed"] == actions["answered"]
    assert labels["refused_by_honest_nodes"] == {}
    series = pl.read_parquet(out / "labels.parquet")
    last = series.row(-1, named=True)
    assert last["accuracy"] == attacked["label_accuracy"] and last["suspended"] == 3
    assert series["round"].is_sorted() and series["records"].is_sorted()


def small(behaviour: str | None, **crowd: Any) -> Scenario:
    """A quick variant: 36 tasks, 6 honest annotators and 2 colluders, two annotation nodes
    (5 and 6), node 6 misbehaving as `behaviour`."""
    data = shipped()
    data["nodes"]["count"] = 7
    data["training"]["rounds"] = 30
    c = data["curation"]
    c["annotation_nodes"] = 2
    c["tasks"] = {"kind": "synthetic", "count": 36, "classes": 3, "gold": 6}
    c["redundancy"] = 3
    c["crowd"] = {"annotators": 8, "report_every": 1, **crowd, "groups": [
        {"kind": "honest", "share": 0.75, "accuracy": [0.7, 0.9], "seconds": [2, 4]},
        {"kind": "colluder", "share": 0.25, "seconds": [2, 4]}]}
    c["byzantine"] = [] if behaviour is None else [{"nodes": [6], "behaviour": behaviour}]
    data["expect"] = {"honest_hashes_equal": True}
    return parse_scenario(data)


def settled(world: SimWorld) -> set[tuple[Any, ...]]:
    """(root, committed, pending, labels, standings) of every node: one element when all
    agree, to the bit."""
    states = set()
    for host in world.hosts:
        desk = world.desk(host.id)
        assert desk is not None
        labels = tuple((r.task_id, r.answer, r.confidence) for r in desk.labels())
        standings = tuple(sorted((k, repr(s)) for k, s in desk.standings().items()))
        states.add((desk.root, desk.committed, desk.pending, labels, standings))
    return states


def test_forged_records_are_refused_by_every_honest_node_and_counted() -> None:
    world = SimWorld(small("forge"))
    world.run()
    crowd = world.crowd
    assert crowd is not None
    for member in world.scenario.members:  # records are forwarded to the members
        desk, node = world.desk(member), world.hosts[member].node
        assert desk is not None and desk.counts["bad_signature"] > 0, (member, desk.counts)
        # and the forwarder is named: it signed the message carrying what it forged
        assert node is not None and node.rejections.get("curation_bad_signature", 0) > 0
    (_, committed, pending, _, _), = settled(world)  # the forger commits what the round did
    keys = set(crowd.annotators.kinds)
    log = world.desk(0).committed_log  # type: ignore[union-attr]
    assert all(decode_annotation(r).body.annotator in keys for r in log.encoded(log.digests()))
    actions = crowd.annotators.counts
    assert pending == 0 and committed == actions["committed"] == actions["answered"]
    assert actions["resubmitted"] > 0  # what the forger swallowed went in through others


@pytest.mark.parametrize("behaviour", ["equivocate", "delay"])
def test_equivocating_or_delaying_nodes_only_slow_records_down(behaviour: str) -> None:
    world = SimWorld(small(behaviour))
    world.run()
    actions = world.crowd.annotators.counts  # type: ignore[union-attr]
    (_, committed, pending, _, _), = settled(world)
    assert pending == 0 and committed == actions["answered"] == actions["committed"]
    for host in world.hosts:
        desk = world.desk(host.id)
        assert desk is not None and desk.counts.get("bad_signature", 0) == 0


def test_a_partition_between_the_annotation_nodes_heals_to_one_set_of_labels() -> None:
    """Must-show 4's labels, with the simulated crowd and reputation: annotation node 6 and
    member 3 are cut away from the rest (annotation node 5 among them) while annotators work
    at both; after the heal every node holds the same records, labels and weights."""
    data = small(None).model_dump(mode="json")
    data["faults"] = [{"kind": "partition", "at": 40.0, "duration": 40.0, "groups": [[3, 6]]}]
    world = SimWorld(parse_scenario(data))
    seen: dict[str, int] = {}

    def look() -> None:  # mid-cut: the cut side holds records it cannot commit yet
        seen["6"] = world.desk(6).pending  # type: ignore[union-attr]
        seen["5"] = world.desk(5).committed  # type: ignore[union-attr]
        seen["3"] = world.desk(3).committed  # type: ignore[union-attr]

    world.call_at(75.0, look)
    world.run()
    assert seen["6"] > 0 and seen["3"] < seen["5"]
    (_, committed, pending, labels, standings), = settled(world)
    assert pending == 0 and committed == world.crowd.annotators.counts["answered"]  # type: ignore[union-attr]
    assert len(labels) == 36 and len(standings) == 8


def test_annotators_move_on_when_their_node_crashes() -> None:
    data = small(None).model_dump(mode="json")
    data["faults"] = [{"kind": "crash", "nodes": [5, 6], "at": 30.0, "duration": 60.0}]
    world = SimWorld(parse_scenario(data))
    world.run()
    actions = world.crowd.annotators.counts  # type: ignore[union-attr]
    assert actions["node_switches"] > 0
    (_, committed, pending, _, _), = settled(world)
    assert pending == 0 and committed == actions["answered"] == actions["committed"]


@pytest.fixture(scope="module")
def dropped() -> SimWorld:
    """The small run with a dropping annotation node, run once for the tests that read it."""
    world = SimWorld(small("drop"))
    world.run()
    return world


def test_a_crowd_run_is_a_pure_function_of_scenario_and_seed(dropped: SimWorld) -> None:
    again = SimWorld(small("drop"))
    again.run()
    frames = [(w.crowd.recorder.rounds_frame(), w.crowd.recorder.labels_frame(),  # type: ignore[union-attr]
               settled(w)) for w in (dropped, again)]
    assert frames[0][0].equals(frames[1][0]) and frames[0][1].equals(frames[1][1])
    assert frames[0][2] == frames[1][2]
    other = SimWorld(parse_scenario({**small("drop").model_dump(mode="json"), "seed": 8}))
    other.run()
    assert not other.crowd.recorder.labels_frame().equals(frames[0][1])  # type: ignore[union-attr]


def test_labels_outputs_score_the_final_labels_against_the_truth(dropped: SimWorld) -> None:
    world = dropped
    recorder = world.crowd.recorder  # type: ignore[union-attr]
    tasks = recorder.labels_frame()
    assert tasks.columns == ["task", "gold", "truth", "label", "correct", "confidence",
                             "answers", "method"]
    assert tasks.height == 36 and tasks["gold"].sum() == 6
    regular = tasks.filter(~pl.col("gold") & pl.col("label").is_not_null())
    accuracy = world.crowd.summary()["label_accuracy"]  # type: ignore[union-attr]
    assert accuracy == regular["correct"].mean()
    assert (regular["correct"] == (regular["label"] == regular["truth"])).all()
    series = recorder.rounds_frame()
    assert series["accuracy"][-1] == accuracy
    assert series.filter(pl.col("alpha_honest").is_not_null())["alpha_honest"][-1] > (
        series["alpha"][-1])  # colluders agree with each other, not with the rest


@pytest.mark.parametrize(("curation", "expected"), [
    ({"crowd": {"groups": [{"kind": "honset", "count": 3}]}},
     "curation.crowd.groups.0.kind: Input should be 'honest', 'random', 'constant', "
     "'colluder' or 'permuter' (got 'honset'); did you mean 'honest'?"),
    ({"crowd": {"groups": [{"kind": "honest", "share": 0.5}]}},
     "curation.crowd: groups give a share: say how many annotators in all (annotators: N)"),
    ({"crowd": {"annotators": 4, "groups": [{"kind": "honest", "count": 2, "share": 0.5}]}},
     "curation.crowd.groups.0: give exactly one of 'count' or 'share'"),
    ({"crowd": {"groups": [{"kind": "honest", "count": 2, "acuracy": [0.5, 0.9]}]}},
     "curation.crowd.groups.0.acuracy: unknown field; did you mean 'accuracy'?"),
    ({"crowd": {"groups": [{"kind": "honest", "count": 2, "per_class": [0.9, 0.8]}]}},
     "curation: crowd.groups.0.per_class: 2 accuracies for tasks of 3 answers"),
    ({"annotation_nodes": 1, "byzantine": [{"nodes": [2], "behaviour": "drop"}]},
     "curation.byzantine: nodes [2] are not annotation nodes (ids 4..4)"),
    ({"annotation_nodes": 1, "byzantine": [{"nodes": [4], "behaviour": "forgee"}]},
     "curation.byzantine.0.behaviour: Input should be 'drop', 'delay', 'forge' or "
     "'equivocate' (got 'forgee'); did you mean 'forge'?"),
    ({"reputation": {"decay": 0}},
     "curation.reputation.decay: Input should be greater than 0 (got 0)"),
    ({"reputation": {"suspend_on": ["too_slow"]}},
     "curation.reputation.suspend_on.0: Input should be 'too_fast', 'constant', "
     "'low_gold_accuracy' or 'equivocation' (got 'too_slow'); did you mean 'too_fast'?"),
])
def test_a_bad_crowd_section_is_refused_in_one_line(tmp_path: Path, curation: dict[str, Any],
                                                    expected: str) -> None:
    data = {"name": "x", "nodes": {"count": 5}, "workload": {"kind": "linear"},
            "training": {"rounds": 2}, "curation": curation}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    done = invoke("validate", path)
    assert done.exit_code == 2
    assert one_error_line(done.stderr) == f"error: {path}: {expected}"


def test_annotator_groups_set_each_kinds_skill_and_speed() -> None:
    spec = CrowdSpec(tasks=50, classes=3, seed=4)
    legacy = SimulatedCrowd(spec)
    grouped = SimulatedCrowd(spec, spec.groups())  # the spec's counts, as groups
    assert [(a.id, a.confusion.tolist(), a.seconds_per_label) for a in legacy.annotators] == [
        (a.id, a.confusion.tolist(), a.seconds_per_label) for a in grouped.annotators]
    crowd = SimulatedCrowd(spec, [
        AnnotatorGroup("honest", 2, per_class=(0.9, 0.6, 0.3), seconds=(30.0, 30.0)),
        AnnotatorGroup("colluder", 2)])
    first, _, colluder, other = crowd.annotators
    assert first.confusion.diagonal().tolist() == [0.9, 0.6, 0.3]
    assert first.seconds_per_label == 30.0 and colluder.seconds_per_label < 4.0
    labels = [crowd.answer(t, colluder).label for t in crowd.tasks]
    assert labels == [crowd.answer(t, other).label for t in crowd.tasks]  # they collude
    assert all(label != crowd.truth[t] for t, label in zip(crowd.tasks, labels, strict=True))
    assert crowd.answer("t0007", first) == crowd.answer("t0007", first)
    with pytest.raises(CrowdError, match="no task 'nope' in this crowd"):
        crowd.answer("nope", first)


@pytest.mark.parametrize(("fields", "message"), [
    ({"kind": "lazy"}, "AnnotatorGroup.kind must be one of honest, random, constant"),
    ({"count": -1}, "AnnotatorGroup.count must be an integer >= 0; got -1"),
    ({"accuracy": (0.9, 0.5)}, r"AnnotatorGroup.accuracy must be \(low, high\) with 0 <= low"),
    ({"seconds": (0.0, 3.0)}, r"AnnotatorGroup.seconds must be \(low, high\) with 0 < low"),
    ({"per_class": (1.5,)}, "AnnotatorGroup.per_class must be a tuple of accuracies"),
    ({"bias": 2}, r"AnnotatorGroup.bias must be in \[0, 1\]; got 2"),
])
def test_a_bad_annotator_group_is_refused_in_one_line(fields: dict[str, Any],
                                                     message: str) -> None:
    with pytest.raises(CrowdError, match=message):
        AnnotatorGroup(**{"kind": "honest", "count": 1, **fields})  # type: ignore[arg-type]


def test_an_unknown_or_bad_annotation_attack_is_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match="unknown annotation node behaviour 'steal'; known: "
                                         "drop, delay, forge, equivocate"):
        annotation_attack("steal")
    with pytest.raises(ValueError, match=r"delay: delay must be > 0 seconds \(got 0\)"):
        annotation_attack("delay", delay=0)
    attack = annotation_attack("drop", at=5.0, duration=10.0)
    assert [attack.on(t) for t in (4.9, 5.0, 14.9, 15.0)] == [False, True, True, False]
