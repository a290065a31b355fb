"""Curation in the simulator: records submitted at annotation nodes are committed by the
rounds, and every node ends with the same records, labels and snapshot root — across a
partition that cuts an annotation node and a member away, and across a crash of a node that
held acknowledged records nobody else had.

The driver is a few deterministic annotators (`AnnotatorClient`s with derived keys), each
signing answers at one node at scheduled simulated times through `SimWorld.submit`; a real
network test can mirror it with the same scenario and schedule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from phalanx.apps.audit import audit_run
from phalanx.apps.invariants import check_run
from phalanx.apps.node_log import NodeLog
from phalanx.apps.runner import run_scenario
from phalanx.engine.curation.client import AnnotatorClient
from phalanx.engine.curation.synthetic import synthetic_tasks
from phalanx.net.crypto import Identity
from phalanx.scenario.schema import Scenario, parse_scenario
from phalanx.sim.world import SimWorld

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
MEMBERS, ANNOTATION = (0, 1, 2, 3), (4, 5)
TASKS = 30


def scenario(faults: list[dict[str, Any]] | None = None, rounds: int = 60) -> Scenario:
    """The quickstart's network and model with 4 members and 2 annotation nodes (ids 4, 5)."""
    data = yaml.safe_load((SCENARIOS / "quickstart.yaml").read_text())
    data["name"] = "curation-sim"
    data["nodes"]["count"] = 6
    data["training"]["rounds"] = rounds
    data["expect"] = {"honest_hashes_equal": True}
    data["curation"] = {"annotation_nodes": 2, "redundancy": 3, "gold_rate": 0.0,
                        "tasks": {"kind": "synthetic", "count": TASKS, "gold": 3}}
    data["faults"] = faults or []
    return parse_scenario(data)


class Annotators:
    """Annotator i answers the truth (a plain, honest crowd), at the nodes and times given."""

    def __init__(self, world: SimWorld, count: int) -> None:
        self.world = world
        self.clients = [AnnotatorClient(Identity.derive(99, i)) for i in range(count)]
        self.truth = synthetic_tasks(TASKS, 3, "single_choice", 3, world.scenario.seed).truth
        self.acknowledged: list[bytes] = []
        self.refused: list[str] = []

    def at(self, time: float, annotator: int, node: int, tasks: int = 2) -> None:
        self.world.call_at(time, self._work, annotator, node, tasks)

    def _work(self, annotator: int, node: int, tasks: int) -> None:
        desk = self.world.desk(node)
        assert desk is not None, f"node {node} is down at {self.world.now}"
        client = self.clients[annotator]
        if client.seq == 0:  # a client keeps its own chain head; a fresh one asks the node
            client.resume(*desk.head(client.public_key))
        for task in desk.next_tasks(client.public_key, tasks):
            record = client.sign(task, self.truth[task.id]).encode()
            answer = self.world.submit(node, record)
            assert answer is not None
            if answer.ok:
                self.acknowledged.append(answer.result)
            else:
                self.refused.append(answer.reason)


def final_state(world: SimWorld) -> set[tuple[bytes, int, int, tuple[Any, ...]]]:
    """(root, committed, pending, labels) of every node: one element when all agree."""
    states = set()
    for host in world.hosts:
        desk = world.desk(host.id)
        assert desk is not None
        labels = tuple((r.task_id, str(r.value), r.confidence) for r in desk.labels())
        states.add((desk.root, desk.committed, desk.pending, labels))
    return states


def committed_everywhere(world: SimWorld, digests: list[bytes]) -> bool:
    return all(d in world.desk(h.id).committed_log for h in world.hosts  # type: ignore[union-attr]
               for d in digests)


def test_records_from_both_annotation_nodes_commit_everywhere() -> None:
    world = SimWorld(scenario(rounds=40))
    crowd = Annotators(world, 6)
    for i in range(6):
        crowd.at(0.2 + 0.05 * i, i, ANNOTATION[i % 2])
        crowd.at(0.8 + 0.05 * i, i, MEMBERS[i % 4])  # a full node takes them too
    world.run()
    assert crowd.refused == [] and len(crowd.acknowledged) == 24
    assert committed_everywhere(world, crowd.acknowledged)
    (_, committed, pending, labels), = final_state(world)
    assert (committed, pending) == (24, 0) and len(labels) > 0
    for host in world.hosts:  # annotation nodes follow the chain: they commit every round
        assert host.node is not None and host.node.round == 40 and host.node.finished
        assert host.node.rejections == {}


