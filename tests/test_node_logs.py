"""A real node's log tells its story: a cluster run through a `kill -9` of one node and its
restart, read from `node-<id>/node.log` as an operator would (apps/node_logging.py)."""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

import yaml
from clusterkit import Terminal, all_finished, statuses, until
from test_cluster import crash_scenario

from phalanx.apps.cluster import cluster_down, cluster_up
from phalanx.scenario.schema import load_scenario

ROUNDS, EVERY = 600, 100  # a crashed member no longer slows the others much: they must not
# finish before the restarted node is back (a process start takes seconds)


def lines(folder: Path, node: int, event: str) -> list[str]:
    """The log lines of `event` in node-<node>/node.log (text format: `<time> <LEVEL> node
    <id> <event>: <message>`)."""
    text = (folder / f"node-{node}" / "node.log").read_text()
    return [ln for ln in text.splitlines() if f" node {node} {event}: " in ln]


def test_the_logs_of_a_kill_9_and_restart_tell_the_story(tmp_path: Path) -> None:
    folder = tmp_path / "cluster"
    data = yaml.safe_load(crash_scenario(tmp_path).read_text())
    data["training"]["rounds"] = ROUNDS
    (tmp_path / "story.yaml").write_text(yaml.safe_dump(data))
    scenario = load_scenario(tmp_path / "story.yaml")
    nodes = cluster_up(scenario, folder, settings={"log_every": EVERY})
    try:
        until(lambda: statuses(folder).get(3, {}).get("round", 0) >= 30, 120, "round 30")
        os.kill(nodes[3].pid, signal.SIGKILL)
        killed_at = max(s["round"] for s in statuses(folder).values())
        until(lambda: lines(folder, 0, "peer") and "peer 3 down" in lines(folder, 0, "peer")[-1],
              10, "node 0 to log node 3 down")
        cluster_up(scenario, folder)  # node 3 comes back on its disk
        until(lambda: all_finished(folder, 4), 180, "4 finished nodes after the restart")
        restarted = statuses(folder)[3]["training"]
    finally:
        assert cluster_down(folder) == []
    # the console's figures count the rounds restored from the store
    assert restarted["rounds_committed"] == ROUNDS and restarted["rounds_restored"] >= 30
    # a survivor: started fresh, saw node 3 go down and come back, committed every EVERY rounds
    start = lines(folder, 0, "start")
    assert len(start) == 1 and "first start: no rounds on disk" in start[0], start
    assert "members [0, 1, 2, 3]" in start[0] and "listening on 127.0.0.1:" in start[0]
    peer3 = [ln for ln in lines(folder, 0, "peer") if "peer 3 " in ln]
    assert "peer 3 connected" in peer3[0], peer3
    assert any("WARNING node 0 peer: peer 3 down: link lost" in ln for ln in peer3), peer3
    assert "peer 3 back up: link restored after" in peer3[-1], peer3
    commits = [int(m.group(1)) for ln in lines(folder, 0, "commit")
               if (m := re.search(r"round (\d+) committed", ln))]
    assert commits == list(range(EVERY - 1, ROUNDS, EVERY)), commits
    assert all(re.search(r"train loss \d\.\d{4}, model [0-9a-f]{12}, [\d.]+ ms/round", ln)
               for ln in lines(folder, 0, "commit"))
    assert len(lines(folder, 0, "finished")) == 1
    assert f"stopped by SIGTERM: at round {ROUNDS}" in lines(folder, 0, "stop")[-1]
    # the failure detector's word on node 3 (engine/node/detector.py), and its clearing
    suspect3 = [ln for ln in lines(folder, 0, "suspect") if "peer 3 " in ln]
    assert "suspecting peer 3 is down" in suspect3[0], suspect3
    assert any("peer 3 no longer suspected" in ln for ln in suspect3), suspect3
    # the restarted node: two starts, the second with the rounds its disk held, a catch-up
    # by state sync, and its commit lines after it
    start = lines(folder, 3, "start")
    assert len(start) == 2 and "first start" in start[0], start
    on_disk = re.search(r"restart with (\d+) committed rounds on disk", start[1])
    assert on_disk and int(on_disk.group(1)) == restarted["rounds_restored"], start[1]
    assert "last train loss 0." in start[1], start[1]
    # it caught up by the records it missed, or, when it was more than checkpoint_gap rounds
    # behind, from a checkpoint first: either way the log says so (and again, briefly, if the
    # loaded machine let it fall a few rounds behind later)
    sync, checkpoint = lines(folder, 3, "sync"), lines(folder, 3, "checkpoint")
    caught = [ln for ln in sync if " caught up at round " in ln]
    assert caught and len(checkpoint) <= 1, (sync, checkpoint)
    if checkpoint:
        installed = re.search(r"installed the state after round (\d+) that f \+ 1 peers "
                              r"offered alike", checkpoint[0])
        assert installed and int(installed.group(1)) > killed_at, checkpoint
        assert f"from a checkpoint of round {installed.group(1)}, then " in caught[0], caught
    else:
        assert "catching up from round " + on_disk.group(1) in sync[0], sync
        done = re.search(r"caught up at round (\d+): (\d+) rounds by state sync from round "
                         + on_disk.group(1), caught[0])
        assert done and int(done.group(1)) > killed_at and int(done.group(2)) > 10, caught
    assert any("peer 0 connected" in ln for ln in lines(folder, 3, "peer"))
    last = lines(folder, 3, "commit")[-1]  # it committed live again, to the end
    assert f": round {ROUNDS - 1} committed (view " in last and "by state sync" not in last
    # the log is a story, not a flood: a few dozen lines for 600 rounds and a crash
    for node in range(4):
        size = len((folder / f"node-{node}" / "node.log").read_text().splitlines())
        assert size < 40, (node, size)
    # restarted once more, alone, on a disk holding every round: its console reports them,
    # with the last train loss read back from the store (the one node 0 logged live)
    last_loss = re.search(r"train loss (\d\.\d{4})", lines(folder, 0, "commit")[-1])
    assert last_loss
    data = yaml.safe_load((folder / "scenario.yaml").read_text())
    data["real"]["start_wait"] = 0.5  # its peers are down: do not wait for them
    (tmp_path / "alone.yaml").write_text(yaml.safe_dump(data))
    console = Terminal([sys.executable, "-m", "phalanx.apps.node", "--real", "--scenario",
                        str(tmp_path / "alone.yaml"), "--config",
                        str(folder / "node-3" / "node.json"), "--members",
                        str(folder / "members.json")])
    try:
        console.read_until(b"restart with %d committed rounds on disk" % ROUNDS)
        console.read_until(b"type help for commands")
        console.type(b"stats", b"round %d " % ROUNDS)
        console.type(b"train", b"committed %d of %d rounds (%d restored from the store, 0 "
                     b"since the restart); last train loss %s (from the store)"
                     % (ROUNDS, ROUNDS, ROUNDS, last_loss.group(1).encode()))
        os.write(console.master, b"quit\n")
        assert console.proc.wait(timeout=30) == 0
    finally:
        console.close()


