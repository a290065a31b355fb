"""Failing runs shrink to small regressions (apps/shrink.py through `phalanx sweep`)."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from phalanx.apps.cli import app
from phalanx.apps.shrink import Failure, failure_of, referenced_nodes, renumbered, shrink, size
from phalanx.apps.sweep import sweep

# A planted liveness failure: a deadline (max_time) far too short for 60 rounds of 10 nodes
# under 10% message loss, with faults and an attacker that play no part in it.
PLANTED = """\
name: planted-deadline
seed: 0
nodes: {count: 10}
links: {latency: 0.01, jitter: 0.002, loss: 0.1}
workload: {kind: linear, dim: 8, samples_per_node: 64, eval_samples: 128}
training: {rounds: 60, step_time: 0.02, round_timeout: 0.3, view_timeout: 1.0, max_time: 6.0}
faults:
  - {kind: slow, nodes: [2], factor: 3, at: 1.0, duration: 2.0}
  - {kind: crash, nodes: [5], at: 2.0, duration: 1.5}
byzantine:
  - {nodes: [7], behaviour: sign_flip}
record: none
"""


def test_a_planted_failure_is_saved_shrunk_and_still_fails(tmp_path: Path) -> None:
    path = tmp_path / "planted.yaml"
    path.write_text(PLANTED)
    report = sweep(path, range(1), workers=1, out_dir=tmp_path / "out",
                   save_failures=tmp_path / "saved", shrink_runs=40)
    assert report.failed_seeds == [0]
    [saved] = report.saved
    text = saved.read_text()
    assert "shrunk: it still fails with liveness" in text
    assert "# Replay: phalanx run <this file>" in text
    small, original = yaml.safe_load(text), yaml.safe_load(PLANTED)
    assert size(original) >= 5 * size(small)
    # replayed on its own, the regression fails exactly as the original did
    assert failure_of(small, small["seed"]) == failure_of(original, 0) == Failure(
        frozenset({"liveness"}))
    assert "## Saved failing scenarios" in (tmp_path / "out" / "sweep.md").read_text()


def test_expectation_failures_count_when_asked_and_shrink_too(tmp_path: Path) -> None:
    path = tmp_path / "expect.yaml"
    path.write_text("""\
name: expect-miss
nodes: {count: 7}
workload: {kind: linear, dim: 4, samples_per_node: 32, eval_samples: 64}
training: {rounds: 24, step_time: 0.02}
record: none
expect: {final_loss_below: 0.0}
""")
    quiet = sweep(path, range(1), workers=1, out_dir=tmp_path / "a")
    assert quiet.ok and quiet.outcomes[0].expect_failures == 1
    # not counted, but said in the terminal's last line, not only in sweep.md
    assert quiet.headline() == ("sweep: 1 seed, 0 violations, 1 missing `expect:` "
                                "(not counted: --expect counts them) (0 seeds failed)")
    report = sweep(path, range(1), workers=1, out_dir=tmp_path / "b", expectations=True,
                   save_failures=tmp_path / "saved", shrink_runs=30)
    assert report.failed_seeds == [0]
    assert "1 missing `expect:`" in report.headline()
    small = yaml.safe_load(report.saved[0].read_text())
    assert failure_of(small, 0) == Failure(frozenset({"expect:final_loss_below"}))
    assert size(small) * 5 <= 24 * 7
    assert "Seeds that missed their `expect:` checks" in (tmp_path / "b" / "sweep.md").read_text()


def test_renumbering_keeps_every_named_node_consistent() -> None:
    data = yaml.safe_load("""\
name: ids
nodes: {count: 9, speeds: {8: 0.5}, observers: [6]}
workload: {kind: linear}
training: {rounds: 5}
byzantine: [{nodes: [4], behaviour: equivocate}]
faults:
  - {kind: partition, groups: [[1, 4], [8]], at: 1.0, duration: 1.0}
  - {kind: one_way, source: [1], target: [6], at: 1.0}
expect: {excluded: [4]}
""")
    assert referenced_nodes(data) == {1, 4, 6, 8}
    out = renumbered(data, 4)
    assert out is not None and out["nodes"]["count"] == 4
    # 1 → 0, 4 → 1, 6 → 2, 8 → 3, in order
    assert out["nodes"]["speeds"] == {3: 0.5} and out["nodes"]["observers"] == [2]
    assert out["byzantine"][0]["nodes"] == [1] and out["expect"]["excluded"] == [1]
    assert out["faults"][0]["groups"] == [[0, 1], [3]]
    assert (out["faults"][1]["source"], out["faults"][1]["target"]) == ([0], [2])
    assert renumbered(data, 3) is None  # four named nodes do not fit in three
    assert data["nodes"]["count"] == 9  # the original is left alone


def test_shrink_keeps_only_variants_that_fail_the_same_way() -> None:
    data = {"name": "x", "nodes": {"count": 8}, "workload": {"kind": "linear"},
            "training": {"rounds": 40}}
    want = Failure(frozenset({"liveness"}))

    def check(candidate: dict, seed: int) -> Failure | None:
        # fails the same way only with at least 10 rounds and 3 nodes; another way below
        rounds, nodes = candidate["training"]["rounds"], candidate["nodes"]["count"]
        if rounds < 10:
            return Failure(frozenset({"safety"}))
        return want if nodes >= 3 else None

    small = shrink(data, 0, want, check=check)
    assert (small.data["training"]["rounds"], small.data["nodes"]["count"]) == (10, 3)
    assert small.failure == want and small.size_before == 320 and small.size_after == 30
    assert shrink(data, 0, want, check=check, max_runs=2).runs == 2


def test_sweep_refuses_a_negative_shrink_budget(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["sweep", "scenarios/quickstart.yaml",
                                      "--shrink-runs", "-1"])
    assert result.exit_code != 0
    assert "--shrink-runs: must be at least 0 (got -1)" in result.output
    assert "Traceback" not in result.output
