"""A curation node's settings and its one HTTP server, without a running cluster: which nodes
curate, TLS off loopback (a self-signed certificate kept across restarts), one-line errors,
and the web app beside /status and /health on one port, taking no submission until the node
has started on its store."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
from curationkit import PASSWORD, annotator, crowd_records, curation_scenario
from fastapi.testclient import TestClient
from rich.console import Console

from phalanx.apps.cluster import _lay_out, cluster_up
from phalanx.apps.node import NodePlan, RealNode, plan_node
from phalanx.apps.node_settings import NodeFile, node_identity
from phalanx.apps.web.routes_auth import key_proof_message
from phalanx.scenario.schema import ScenarioError, load_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
SCENARIO = curation_scenario()  # members 0-3, annotation nodes 4 and 5


def plan(folder: Path, node: int, **settings: Any) -> NodePlan:
    scenario = settings.pop("scenario", SCENARIO)
    keys = {i: node_identity(folder / f"node-{i}").public_key for i in range(6)}
    roster = {i: (keys[i], ("127.0.0.1", 7000 + i)) for i in range(6)}
    members = {i: roster[i] for i in scenario.members}
    observers = {i: roster[i] for i in range(6) if i not in members}
    kind = settings.pop("node_type", "annotation" if node >= 4 else "full")
    return plan_node(NodeFile(node_id=node, node_type=kind, data_dir=folder / f"node-{node}",
                              web_port=0, **settings),
                     scenario, (members, observers), "tcp", False, False, 0.5)


def test_full_and_annotation_nodes_curate(
        tmp_path: Path) -> None:
    assert plan(tmp_path, 0).curation is not None
    annotation = plan(tmp_path, 4)
    assert annotation.curation is not None and set(annotation.curation.tasks.tasks) == set(
        SCENARIO.curation.task_set(SCENARIO.seed).tasks)  # type: ignore[union-attr]
    assert annotation.tls is None  # loopback: plain http (a secure context already)


def test_off_loopback_a_node_makes_a_self_signed_certificate_once(tmp_path: Path) -> None:
    first = plan(tmp_path, 4, web_host="0.0.0.0")
    again = plan(tmp_path, 4, web_host="0.0.0.0")
    assert first.tls is not None and again.tls is not None
    assert first.tls.created and not again.tls.created
    assert first.tls.fingerprint == again.tls.fingerprint
    assert first.tls.cert.parent == tmp_path / "node-4"
    assert (first.tls.key.stat().st_mode & 0o777) == 0o600


@pytest.mark.parametrize(("node", "settings", "message"), [
    (1, {"node_type": "training"},
     "node_type training: scenario 'curation-real' curates, and every node of it checks"),
    (5, {"node_type": "lightweight"},
     "node_type lightweight: scenario 'curation-real' curates"),
    (1, {"node_type": "full", "scenario": load_scenario(SCENARIOS / "quickstart.yaml"),
         "enable_curation": True},
     "enable_curation: scenario 'quickstart' has no curation: section"),
    (4, {"tls_cert": Path("/nowhere/cert.pem")}, "--tls-cert and --tls-key go together"),
    (4, {"tls_cert": Path("/nowhere/c.pem"), "tls_key": Path("/nowhere/k.pem")},
     "/nowhere/c.pem: no such file"),
    (4, {"scenario": load_scenario(SCENARIOS / "quickstart.yaml"), "node_type": "annotation"},
     "node_type annotation: scenario 'quickstart' has no curation: section"),
])
def test_settings_a_curation_node_cannot_run_with_get_one_line(
        tmp_path: Path, node: int, settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError) as refused:
        plan(tmp_path, node, **settings)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_one_server_serves_the_web_app_and_the_status_and_waits_for_the_node(
        tmp_path: Path) -> None:
    asyncio.run(_before_start(tmp_path))


async def _before_start(tmp_path: Path) -> None:
    """A node built (on its event loop) but not started: no peers, no store read yet."""
    node = RealNode(plan(tmp_path, 4), Console(file=io.StringIO()))
    app = node._curation_server().config.app  # the guarded app the node's server serves
    http = TestClient(app)
    status = http.get("/status").json()
    assert status["node_type"] == "annotation" and not status["member"]
    assert status["curation"] == {"round": -1, "root": status["curation"]["root"],
                                  "committed": 0, "pending": 0, "tasks": 24, "refusals": {},
                                  "web": node.web.url if node.web else None}
    assert http.get("/health").status_code in (200, 503)
    who = annotator(1)
    signup = http.post("/api/auth/signup", json={
        "username": "ada", "password": PASSWORD, "public_key": who.public_key.hex(),
        "proof": who.sign(key_proof_message("ada")).hex()})
    assert signup.status_code == 201, signup.text
    record = crowd_records(SCENARIO, [1], per=1)[1][0]
    early = http.post("/api/submit", headers={"X-CSRF-Token": signup.json()["csrf"]},
                      json={"record": base64.b64encode(record).decode()})
    assert early.status_code == 503 and "starting" in early.json()["detail"]
    assert node.curation is not None and node.curation.desk.pending == 0
    node.disk.close()


def test_cluster_up_lays_out_annotation_nodes_and_refuses_lightweight_followers(
        tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="lightweight followers cannot follow a curation"):
        cluster_up(SCENARIO, tmp_path / "c", lightweight=1)
    assert not (tmp_path / "c").exists()  # refused before anything was laid out
    (tmp_path / "d").mkdir()  # what cluster up writes on a first start, without starting it
    layout = _lay_out(SCENARIO, tmp_path / "d", [], None, 0, {})
    kinds = [json.loads((tmp_path / "d" / f"node-{n['id']}" / "node.json").read_text())
             ["node_type"] for n in layout["nodes"]]
    assert kinds == ["full"] * 4 + ["annotation"] * 2