def test_the_console_says_what_it_knows_of_a_restored_past() -> None:
    from phalanx.apps.console import answer

    def train(**training: object) -> str:
        status = {"finished": False, "training": {
            "rounds": 60, "rounds_committed": 60, "rounds_restored": 60,
            "rounds_committed_this_run": 0, "last_train_loss": None,
            "last_train_loss_from": None, **training}}
        return answer("train", status, dict)

    assert train() == ("committed 60 of 60 rounds (60 restored from the store, 0 since the "
                       "restart); last train loss not recorded before the restart; training")
    assert "last train loss 0.2500 (from the store)" in train(last_train_loss=0.25,
                                                              last_train_loss_from="store")
    assert train(rounds_committed=0, rounds_restored=0) == (
        "committed 0 of 60 rounds; last train loss -; training")


def test_story_lines_as_json_and_repeats_held_back(tmp_path: Path) -> None:
    """JSON lines with the event's fields; a flapping peer and a storm of view changes cost a
    few lines, with the count of what was held back, and the last line about the peer is its
    state now."""
    import json

    from phalanx.apps.node_logging import NodeStory, configure_logging
    from phalanx.engine.events import RoundCommitted, ViewChanged

    now = [1000.0]
    configure_logging("info", json_lines=True, stream=None, file=tmp_path / "node.log")
    story = NodeStory(5, every=10, interval=60.0, clock=lambda: now[0])
    story.started(role="full", members=[0, 5], listen="127.0.0.1:1", store=tmp_path / "s",
                  rounds=0, base=0, model_hash="ab" * 32, last_loss=None)
    story.peer_states({0: False})  # not reached yet: nothing to say
    for up in [True, False, True, False, True, False, True, False, True]:
        now[0] += 1
        story.peer_states({0: up})
    for view in range(1, 30):
        story.metric(ViewChanged(5, 3, view))
    for r in range(20):
        now[0] += 0.05
        story.metric(RoundCommitted(5, r, 0, 2, 0.5, bytes(32), False, None))
    now[0] += 61
    story.tick()  # the peer's state changed while held back: said now
    story.stopped("stopped by SIGTERM", 20, "cd" * 32)
    configure_logging("info", stream=None)  # close the file
    rows = [json.loads(line) for line in (tmp_path / "node.log").read_text().splitlines()]
    assert all(r["node"] == 5 and r["time"].endswith("Z") for r in rows)
    events = [r["event"] for r in rows]
    assert events[0] == "start" and rows[0]["rounds_on_disk"] == 0 and events[-1] == "stop"
    peer = [r for r in rows if r["event"] == "peer"]
    assert len(peer) == 5 and peer[-1]["up"] is True, peer  # 4 in a minute, then the state
    assert "changed 5 times since the last line" in peer[-1]["message"], peer[-1]
    views = [r for r in rows if r["event"] == "view"]
    assert len(views) == 4 and views[-1]["view"] == 4
    commits = [r for r in rows if r["event"] == "commit"]
    assert [r["round"] for r in commits] == [9, 19]
    assert abs(commits[1]["seconds_per_round"] - 0.05) < 1e-9


