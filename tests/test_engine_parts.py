"""The small engine parts the node composes: RNG streams, workloads, aggregation, optimizer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from phalanx.apps.bench_sim import run_bench
from phalanx.apps.cli import app
from phalanx.engine.aggregate import Mean, make_aggregator
from phalanx.engine.optim import Adam, MomentumSGD, SenderAdam, make_optimizer
from phalanx.engine.rng import RngStreams
from phalanx.engine.workloads import WORKLOADS, make_workload


def test_rng_streams_are_independent_and_reproducible() -> None:
    a, b = RngStreams(1), RngStreams(1)
    assert np.array_equal(a.stream("data", 3, 7).random(5), b.stream("data", 3, 7).random(5))
    assert not np.array_equal(a.stream("data", 3, 7).random(5), a.stream("data", 3, 8).random(5))
    assert not np.array_equal(a.stream("x").random(5), RngStreams(2).stream("x").random(5))
    # asking for other streams first does not shift a stream
    c = RngStreams(1)
    c.stream("other").random(100)
    assert np.array_equal(c.stream("data", 3, 7).random(5), b.stream("data", 3, 7).random(5))


def test_rng_streams_do_not_depend_on_python_hash_salt() -> None:
    code = "from phalanx.engine.rng import RngStreams; print(RngStreams(5).seed('topology'))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={"PYTHONHASHSEED": salt}, check=True).stdout
            for salt in ("1", "2")}
    assert len(outs) == 1


def test_mean_is_exact_and_order_fixed() -> None:
    g = [np.array([1.0, 2.0], np.float32), np.array([3.0, -2.0], np.float32)]
    assert np.array_equal(Mean()(g), np.array([2.0, 0.0], np.float32))
    rng = np.random.default_rng(0)
    many = [rng.standard_normal(64).astype(np.float32) for _ in range(31)]
    assert Mean()(many).tobytes() == Mean()(list(many)).tobytes()
    assert Mean()(many).dtype == np.float32
    with pytest.raises(ValueError, match="unknown aggregator"):
        make_aggregator("krum?")


def test_adam_step_follows_its_definition() -> None:
    opt = Adam(lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8)
    p0, g = np.array([1.0, -1.0], np.float32), np.array([0.5, -2.0], np.float32)
    p1, state = opt.step(p0, opt.init_state(p0), g, t=1)
    # step 1: m_hat = g, v_hat = g^2, so the update is lr * sign(g)
    assert np.allclose(p1, p0 - 0.1 * np.sign(g), atol=1e-6) and state.shape == (4,)
    p2, _ = opt.step(p1, state, g, t=2)
    m, v = 0.9 * 0.1 * g + 0.1 * g, 0.99 * 0.01 * g * g + 0.01 * g * g
    expected = p1 - 0.1 * (m / (1 - 0.9**2)) / (np.sqrt(v / (1 - 0.99**2)) + 1e-8)
    assert np.allclose(p2, expected, atol=1e-6) and p2.dtype == np.float32
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("lion", 0.1, 0.9)


def test_sender_adam_advances_only_on_adopt_and_survives_a_restart() -> None:
    g = np.array([0.5, -2.0, 0.0], np.float32)
    sender = SenderAdam(3)
    first = sender.direction(g)
    assert np.allclose(first, [1, -1, 0], atol=1e-6)  # step 1 of Adam: sign(g)
    assert np.array_equal(sender.direction(g), first)  # not adopted: the same step again
    sender.adopt()
    assert sender.steps == 1
    m, v = 0.1 * g, 0.01 * g * g
    second = sender.direction(2 * g)
    m, v = 0.9 * m + 0.1 * 2 * g, 0.99 * v + 0.01 * 4 * g * g
    expected = (m / (1 - 0.9**2)) / (np.sqrt(v / (1 - 0.99**2)) + 1e-8)
    assert np.allclose(second, expected, atol=1e-6)
    sender.adopt()
    restored = SenderAdam(3)
    restored.load(sender.to_bytes())
    assert restored.steps == 2 and np.array_equal(restored.direction(g), sender.direction(g))
    sender.reset()
    assert sender.steps == 0 and not sender.state.any()


def test_momentum_sgd_step() -> None:
    opt = MomentumSGD(lr=0.5, momentum=0.9)
    p, v = opt.step(np.ones(2, np.float32), np.zeros(2, np.float32), np.array([1, 2], np.float32))
    assert np.allclose(v, [1, 2]) and np.allclose(p, [0.5, 0.0])
    p2, v2 = opt.step(p, v, np.zeros(2, np.float32))
    assert np.allclose(v2, [0.9, 1.8]) and np.allclose(p2, [0.05, -0.9])


@pytest.mark.parametrize("kind", sorted(WORKLOADS))
def test_workloads_are_deterministic_and_learnable(kind: str) -> None:
    w = make_workload(kind, {"batch": 32}, n_nodes=4, rngs=RngStreams(3))
    params = w.init_params()
    assert params.dtype == np.float32 and params.ndim == 1
    first = w.gradient(params, node=1, round=0)
    again = make_workload(kind, {"batch": 32}, 4, RngStreams(3)).gradient(params, 1, 0)
    assert first.values.tobytes() == again.values.tobytes() and first.loss == again.loss
    assert first.values.dtype == np.float32 and first.values.shape == params.shape
    other = w.gradient(params, node=2, round=0)
    assert first.values.tobytes() != other.values.tobytes()  # shards differ per node
    # the transformer trains with Adam and cannot halve its loss: it starts near ln(vocab) and
    # its floor is the corpus' entropy rate
    opt = Adam(0.01) if kind == "transformer" else MomentumSGD(0.1, 0.5)
    state = opt.init_state(params)
    start = w.evaluate(params)["loss"]
    for r in range(60):
        update = Mean()([w.gradient(params, node, r).values for node in range(4)])
        params, state = opt.step(params, state, update, r + 1)
    end = w.evaluate(params)["loss"]
    assert end < (start - 0.1 if kind == "transformer" else 0.5 * start), (start, end)


def test_bench_sim_writes_json_with_ratio(tmp_path: Path) -> None:
    out = tmp_path / "sim.json"
    report = run_bench([12], 2, out, Console(quiet=True))
    saved = json.loads(out.read_text())
    assert saved == report
    (row,) = saved["results"]
    assert row["phalanx"]["rounds_committed"] == 2
    # per round: every gradient to 11 peers, the proposal, and every node's two votes
    assert row["phalanx"]["messages_per_round"] == 12 * 11 + 11 + 2 * 12 * 11
    assert row["bare_simpy"]["events"] > 0 and row["ratio"] > 0


def test_bench_consensus_reports_latency_traffic_and_a_silent_leader(tmp_path: Path) -> None:
    from phalanx.apps.bench_consensus import run_bench as run_consensus_bench

    out = tmp_path / "consensus.json"
    report = run_consensus_bench([4, 7], 3, out, Console(quiet=True))
    assert json.loads(out.read_text()) == report
    rows = {(r["nodes"], r["votes"]): r for r in report["results"]}
    assert set(rows) == {(4, "broadcast"), (4, "leader"), (7, "broadcast"), (7, "leader")}
    for r in rows.values():
        assert r["rounds_committed"] == 3
        # four message delays of 50 ms (five or more with votes to the leader), plus compute
        assert 0.2 <= r["round_seconds"] < 0.5
    # votes to the leader: fewer messages than votes to everyone
    assert rows[(7, "leader")]["messages_per_round"] < rows[(7, "broadcast")]["messages_per_round"]
    without, with_ = (report["silent_leader"][k] for k in ("without_detector", "with_detector"))
    rounds = report["silent_leader"]["rounds"]
    assert without["rounds_committed"] == rounds and without["view_change_rounds"] >= 1
    assert without["added_seconds"] > 1.0  # a view timeout (3 s) minus the gather wait (1 s)
    # the detector: node 1 missed round 0's set, so it leads nothing and nobody waits for it
    assert with_["rounds_committed"] == rounds and with_["view_change_rounds"] == 0
    assert with_["round_seconds_normal"] < without["round_seconds_normal"] - 0.5


def test_bench_train_writes_json_with_ratio_and_memory(tmp_path: Path) -> None:
    from phalanx.apps.bench_train import Size
    from phalanx.apps.bench_train import run_bench as run_train_bench

    out = tmp_path / "train.json"
    report = run_train_bench(Size(n_layer=1, n_head=2, n_embd=16, block=8, batch=4), 2, 1, out,
                             Console(quiet=True))
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(report))
    plain = saved["plain"]["parameters"]
    for side in ("phalanx_gpt2_arch", "phalanx_default"):
        assert saved[side]["ratio"] > 0 and len(saved[side]["ratios"]) == 1
    # built with the baseline's architecture, phalanx's GPT is the baseline's model exactly
    assert saved["phalanx_gpt2_arch"]["parameters"] == plain
    # by default the same size: SwiGLU at 8d/3 against a GELU MLP at 4d (and no biases)
    assert abs(saved["phalanx_default"]["parameters"] - plain) < 0.1 * plain
    assert [(m["checkpointing"], m["micro_batches"]) for m in saved["memory"]] == [
        (False, 1), (True, 1), (False, 4), (True, 4)]
    assert all(m["peak_rss_mb"] > 50 for m in saved["memory"])


def test_bench_kernels_without_a_gpu_says_so_and_exits_zero(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the benchmark would run for real")
    result = CliRunner().invoke(app, ["bench", "kernels", "--out", str(tmp_path / "k.json")])
    assert result.exit_code == 0 and "no GPU here" in result.output
    assert not (tmp_path / "k.json").exists()


def test_bench_sim_against_a_revision_runs_both_builds_and_reports_medians(
        tmp_path: Path) -> None:
    """`phalanx bench sim --against REV` checks REV out beside this tree, runs each build's
    bench as a subprocess in turn, and reports both ratios and their difference."""
    out = tmp_path / "against.json"
    result = CliRunner().invoke(app, ["bench", "sim", "--nodes", "4", "--rounds", "1",
                                      "--against", "HEAD", "--repeats", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    (row,) = report["results"]
    assert row["nodes"] == 4 and len(row["ratios_this"]) == len(row["ratios_baseline"]) == 1
    assert row["difference"] == row["median_this"] - row["median_baseline"]
    assert row["median_this"] > 0 and row["median_baseline"] > 0
    bad = CliRunner().invoke(app, ["bench", "sim", "--against", "no-such-rev", "--out",
                                   str(out)])
    assert bad.exit_code == 2 and bad.output.startswith("error:")
    assert len(bad.output.strip().splitlines()) == 1
