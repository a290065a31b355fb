"""Adaptive top-k: each node sizes its gradient from the link conditions its driver reports,
receivers accept any count up to the run's largest ratio, and in simulation the ratio follows
the network (scenarios/adaptive.yaml: a slow spell shrinks every node's gradients, and they grow
back when it heals)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from nodekit import DIM, MEMBERS, Kit

import phalanx
from phalanx.engine.compress import AdaptiveRatio, NetworkConditions
from phalanx.engine.compress.sparsify import sparse_bytes
from phalanx.engine.encoding import GradientEncoding
from phalanx.engine.events import LinkConditions
from phalanx.net.messages import Gradient
from phalanx.scenario.schema import load_scenario

SCENARIO = Path(phalanx.__file__).resolve().parent / "scenarios" / "adaptive.yaml"
ADAPTIVE = {"compression": "topk", "adaptive": (1.0, 0.25, 1.0)}  # 1..4 of DIM = 4 entries


def test_each_node_sends_what_its_own_link_allows_and_all_agree() -> None:
    pump = Kit(41).cluster(rounds=4, **ADAPTIVE)
    pump.start()
    pump.feed(0, LinkConditions(bandwidth=8.0, latency=0.0))  # a few bits a second: k = 1
    pump.feed(1, LinkConditions(bandwidth=1e9, latency=0.0))  # plenty: k = DIM
    pump.run_to_end()
    entries = {i: {e.message.parts[2].size for e in pump.sent_by(i, Gradient)} for i in MEMBERS}
    assert entries[0] == {1} and entries[1] == {DIM}
    assert entries[2] == entries[3] == {DIM}  # nothing measured yet: the largest ratio
    assert len({pump.nodes[i].model_hash for i in MEMBERS}) == 1
    assert all(not pump.nodes[i].rejections for i in MEMBERS)
    assert {c.ratio for c in pump.commits(0)} == {0.25} and {c.ratio for c in pump.commits(1)} == {1.0}


def test_latency_alone_can_use_up_the_budget() -> None:
    enc = GradientEncoding("topk", {}, True, (0.05, 0.01, 0.5))
    assert enc.ratio_for(1000, None) == 0.5  # before any measurement
    assert enc.ratio_for(1000, NetworkConditions(1e9, 0.0, 3)) == 0.5
    assert enc.ratio_for(1000, NetworkConditions(1e9, 0.06, 3)) == 0.01
    assert enc.ratio_for(1000, NetworkConditions(1e9, 0.0, 0)) == 0.5  # nobody to send to
    assert GradientEncoding("topk", {"ratio": 0.1}).ratio_for(1000, None) is None


def test_the_ratio_follows_the_simulated_network(tmp_path: Path) -> None:
    scenario = load_scenario(SCENARIO)
    result = phalanx.run(scenario, out=tmp_path)
    assert result.ok, result.failures
    rounds = pl.read_parquet(tmp_path / "rounds.parquet").sort("node", "round")
    size = 16 * 256 + 256 + 256 * 4 + 4  # the mlp's parameters
    spec = scenario.compression.adaptive
    assert spec is not None
    rule = AdaptiveRatio(spec.target_seconds, spec.min_ratio, spec.max_ratio)
    per_entry = sparse_bytes(size, size) / size
    bandwidth = 3 * scenario.links.bandwidth  # three peers, each over its own link
    calm = rule.ratio(size, NetworkConditions(bandwidth, 0.005, 3), per_entry)
    slow = rule.ratio(size, NetworkConditions(bandwidth, 0.040, 3), per_entry)
    assert calm == spec.max_ratio and spec.min_ratio < slow < calm
    for node, df in rounds.group_by("node"):
        ratios = df["ratio"].to_list()
        assert set(ratios) == {calm, slow}, node
        spell = [r for r, x in zip(df["round"], ratios, strict=True) if x == slow]
        assert spell == list(range(spell[0], spell[-1] + 1))  # one block: the slow spell
        assert 20 <= spell[0] <= 21 and spell[-1] < 79  # from the fault to its heal
        bytes_in = df.filter(pl.col("ratio") == slow)["bytes_sent"].mean()
        assert bytes_in < 0.7 * df.filter(pl.col("ratio") == calm)["bytes_sent"].mean()
    assert np.isclose(slow, 0.041, atol=0.001)  # (0.05 - 0.04) s * 3 Mbit/s over 3 peers


def test_real_nodes_size_their_gradients_from_what_tcp_measured() -> None:
    """Over TCP the transport measures the links (net/tcp.py): the first rounds go out at the
    largest ratio (nothing measured yet), and once a round trip was measured a budget that
    loopback latency alone exceeds brings every node down to the smallest."""
    import yaml

    from phalanx.scenario.schema import parse_scenario

    data = yaml.safe_load(SCENARIO.read_text())
    data.update(faults=[], expect={"honest_hashes_equal": True})
    data["training"]["rounds"] = 400  # some seconds: probes go every 2 s
    data["compression"]["adaptive"] = {"target_seconds": 1e-6, "min_ratio": 0.01,
                                       "max_ratio": 1.0}
    result = phalanx.run(parse_scenario(data), real=True)
    assert result.ok, result.failures
    for node, df in result.rounds.sort("round").group_by("node"):
        ratios = df["ratio"].to_list()
        assert ratios[0] == 1.0 and ratios[-1] == 0.01, node
        assert set(ratios) == {1.0, 0.01}