def test_bad_log_settings_are_one_line_errors(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from phalanx.apps.cli import app

    for flag, value, field in (("--log-level", "loud", "log_level"),
                               ("--log-every", "0", "log_every")):
        result = CliRunner().invoke(app, ["node", "--real", flag, value, "--node-id", "0",
                                          "--data-dir", str(tmp_path / "d")])
        assert result.exit_code == 2 and field in result.output, result.output
        assert "Traceback" not in result.output


def test_a_catch_up_is_one_story_and_repeated_ones_are_held_back(tmp_path: Path) -> None:
    from phalanx.apps.node_logging import NodeStory, configure_logging
    from phalanx.engine.events import RoundCommitted

    base = [0]
    configure_logging("info", stream=None, file=tmp_path / "node.log")
    story = NodeStory(1, every=1000, base=lambda: base[0], clock=lambda: 50.0)

    def commit(r: int, sync: bool) -> None:
        story.metric(RoundCommitted(1, r, 0, 3, 0.5, bytes(32), sync, None))

    base[0] = 40
    commit(40, True)  # a checkpoint, then records trickling in between live commits
    for r, sync in zip(range(41, 60), [True] * 5 + [False, True] + [False] * 12, strict=True):
        commit(r, sync)
    for r in range(60, 120, 6):  # then it keeps falling one round behind
        commit(r, True)
        for k in range(1, 6):
            commit(r + k, False)
    configure_logging("info", stream=None)
    text = (tmp_path / "node.log").read_text().splitlines()
    said = [ln.split(": ", 1)[1] for ln in text]
    assert said[0].startswith("installed the state after round 40")
    assert said[1] == ("caught up at round 47: from a checkpoint of round 40, then 6 rounds by "
                       "state sync, in 0.0 s"), said
    catching = [s for s in said if s.startswith("catching up")]
    assert len(catching) == 4 and len(said) == 2 + 2 * 4, said  # 4 a minute, then held
