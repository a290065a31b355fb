"""Real node processes on loopback (`phalanx cluster`, `phalanx node --real`): the status
endpoint, the same model as the simulation, and a `kill -9` mid-run that loses nothing."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import polars as pl
import pytest
import yaml
from clusterkit import SCENARIOS, Terminal, all_finished, statuses, until
from typer.testing import CliRunner

import phalanx
from phalanx.apps.cli import app
from phalanx.apps.cluster import cluster_down, cluster_up, read_cluster
from phalanx.apps.node_log import NodeLog
from phalanx.scenario.schema import load_scenario


def test_cluster_runs_the_simulated_model_and_reports_status(tmp_path: Path) -> None:
    folder = tmp_path / "cluster"
    scenario = load_scenario(SCENARIOS / "quickstart.yaml")
    nodes = cluster_up(scenario, folder, lightweight=1)  # node 4 follows without a seat
    try:
        until(lambda: all_finished(folder, 5), 120, "5 finished nodes")
        status = statuses(folder)
        follower = status.pop(4)
        one = status[0]
        assert one["round"] == 60 and one["health"]["status"] == "ok"
        assert one["peers_up"] == 3 and {p["id"] for p in one["peers"]} == {1, 2, 3}
        assert set(one["reputation"]) == {"1", "2", "3"} and one["excluded"] == []
        assert one["training"]["rounds_committed"] == 60
        with urllib.request.urlopen(f"http://127.0.0.1:{nodes[1].web_port}/health") as r:
            assert r.status == 200 and json.loads(r.read())["status"] == "ok"
        base = f"http://127.0.0.1:{nodes[1].web_port}"
        for request, code in ((urllib.request.Request(f"{base}/nope"), 404),
                              (urllib.request.Request(f"{base}/status", data=b"x"), 405)):
            with pytest.raises(urllib.error.HTTPError) as bad:
                urllib.request.urlopen(request)
            assert bad.value.code == code and json.loads(bad.value.read())["detail"]
        import socket
        with socket.create_connection(("127.0.0.1", nodes[1].web_port), timeout=5) as raw:
            raw.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            assert raw.recv(1024).startswith(b"HTTP/1.1 400")
        table = CliRunner().invoke(app, ["cluster", "status", "--dir", str(folder)])
        assert table.exit_code == 0 and "running" in table.output, table.output
        real_hashes = {i: s["model_hash"] for i, s in status.items()}
    finally:
        assert cluster_down(folder) == []  # every node stopped on SIGTERM, none killed
    sim = phalanx.run(SCENARIOS / "quickstart.yaml")
    assert set(real_hashes.values()) == set(sim.final_hashes().values())
    # the lightweight node holds the same model, having verified every round's records
    assert follower["node_type"] == "lightweight" and follower["round"] == 60
    assert follower["model_hash"] == one["model_hash"] and follower["rejections"] == {}
    assert all("not_member" not in s["rejections"] for s in status.values())
    for node in nodes[:4]:  # graceful shutdown flushed the results and kept the log readable
        result = json.loads((node.folder / "result.json").read_text())
        assert result["finished"] and len(result["commits"]) == 60
        assert len(NodeLog(node.folder / "node.sqlite").records()) == 60
        assert oct((node.folder / "node.key").stat().st_mode)[-3:] == "600"


def crash_scenario(tmp_path: Path) -> Path:
    """quickstart with more rounds and short wall-clock timeouts, so a dead peer costs a
    fraction of a second per round rather than the default 5 s."""
    data = yaml.safe_load((SCENARIOS / "quickstart.yaml").read_text())
    data["name"] = "crash-real"
    data["training"]["rounds"] = 150
    data["real"] = {"round_timeout": 0.3, "view_timeout": 1.5}
    data["expect"] = {}
    path = tmp_path / "crash.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_kill_9_mid_run_then_restart_loses_no_committed_round(tmp_path: Path) -> None:
    folder = tmp_path / "cluster"
    scenario = load_scenario(crash_scenario(tmp_path))
    nodes = cluster_up(scenario, folder)
    try:
        until(lambda: statuses(folder).get(3, {}).get("round", 0) >= 15, 120, "round 15")
        os.kill(nodes[3].pid, signal.SIGKILL)  # mid-round: no chance to flush anything
        killed_at = max(s["round"] for s in statuses(folder).values())
        # the other three keep committing without it
        until(lambda: min(s["round"] for i, s in statuses(folder).items() if i != 3)
              >= killed_at + 10, 120, "10 more rounds without node 3")
        assert 3 not in statuses(folder)
        restarted = cluster_up(scenario, folder)  # brings back only the missing node
        assert [n.pid for n in restarted[:3]] == [n.pid for n in nodes[:3]]
        assert restarted[3].pid != nodes[3].pid
        until(lambda: all_finished(folder, 4), 180, "4 finished nodes after the restart")
        final = {i: s["model_hash"] for i, s in statuses(folder).items()}
    finally:
        cluster_down(folder)
    assert len(set(final.values())) == 1, final
    # every survivor's SQLite log holds all 150 rounds, with the same agreed set and model
    # after each; the restarted node kept every round it had committed before the kill and
    # holds every round from the one it resumed at (by replaying records, or from a checkpoint
    # when the others, which do not wait for a suspected member, ran more than
    # `checkpoint_gap` rounds ahead while it restarted): no committed round lost, none forked
    logs = {n.id: NodeLog(n.folder / "node.sqlite").db.execute(
        "SELECT round, set_digest, model_hash FROM rounds ORDER BY round").fetchall()
        for n in nodes}
    assert [row[0] for row in logs[0]] == list(range(150))
    assert logs[0] == logs[1] == logs[2]
    held = [row[0] for row in logs[3]]
    gaps = [(a, b) for a, b in itertools.pairwise(held) if b != a + 1]
    assert held[0] == 0 and held[-1] == 149 and len(gaps) <= 1, gaps
    assert not gaps or gaps[0][0] >= 14  # it had committed 15 rounds before the kill
    assert all(row == logs[0][row[0]] for row in logs[3])
    results = [json.loads((n.folder / "result.json").read_text()) for n in nodes]
    hashes = [{c["round"]: c["model_hash"] for c in r["commits"]} for r in results]
    for h in hashes[1:3]:
        assert h == hashes[0]
    # the restarted node committed the rounds it missed through state sync
    assert any(c["via_sync"] for c in results[3]["commits"])
    # and `phalanx audit` re-verifies all four logs (signatures, certificates, model hashes)
    audit = CliRunner().invoke(app, ["audit", str(folder)])
    assert audit.exit_code == 0, audit.output
    # (a log that resumed from a checkpoint is verified from that checkpoint on)
    resumed = gaps[0][1] if gaps else 0
    verified = 3 * 150 + sum(1 for r in held if r >= resumed)
    assert f"4 node logs, {verified} rounds verified, 0 logs with a bad record" in audit.output
    assert read_cluster(folder)["nodes"][3]["pid"] == restarted[3].pid


def test_node_refuses_bad_settings_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "node.json"
    config.write_text(json.dumps({"node_id": 0, "p2p_port": 70000}))
    cases = [
        (["node"], "add --real"),
        (["node", "--real", "--config", str(config)], "p2p_port"),
        (["node", "--real", "--node-type", "annotation", "--scenario",
          str(SCENARIOS / "quickstart.yaml"), "--data-dir", str(tmp_path / "d")],
         "node_type annotation: scenario 'quickstart' has no curation: section"),
        (["node", "--real", "--node-id", "0", "--scenario", str(SCENARIOS / "quickstart.yaml"),
          "--data-dir", str(tmp_path / "d")], "--members is required"),
        (["cluster", "status", "--dir", str(tmp_path / "none")], "no cluster here"),
        (["bench", "real", "--rounds", "2"], "--rounds: at least 3"),
        (["cluster", "up", str(SCENARIOS / "quickstart.yaml"), "--dir", str(tmp_path / "c"),
          "--byzantine", "1,2", "--attack", "equivocate"], "tolerates f=1"),
        (["cluster", "up", str(SCENARIOS / "quickstart.yaml"), "--dir", str(tmp_path / "c"),
          "--byzantine", "1", "--attack", "dance"], "unknown behaviour 'dance'"),
        (["calibrate", str(tmp_path / "missing.yaml")], "missing.yaml"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert "Traceback" not in result.output


@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="mpiexec is not on PATH")
def test_four_mpi_ranks_end_on_the_simulated_model(tmp_path: Path) -> None:
    """`mpiexec -n 4 python -m phalanx.apps.node --real --transport mpi ...`: the ranks gather
    each other's keys, train over MPI point-to-point messages and end on the simulated hash."""
    cmd = ["mpiexec", "-n", "4", sys.executable, "-m", "phalanx.apps.node", "--real",
           "--transport", "mpi", "--scenario", str(SCENARIOS / "quickstart.yaml"),
           "--data-dir", str(tmp_path / "node-{node_id}"), "--no-web",
           "--exit-when-finished", "--linger", "1", "--log-every", "20"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    # rank 0 reports progress on the terminal, one line per 20 rounds; every rank logs to its
    # folder's node.log
    terminal = done.stdout + done.stderr
    assert [ln.split(" committed")[0].rsplit(" ", 1)[1] for ln in terminal.splitlines()
            if " node 0 commit: round " in ln] == ["19", "39", "59"], terminal
    assert "node 0 finished: all 60 rounds committed" in terminal
    assert not any(f" node {i} " in terminal for i in (1, 2, 3)), terminal
    for i in range(4):
        log = (tmp_path / f"node-{i}" / "node.log").read_text()
        assert f"node {i} start: full, members [0, 1, 2, 3], listening on MPI rank {i}" in log
        assert f"node {i} stop: finished (--exit-when-finished): at round 60" in log
    # and `phalanx audit` verifies the ranks' logs with the keys rank 0 wrote down
    audit = CliRunner().invoke(app, ["audit", str(tmp_path)])
    assert audit.exit_code == 0, audit.output
    assert "4 node logs, 240 rounds verified, 0 logs with a bad record" in audit.output
    results = [json.loads((tmp_path / f"node-{i}" / "result.json").read_text())
               for i in range(4)]
    sim = phalanx.run(SCENARIOS / "quickstart.yaml")
    assert {r["model_hash"] for r in results} == set(sim.final_hashes().values())
    assert all(r["finished"] and len(r["commits"]) == 60 for r in results)
    # every round's model, not only the last, matches the simulation's
    sim_rounds = dict(zip(*sim.rounds.filter(pl.col("node") == 0).select(
        "round", "model_hash").to_dict(as_series=False).values(), strict=True))
    assert {c["round"]: c["model_hash"] for c in results[2]["commits"]} == sim_rounds


def test_hostile_peers_are_refused_and_counted_while_the_node_keeps_training(
        tmp_path: Path) -> None:
    """A 4-node cluster whose node 3 is killed and impersonated from this process with its
    real key: raw garbage, an oversized frame, forged signatures, replays, fuzzed frames over
    an authenticated link and a flood. Node 0 counts each refusal, keeps committing with nodes
    1 and 2, and its memory stays bounded."""
    import asyncio
    import socket

    from phalanx.net.crypto import Identity
    from phalanx.net.envelope import seal
    from phalanx.net.messages import SyncRequest
    from phalanx.net.tcp import TcpTransport

    data = yaml.safe_load(crash_scenario(tmp_path).read_text())
    data["training"]["rounds"] = 400
    (tmp_path / "hostile.yaml").write_text(yaml.safe_dump({**data, "name": "hostile"}))
    folder = tmp_path / "cluster"
    nodes = cluster_up(load_scenario(tmp_path / "hostile.yaml"), folder)
    try:
        until(lambda: statuses(folder).get(0, {}).get("round", 0) >= 5, 120, "round 5")
        os.kill(nodes[3].pid, signal.SIGKILL)
        before = statuses(folder)[0]
        p2p = ("127.0.0.1", nodes[0].p2p_port)
        for garbage in (b"", b"\x00" * 3, os.urandom(200), b"\xff\xff\xff\xff" + b"x" * 64):
            with socket.create_connection(p2p, timeout=5) as raw:  # no handshake at all
                raw.sendall(garbage)
                raw.shutdown(socket.SHUT_WR)
                raw.recv(1024)  # returns when node 0 closes the connection
        members = json.loads((folder / "members.json").read_text())["members"]
        keyring = {m["id"]: bytes.fromhex(m["public_key"]) for m in members}
        me = Identity.load(nodes[3].folder / "node.key")

        async def attack() -> None:
            link = TcpTransport(3, {3: ("127.0.0.1", 0), 0: p2p}, lambda _: None,
                                identity=me, keyring=keyring)
            await link.start()
            await link.wait_for_peers(20, peers=[0])
            ask = SyncRequest(round=0, from_round=0, count=1)
            link.send(0, seal(Identity.generate(), 3, 10**9, ask))  # signed by someone else
            valid = seal(me, 3, 10**9 + 1, ask)
            link.send(0, valid)
            link.send(0, valid)  # the same frame again: a replay
            for i in range(50):  # fuzz over an authenticated link
                link.send(0, os.urandom(1 + 37 * i))
            for _ in range(3000):  # a flood of 64 KB frames, 190 MB in all
                link.send(0, b"\x93" + os.urandom(65535))
            async with asyncio.timeout(60):  # until every frame is on the wire, however long
                while link.queued(0) != (0, 0):
                    await asyncio.sleep(0.05)
            await link.close()

        asyncio.run(attack())
        until(lambda: statuses(folder)[0]["round"] >= before["round"] + 10, 120,
              "node 0 committing after the attack")
        after = statuses(folder)[0]
    finally:
        cluster_down(folder)
    refused = after["transport"]["refusals"]
    rejected = after["rejections"]
    print(f"node 0 transport refusals {refused}; node rejections {rejected}; peak memory "
          f"{before['peak_memory_mb']:.0f} -> {after['peak_memory_mb']:.0f} MB; round "
          f"{before['round']} -> {after['round']}")
    assert sum(refused.values()) >= 4, refused  # every raw connection refused
    assert refused.get("oversized_frame", 0) >= 1, refused  # the 4 GB length prefix
    assert rejected.get("bad_signature", 0) >= 1, rejected
    assert rejected.get("replay", 0) >= 1, rejected
    assert rejected.get("malformed", 0) >= 50, rejected
    assert after["health"]["status"] in ("ok", "degraded")
    # the flood went through node 0's decoder without its memory following it
    assert after["peak_memory_mb"] < before["peak_memory_mb"] + 150, (before, after)


def test_a_late_joiner_catches_up_from_a_checkpoint(tmp_path: Path) -> None:
    """Nodes 0-2 start alone (node 3's seat stays empty past `start_wait`) and commit 50
    rounds; node 3 then starts with no state, fetches a checkpoint that f + 1 = 2 peers offer
    identically and a commit certificate vouches for, and finishes on the same model."""
    data = yaml.safe_load(crash_scenario(tmp_path).read_text())
    data["real"]["start_wait"] = 1.0
    data["training"]["rounds"] = 120
    (tmp_path / "late.yaml").write_text(yaml.safe_dump({**data, "name": "late"}))
    scenario = load_scenario(tmp_path / "late.yaml")
    folder = tmp_path / "cluster"
    for node in (0, 1, 2):
        cluster_up(scenario, folder, only=node)
    try:
        until(lambda: len(s := statuses(folder)) == 3 and min(v["round"] for v in s.values())
              >= 50, 180, "three nodes at round 50")
        cluster_up(scenario, folder, only=3)
        until(lambda: all_finished(folder, 4), 180, "4 finished nodes")
        status = statuses(folder)
    finally:
        cluster_down(folder)
    assert len({s["model_hash"] for s in status.values()}) == 1
    assert status[3]["log_starts_at"] >= 49  # it skipped the rounds before the checkpoint
    assert all(status[i]["log_starts_at"] == 0 for i in (0, 1, 2))
    assert status[3]["rejections"] == {} and status[3]["health"]["status"] == "ok"
    # its log is unbroken from the checkpoint's round to the last (the peers' transports may
    # also have delivered a few early rounds they had queued for it, committed normally)
    base = status[3]["log_starts_at"]
    log = NodeLog(folder / "node-3" / "node.sqlite").db.execute(
        "SELECT min(round), max(round), count(*) FROM rounds WHERE round >= ?",
        (base,)).fetchone()
    assert log == (base, 119, 120 - base)


def test_the_console_answers_on_a_terminal_and_quit_stops_the_node(tmp_path: Path) -> None:
    """One node of a 4-member scenario, alone (its peers never come), attached to a pseudo
    terminal: `stats`, `peers`, `train`, `test`, an unknown command, then `quit`."""
    from phalanx.apps.cluster import free_ports
    from phalanx.apps.node_settings import node_identity, write_members

    data = yaml.safe_load(crash_scenario(tmp_path).read_text())
    data["real"]["start_wait"] = 0.5
    (tmp_path / "alone.yaml").write_text(yaml.safe_dump({**data, "name": "alone"}))
    ports = free_ports(5, "127.0.0.1")
    keys = {i: node_identity(tmp_path / f"node-{i}").public_key for i in range(4)}
    write_members(tmp_path / "members.json",
                  {i: (keys[i], ("127.0.0.1", ports[i])) for i in range(4)})
    console = Terminal(
        [sys.executable, "-m", "phalanx.apps.node", "--real", "--scenario",
         str(tmp_path / "alone.yaml"), "--members", str(tmp_path / "members.json"),
         "--node-id", "0", "--p2p-port", str(ports[0]), "--web-port", str(ports[4]),
         "--data-dir", str(tmp_path / "node-0")])
    try:
        console.read_until(b"type help for commands")
        for command, reply in ((b"stats", b"health stalled"), (b"peers", b"reputation"),
                               (b"train", b"committed 0 of 150 rounds"),
                               (b"test", b"held-out accuracy"), (b"dance", b"unknown command")):
            console.type(command, reply)
        os.write(console.master, b"quit\n")
        assert console.proc.wait(timeout=30) == 0
    finally:
        console.close()
    result = json.loads((tmp_path / "node-0" / "result.json").read_text())
    assert result["finished"] is False and result["commits"] == []  # flushed on quit


def test_byzantine_members_attack_for_real_and_are_caught(tmp_path: Path) -> None:
    """A 4-node cluster whose node 2 equivocates (two different signed gradients for one
    round) from round 3: the honest nodes exclude it on the proof and keep one model."""
    data = yaml.safe_load(crash_scenario(tmp_path).read_text())
    data.update(name="byzantine-real",
                byzantine=[{"nodes": [2], "behaviour": "equivocate", "from_round": 3}])
    data["training"]["rounds"] = 40
    (tmp_path / "byz.yaml").write_text(yaml.safe_dump(data))
    folder = tmp_path / "cluster"
    cluster_up(load_scenario(tmp_path / "byz.yaml"), folder)
    try:
        until(lambda: all(statuses(folder).get(i, {}).get("finished") for i in (0, 1, 3)), 180,
              "the honest nodes to finish")
        status = statuses(folder)
    finally:
        cluster_down(folder)
    assert status[2]["byzantine"] and not status[0]["byzantine"]
    honest = [status[i] for i in (0, 1, 3)]
    assert len({s["model_hash"] for s in honest}) == 1
    assert all(s["excluded"] == [2] for s in honest), [s["excluded"] for s in honest]
    assert all(s["reputation"]["2"] == 0.0 for s in honest)


def test_an_encrypted_cluster_trains_the_same_model(tmp_path: Path) -> None:
    """`phalanx cluster up --encrypt`: every link sealed (ChaCha20-Poly1305 after the
    handshake); the model is the simulation's, and `phalanx keygen` shows the node's key."""
    folder = tmp_path / "cluster"
    result = CliRunner().invoke(app, ["cluster", "up", str(SCENARIOS / "quickstart.yaml"),
                                      "--dir", str(folder), "--encrypt"])
    assert result.exit_code == 0, result.output
    try:
        until(lambda: all_finished(folder, 4), 120, "4 finished nodes")
        hashes = {s["model_hash"] for s in statuses(folder).values()}
    finally:
        cluster_down(folder)
    sim = phalanx.run(SCENARIOS / "quickstart.yaml")
    assert hashes == set(sim.final_hashes().values())
    assert "--encrypt" in read_cluster(folder)["extra"]
    members = json.loads((folder / "members.json").read_text())["members"]
    shown = CliRunner().invoke(app, ["keygen", str(folder / "node-2")])
    assert shown.exit_code == 0 and shown.output.strip() == members[2]["public_key"]
