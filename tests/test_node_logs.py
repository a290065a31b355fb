"""A real node's log tells its story: a cluster run through a `kill -9` of one node and its
restart, read from `node-<id>/node.log` as an operator would (apps/node_logging.py)."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

from clusterkit import all_finished, statuses, until
from test_cluster import crash_scenario

from phalanx.apps.cluster import cluster_down, cluster_up
from phalanx.scenario.schema import load_scenario

EVERY = 25


def lines(folder: Path, node: int, event: str) -> list[str]:
    """The log lines of `event` in node-<node>/node.log (text format: `<time> <LEVEL> node
    <id> <event>: <message>`)."""
    text = (folder / f"node-{node}" / "node.log").read_text()
    return [ln for ln in text.splitlines() if f" node {node} {event}: " in ln]


def test_the_logs_of_a_kill_9_and_restart_tell_the_story(tmp_path: Path) -> None:
    folder = tmp_path / "cluster"
    scenario = load_scenario(crash_scenario(tmp_path))
    nodes = cluster_up(scenario, folder, settings={"log_every": EVERY})
    try:
        until(lambda: statuses(folder).get(3, {}).get("round", 0) >= 30, 120, "round 30")
        os.kill(nodes[3].pid, signal.SIGKILL)
        killed_at = max(s["round"] for s in statuses(folder).values())
        until(lambda: min(s["round"] for i, s in statuses(folder).items() if i != 3)
              >= killed_at + 15, 120, "15 more rounds without node 3")
        until(lambda: lines(folder, 0, "peer") and "peer 3 down" in lines(folder, 0, "peer")[-1],
              10, "node 0 to log node 3 down")
        cluster_up(scenario, folder)  # node 3 comes back on its disk
        until(lambda: all_finished(folder, 4), 180, "4 finished nodes after the restart")
        restarted = statuses(folder)[3]["training"]
    finally:
        assert cluster_down(folder) == []
    # the console's figures count the rounds restored from the store
    assert restarted["rounds_committed"] == 150 and restarted["rounds_restored"] >= 30
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
    assert commits == list(range(EVERY - 1, 150, EVERY)), commits
    assert all(re.search(r"train loss \d\.\d{4}, model [0-9a-f]{12}, [\d.]+ ms/round", ln)
               for ln in lines(folder, 0, "commit"))
    assert len(lines(folder, 0, "finished")) == 1
    assert "stopped by SIGTERM: at round 150" in lines(folder, 0, "stop")[-1]
    # the restarted node: two starts, the second with the rounds its disk held, a catch-up
    # by state sync, and its commit lines after it
    start = lines(folder, 3, "start")
    assert len(start) == 2 and "first start" in start[0], start
    on_disk = re.search(r"restart with (\d+) committed rounds on disk", start[1])
    assert on_disk and int(on_disk.group(1)) == restarted["rounds_restored"], start[1]
    assert "last train loss 0." in start[1], start[1]
    sync = lines(folder, 3, "sync")
    assert "catching up from round " + on_disk.group(1) in sync[0], sync
    assert len(sync) == 2, sync  # one catch-up, however its rounds came
    caught = re.search(r"caught up: rounds (\d+)\.\.(\d+) \((\d+) of them by state sync\)",
                       sync[1])
    assert caught and int(caught.group(1)) == int(on_disk.group(1)), sync
    assert int(caught.group(2)) >= killed_at + 15 and int(caught.group(3)) > 10, sync
    assert any("peer 0 connected" in ln for ln in lines(folder, 3, "peer"))
    assert lines(folder, 3, "commit")[-1].split(": round ")[1].startswith("149 committed")
    # the log is a story, not a flood: a few dozen lines for 150 rounds and a crash
    for node in range(4):
        size = len((folder / f"node-{node}" / "node.log").read_text().splitlines())
        assert size < 40, (node, size)
