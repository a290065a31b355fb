"""What the real curation tests share: a scenario with annotation nodes, a crowd of annotators
whose signed records are fixed bytes (deterministic keys, tasks and answers: the simulator
and the real nodes get the very same records), an in-process cluster of real nodes (members
and annotation nodes, each annotation node serving the web app), and a partition of it."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from realkit import free_ports
from rich.console import Console

from phalanx.apps.node import RealNode, plan_node
from phalanx.apps.node_settings import NodeFile, node_identity
from phalanx.engine.curation.client import AnnotatorClient
from phalanx.engine.curation.tasks import TaskSet
from phalanx.net.crypto import Identity
from phalanx.scenario.build import curation_setup
from phalanx.scenario.schema import Scenario, parse_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
PASSWORD = "correct horse battery"


def curation_data(rounds: int = 2000, members: int = 4, annotation: int = 2,
                  tasks: int = 24) -> dict[str, Any]:
    """quickstart's members plus `annotation` annotation nodes (the last ids), a synthetic
    task set, and short wall-clock timeouts."""
    data = yaml.safe_load((SCENARIOS / "quickstart.yaml").read_text())
    data.update(name="curation-real", expect={})
    data["nodes"] = {"count": members + annotation}
    data["training"]["rounds"] = rounds
    data["curation"] = {"annotation_nodes": annotation,
                        "tasks": {"kind": "synthetic", "count": tasks, "gold": 2},
                        "redundancy": 3}
    data["real"] = {"round_timeout": 0.3, "view_timeout": 1.5, "patience_floor": 0.05}
    return data


def curation_scenario(**kw: Any) -> Scenario:
    return parse_scenario(curation_data(**kw))


def task_list(scenario: Scenario) -> list[Any]:
    setup = curation_setup(scenario)
    assert setup is not None
    tasks: TaskSet = setup.tasks
    return sorted(tasks.tasks.values(), key=lambda t: t.id)


def annotator(n: int) -> Identity:
    return Identity.from_seed(n.to_bytes(4, "big") * 8)


def crowd_records(scenario: Scenario, annotators: Iterable[int], per: int,
                  start: int = 0) -> dict[int, list[bytes]]:
    """Each annotator's first `per` records (a chain), over tasks start + a, start + a + 1,
    ...: every annotator answers a different run of tasks, overlapping the next one's, with
    option (task index + annotator) % 3, so the tasks end with 1-3 answers that disagree."""
    tasks = task_list(scenario)
    out: dict[int, list[bytes]] = {}
    for a in annotators:
        signer = AnnotatorClient(annotator(a))
        chain = []
        for i in range(per):
            task = tasks[(start + a + i) % len(tasks)]
            record = signer.sign(task, task.answer_from(task.options[(i + a) % 3]),
                                 client_time_ms=1000 * (i + 1))
            chain.append(record.encode())
        out[a] = chain
    return out


def curation_cluster(folder: Path, scenario: Scenario, web: Iterable[int] = (),
                     settings: dict[int, dict[str, Any]] | None = None) -> list[RealNode]:
    """Every node of `scenario` in this process: members (full nodes) and the annotation
    nodes; the nodes in `web` serve the web app (and /status) on a port of their own;
    `settings`: more node.json keys for some nodes."""
    count = scenario.nodes.count
    p2p, ports = free_ports(count), free_ports(count)
    keys = {i: node_identity(folder / f"node-{i}") for i in range(count)}
    roster = {i: (keys[i].public_key, ("127.0.0.1", p2p[i])) for i in range(count)}
    members = {i: roster[i] for i in scenario.members}
    observers = {i: roster[i] for i in range(count) if i not in members}
    serving = set(web)
    return [node_at(folder, scenario, i, (members, observers), p2p[i], ports[i],
                    serve=i in serving, **(settings or {}).get(i, {})) for i in range(count)]


def node_at(folder: Path, scenario: Scenario, i: int, roster: Any, p2p: int, web: int,
            serve: bool, **more: Any) -> RealNode:
    """Node `i` of `scenario` in this process: an annotation node if the scenario says so,
    else a full node; `serve`: with the web app on `web`."""
    kind = "annotation" if i in scenario.annotation_nodes else "full"
    settings = NodeFile(node_id=i, node_type=kind, p2p_port=p2p, data_dir=folder / f"node-{i}",
                        web_port=web, enable_web_interface=serve, **more)
    plan = plan_node(settings, scenario, roster, "tcp", False, False, 0.5)
    return RealNode(plan, Console(file=io.StringIO()))


class Partition:
    """Frames between the two sides are dropped at the sender, both ways (the simulator's
    partitions drop messages likewise); links and heartbeats stay up."""

    def __init__(self, nodes: Sequence[RealNode], side: set[int]) -> None:
        self.side = side
        self.active = False
        self.dropped = 0
        for node in nodes:
            self._wrap(node)

    def _wrap(self, node: RealNode) -> None:
        transport, me = node.transport, node.node.id
        send = transport.send

        def cut_send(peer: int, frame: bytes) -> None:
            if self.active and (peer in self.side) != (me in self.side):
                self.dropped += 1
                return
            send(peer, frame)

        transport.send = cut_send


def curation_of(node: RealNode) -> Any:
    assert node.curation is not None
    return node.curation.desk
