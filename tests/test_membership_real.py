"""Reconfiguration between real node processes: an observer joins and a member leaves a running
TCP cluster through `phalanx cluster join/leave`; every node ends on one model and one
membership, and the audit verifies each round's certificate against that round's members."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from clusterkit import SCENARIOS, statuses, until
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from phalanx.apps.audit import audit_run
from phalanx.apps.cli import app
from phalanx.apps.cluster import cluster_down, cluster_up
from phalanx.apps.status import make_status_app
from phalanx.scenario.schema import parse_scenario


def scenario_with_observers() -> dict:
    """quickstart with two observers (nodes 4 and 5) and short wall-clock timeouts."""
    data = yaml.safe_load((SCENARIOS / "quickstart.yaml").read_text())
    data.update(name="membership-real", expect={})
    data["nodes"] = {"count": 6, "observers": [4, 5]}
    data["training"]["rounds"] = 150
    data["real"] = {"round_timeout": 0.3, "view_timeout": 1.5}
    return data


def members_everywhere(folder: Path, want: list[int]) -> bool:
    s = statuses(folder)
    return len(s) == 6 and all(v["members"] == want for v in s.values())


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, " ".join(result.output.split())


def test_a_running_cluster_admits_an_observer_and_lets_a_member_go(tmp_path: Path) -> None:
    folder = tmp_path / "cluster"
    scenario = parse_scenario(scenario_with_observers())
    nodes = cluster_up(scenario, folder)
    where = ["--dir", str(folder)]
    try:
        until(lambda: all(v["round"] >= 10 for v in statuses(folder).values())
              and len(statuses(folder)) == 6, 120, "10 rounds at every node")
        s = statuses(folder)
        assert s[4]["node_type"] == "training" and not s[4]["member"]
        # what cannot be asked is refused with the reason, and changes nothing
        assert cli("cluster", "join", "--node", "0", *where) == (
            2, "error: node 0: cannot join: already a member")
        assert cli("cluster", "leave", "--node", "5", *where) == (
            2, "error: node 5: cannot leave: not a member")
        assert cli("cluster", "join", "--node", "9", *where)[1].endswith("no node 9 in this "
                                                                          "cluster")
        base = f"http://127.0.0.1:{nodes[4].web_port}/membership"
        for body in (b'{"change": "dance"}', b"not json", b'{"change": "join", "x": 1}'):
            request = urllib.request.Request(base, data=body,
                                             headers={"Content-Type": "application/json"})
            with pytest.raises(urllib.error.HTTPError) as bad:
                urllib.request.urlopen(request)
            assert bad.value.code == 422 and json.loads(bad.value.read())["detail"]

        code, said = cli("cluster", "join", "--node", "4", *where)
        assert code == 0 and "node 4 asked the members to let it join (epoch 0)" in said
        until(lambda: members_everywhere(folder, [0, 1, 2, 3, 4]), 60, "node 4 admitted")
        assert cli("cluster", "join", "--node", "4", *where)[0] == 2  # a member already
        code, said = cli("cluster", "leave", "--node", "1", *where)
        assert code == 0, said
        until(lambda: members_everywhere(folder, [0, 2, 3, 4]), 60, "node 1 gone")
        code, table = cli("cluster", "status", *where)
        assert code == 0 and table.count("(follows)") == 2  # nodes 1 and 5
        until(lambda: all(v["finished"] for v in statuses(folder).values()), 180, "the end")
        end = statuses(folder)
    finally:
        assert cluster_down(folder) == []
    assert len({v["model_hash"] for v in end.values()}) == 1
    assert [v["member"] for _, v in sorted(end.items())] == [True, False, True, True, True,
                                                              False]
    joined = {v["epoch"] for v in end.values()}
    assert joined == {2}
    result = json.loads((nodes[0].folder / "result.json").read_text())
    (_, first), (start_join, five), (start_leave, four) = result["epochs"]
    assert (first, five, four) == ([0, 1, 2, 3], [0, 1, 2, 3, 4], [0, 2, 3, 4])
    # node 4 contributed from the round it was admitted; node 1's log stops voting at its last
    commits = {c["round"]: c["contributors"] for c in result["commits"]}
    assert max(commits[r] for r in range(start_join, start_leave)) == 5
    assert max(commits[r] for r in range(start_leave, 150)) == 4
    audits, split = audit_run(folder)
    # a node that fell behind (an observer on a loaded machine) may have caught up from a
    # checkpoint: its log is verified from there
    assert split == [] and all(a.problem is None and a.since + a.rounds == 150
                               for a in audits), audits


def test_membership_changes_come_from_the_nodes_own_machine_only() -> None:
    asked: list[str] = []

    def change(op: str) -> str | None:
        asked.append(op)
        return None if op == "join" else "not a member"

    status = {"epoch": 3}
    local = TestClient(make_status_app(lambda: status, change), client=("127.0.0.1", 4000))
    remote = TestClient(make_status_app(lambda: status, change), client=("10.0.0.9", 4000))
    assert local.post("/membership", json={"change": "join"}).json() == {
        "requested": "join", "epoch": 3}
    reply = local.post("/membership", json={"change": "leave"})
    assert reply.status_code == 409 and reply.json()["detail"] == "cannot leave: not a member"
    reply = remote.post("/membership", json={"change": "join"})
    assert reply.status_code == 403 and "own machine" in reply.json()["detail"]
    assert local.post("/membership", json={"change": "stay"}).status_code == 422
    assert asked == ["join", "leave"]  # the refused and malformed ones never reached the node
    no_changes = TestClient(make_status_app(lambda: status), client=("127.0.0.1", 4000))
    assert no_changes.post("/membership", json={"change": "join"}).status_code == 404


def test_a_new_machine_is_added_to_a_running_cluster_and_joins(tmp_path: Path) -> None:
    """`cluster add` lists a fresh key as an observer; the running members admit it on SIGHUP
    (no restart), it follows, and `cluster join` makes it a member."""
    data = scenario_with_observers()
    data["nodes"] = {"count": 4}
    data["training"]["rounds"] = 1500
    folder = tmp_path / "cluster"
    cluster_up(parse_scenario(data), folder)
    where = ["--dir", str(folder)]
    try:
        until(lambda: len(statuses(folder)) == 4
              and all(v["round"] >= 10 for v in statuses(folder).values()), 120, "10 rounds")
        code, said = cli("cluster", "add", *where)
        assert code == 0 and said.startswith("node 4: pid"), said
        until(lambda: 4 in statuses(folder) and statuses(folder)[4]["round"] > 10, 120,
              "node 4 following")
        assert not statuses(folder)[4]["member"]
        logs = [(folder / f"node-{i}" / "node.log").read_text() for i in range(4)]
        assert all("admitted observers [4]" in log for log in logs), logs
        code, said = cli("cluster", "join", "--node", "4", *where)
        assert code == 0, said
        until(lambda: len(statuses(folder)) == 5 and all(
            v["members"] == [0, 1, 2, 3, 4] for v in statuses(folder).values()), 60, "admitted")
        until(lambda: all(v["finished"] for v in statuses(folder).values()), 240, "the end")
        end = statuses(folder)
    finally:
        assert cluster_down(folder) == []
    assert len({v["model_hash"] for v in end.values()}) == 1 and end[4]["member"]
    result = json.loads((folder / "node-4" / "result.json").read_text())
    assert any(c["contributors"] == 5 for c in result["commits"])
    audits, split = audit_run(folder)
    assert split == [] and all(a.problem is None for a in audits), audits