def test_a_partition_with_submissions_on_both_sides_heals_to_one_snapshot() -> None:
    """Must-show 4, simulated: node 5 (annotation) and member 3 are cut away for a second;
    annotators keep submitting on both sides; after the heal every node holds the same
    records, the same labels and the same root."""
    cut = {"kind": "partition", "at": 0.6, "duration": 1.0, "groups": [[3, 5]]}
    world = SimWorld(scenario([cut]))
    crowd = Annotators(world, 6)
    for i in range(6):
        crowd.at(0.3 + 0.02 * i, i, ANNOTATION[i % 2])  # before the cut
        crowd.at(0.9 + 0.02 * i, i, ANNOTATION[i % 2])  # during it: both sides
        crowd.at(2.0 + 0.02 * i, i, ANNOTATION[i % 2])  # after the heal
    during: dict[str, int] = {}

    def look() -> None:  # mid-cut: the cut side holds its records pending, uncommitted
        during["5"] = world.desk(5).pending  # type: ignore[union-attr]
        during["majority"] = world.desk(0).committed  # type: ignore[union-attr]
        during["minority"] = world.desk(3).committed  # type: ignore[union-attr]

    world.call_at(1.5, look)
    world.run()
    assert crowd.refused == [] and len(set(crowd.acknowledged)) == 36
    assert during["5"] > 0 and during["minority"] < during["majority"]
    assert committed_everywhere(world, crowd.acknowledged)
    (_, committed, pending, labels), = final_state(world)
    assert committed == 36 and pending == 0 and len(labels) >= 12  # k = 3: 36 answers
    assert all(world.desk(h.id).counts == {} for h in world.hosts)  # type: ignore[union-attr]


def test_acknowledged_records_survive_a_crash_of_the_only_node_holding_them() -> None:
    """Node 4 is isolated, takes records (nobody else hears of them), crashes and restarts
    with its disk; once it is reachable again the records it acknowledged commit."""
    faults = [{"kind": "isolate", "at": 0.5, "duration": 1.2, "nodes": [4]},
              {"kind": "crash", "at": 0.9, "duration": 0.3, "nodes": [4], "keep_disk": True}]
    world = SimWorld(scenario(faults))
    crowd = Annotators(world, 3)
    for i in range(3):
        crowd.at(0.6 + 0.05 * i, i, 4, tasks=3)
    world.run()
    assert len(crowd.acknowledged) == 9 and world.hosts[4].up
    assert committed_everywhere(world, crowd.acknowledged)
    assert len(final_state(world)) == 1


def test_a_run_reports_each_nodes_curation_root_and_checks_they_agree(tmp_path: Path) -> None:
    result = run_scenario(scenario(rounds=12), out=tmp_path / "run")
    found = result.summary["curation"]
    assert sorted(found["nodes"]) == ["0", "1", "2", "3", "4", "5"]
    assert {n["root"] for n in found["nodes"].values()} == {found["nodes"]["0"]["root"]}
    assert found["root_splits"] == [] and check_run(result) == []
    split = {**result.summary, "curation": {
        "root_splits": [{"round": 3, "roots": {"aa" * 32: [0, 1], "bb" * 32: [2]}}],
        "rounds_split": 1}}
    result.summary = split
    assert [v.detail for v in check_run(result)] == [
        "round 3: honest nodes hold 2 curation roots: aaaaaaaa (nodes 0, 1); "
        "bbbbbbbb (nodes 2)"]


def test_phalanx_audit_replays_the_committed_batches(tmp_path: Path) -> None:
    """The logs of a run whose rounds carried records re-verify under `phalanx audit`: it
    checks each batch as a voter did (a node without the curation service could not: it
    refuses a contribution it does not run) and ends every node on the same round."""
    world = SimWorld(scenario(rounds=16))
    crowd = Annotators(world, 3)
    for i in range(3):
        crowd.at(0.2 + 0.05 * i, i, ANNOTATION[i % 2])
    world.run()
    assert committed_everywhere(world, crowd.acknowledged)
    (tmp_path / "nodes").mkdir()
    (tmp_path / "scenario.resolved.yaml").write_text(world.scenario.resolved_yaml())
    for host in world.hosts:
        log = NodeLog(tmp_path / "nodes" / f"{host.id}.sqlite")
        log.write_all({k: v for k, v in host.disk.items() if not k.startswith("curation/")})
        log.close()
    audits, split = audit_run(tmp_path)
    assert split == [] and [a.problem for a in audits] == [None] * 6
    assert {a.rounds for a in audits} == {16}


def test_a_member_down_longer_than_the_checkpoint_gap_catches_up_by_records() -> None:
    """Node 2 loses its disk and is down for more rounds than a checkpoint would be fetched
    after; curation nodes catch up by the round records (which carry the batches) instead,
    so it ends with the records committed while it was away."""
    crash = {"kind": "crash", "at": 0.4, "duration": 3.5, "nodes": [2], "keep_disk": False}
    world = SimWorld(scenario([crash], rounds=80))
    crowd = Annotators(world, 4)
    for i in range(4):
        crowd.at(0.2 + 0.02 * i, i, ANNOTATION[i % 2])
        crowd.at(1.5 + 0.02 * i, i, ANNOTATION[i % 2])
    world.run()
    assert world.metrics.rejections == {}
    assert committed_everywhere(world, crowd.acknowledged) and len(crowd.acknowledged) == 16
    assert len(final_state(world)) == 1 and world.hosts[2].node.round == 80  # type: ignore[union-attr]


def test_a_curation_run_is_a_pure_function_of_scenario_and_seed() -> None:
    def run() -> list[tuple[int, int, bytes, int]]:
        world = SimWorld(scenario([{"kind": "partition", "at": 0.5, "duration": 0.5,
                                    "groups": [[3, 5]]}], rounds=30))
        crowd = Annotators(world, 4)
        for i in range(4):
            crowd.at(0.2 + 0.03 * i, i, ANNOTATION[i % 2], tasks=3)
        world.run()
        return [(m.node, m.round, m.root, m.records) for m in world.metrics.curation]

    first = run()
    assert first == run() and first[-1][3] == 12
