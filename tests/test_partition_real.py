"""A real partition of real nodes: 7 processes in their own network namespaces split 5|2 on
the wire (tests/netlab.py). The majority keeps committing, the minority stalls, and after the
heal all seven converge on one model."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from clusterkit import SCENARIOS, until
from netlab import NetLab

from phalanx.apps.cluster import cluster_down, cluster_status, cluster_up
from phalanx.scenario.schema import load_scenario

pytestmark = pytest.mark.skipif(not NetLab.available(),
                                reason="needs root and `ip netns` for real partitions")


def rounds(folder: Path) -> dict[int, int]:
    return {r["node"]: r["status"]["round"] for r in cluster_status(folder) if r["status"]}


def test_seven_nodes_split_five_two_then_heal(tmp_path: Path) -> None:
    data = yaml.safe_load((SCENARIOS / "quickstart.yaml").read_text())
    data.update(name="partition-real", expect={})
    data["nodes"]["count"] = 7
    data["training"]["rounds"] = 300
    data["real"] = {"round_timeout": 0.3, "view_timeout": 1.5}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(data))
    scenario = load_scenario(tmp_path / "p.yaml")
    lab, folder = NetLab(7), tmp_path / "cluster"
    lab.up()
    try:
        cluster_up(scenario, folder, placement=lab.placement())
        until(lambda: len(r := rounds(folder)) == 7 and min(r.values()) >= 10, 120,
              "7 nodes at round 10")
        lab.split({5, 6})
        cut = rounds(folder)
        until(lambda: min(rounds(folder)[i] for i in range(5)) >= max(cut.values()) + 20, 120,
              "the majority 20 rounds past the cut")
        during = rounds(folder)
        print(f"rounds at the cut {cut}; during the partition {during}")
        # the minority cannot gather a quorum (5 of 7): at most the round in flight completes
        assert all(during[i] <= cut[i] + 1 for i in (5, 6)), (cut, during)
        lab.heal()
        until(lambda: all(r["status"] and r["status"]["finished"]
                          for r in cluster_status(folder)), 240, "all 7 finished")
        final = {r["node"]: r["status"]["model_hash"] for r in cluster_status(folder)}
        synced = {r["node"]: r["status"]["training"]["rounds_committed"]
                  for r in cluster_status(folder)}
    finally:
        cluster_down(folder)
        lab.down()
    assert len(set(final.values())) == 1, final
    assert all(count == 300 for count in synced.values()), synced
