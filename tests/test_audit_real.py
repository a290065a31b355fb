"""`phalanx audit` on real runs: a `--real` run keeps each node's SQLite log and its own log
under the output folder and the audit verifies them with the nodes' keys; an MPI run's folder
(tests/test_cluster.py launches one) names its ranks' keys and stores; a simulated run into the
same folder afterwards is audited with the scenario's keys again."""

from __future__ import annotations

import json
from pathlib import Path

from clusterkit import SCENARIOS
from typer.testing import CliRunner

from phalanx.apps.audit import audit_run
from phalanx.apps.cli import app
from phalanx.apps.mpi_run import MPI_FILE, run_folder
from phalanx.scenario.schema import ScenarioError


def test_a_real_run_keeps_its_nodes_logs_and_the_audit_verifies_them(tmp_path: Path) -> None:
    out = tmp_path / "run"
    (out / "nodes").mkdir(parents=True)
    (out / "nodes" / "7.sqlite").write_bytes(b"left by an earlier run")  # replaced, not mixed
    done = CliRunner().invoke(app, ["run", str(SCENARIOS / "quickstart.yaml"), "--real",
                                    "--out", str(out), "-q"])
    assert done.exit_code == 0, done.output
    assert "nodes/<id>.sqlite and .log, members.json" in done.output
    assert sorted(p.name for p in (out / "nodes").iterdir()) == [
        f"{i}.{ext}" for i in range(4) for ext in ("log", "sqlite")]
    for i in range(4):
        log = (out / "nodes" / f"{i}.log").read_text()
        assert f"INFO    node {i} start: full, members [0, 1, 2, 3]" in log
        assert f"node {i} finished: all 60 rounds committed" in log
        assert f"node {i} stop: stopped by SIGTERM: at round 60" in log
    audit = CliRunner().invoke(app, ["audit", str(out)])
    assert audit.exit_code == 0, audit.output
    assert "4 node logs, 240 rounds verified, 0 logs with a bad record" in audit.output
    # the same folder, overwritten by a simulated run: audited with the scenario's own keys
    sim = CliRunner().invoke(app, ["run", str(SCENARIOS / "quickstart.yaml"), "--out",
                                   str(out), "-q"])
    assert sim.exit_code == 0, sim.output
    audits, split = audit_run(out)
    assert [(a.rounds, a.problem) for a in audits] == [(60, None)] * 4 and split == []


def test_a_real_run_folder_without_its_keys_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "scenario.resolved.yaml").write_text(
        (SCENARIOS / "quickstart.yaml").read_text())
    (tmp_path / "summary.json").write_text(json.dumps({"mode": "real-tcp"}))
    result = CliRunner().invoke(app, ["audit", str(tmp_path)])
    assert result.exit_code == 2 and "needs its members.json" in result.output, result.output


def test_an_mpi_folder_with_a_broken_rank_list_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "scenario.yaml").write_text((SCENARIOS / "quickstart.yaml").read_text())
    for text in ("not json", json.dumps({"ranks": [{"id": 0}]}),
                 json.dumps({"ranks": [{"id": 0, "public_key": "ab", "data_dir": "n"}]})):
        (tmp_path / MPI_FILE).write_text(text)
        result = CliRunner().invoke(app, ["audit", str(tmp_path)])
        assert result.exit_code == 2 and MPI_FILE in result.output, result.output
        assert "Traceback" not in result.output


def test_over_mpi_every_rank_needs_its_own_folder() -> None:
    assert run_folder("runs/mpi/node-{node_id}") == Path("runs/mpi")
    assert run_folder("/data/{node_id}/phalanx") == Path("/data")
    assert run_folder("rank{node_id}") == Path(".")
    try:
        run_folder("runs/mpi")
    except ScenarioError as err:
        assert "put {node_id} in it" in str(err)
    else:
        raise AssertionError("a shared data_dir over MPI was accepted")
