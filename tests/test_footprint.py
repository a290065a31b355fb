"""`phalanx validate`'s footprint: a simulated run's disk and memory, estimated from the
scenario's sizes (scenario/footprint.py), against the models it counts and a measured run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import phalanx
from phalanx.apps.cli import app
from phalanx.engine.rng import RngStreams
from phalanx.scenario.build import workload_for
from phalanx.scenario.footprint import estimate, parameter_count
from phalanx.scenario.schema import load_scenario

SCENARIOS = Path(phalanx.__file__).resolve().parent / "scenarios"

BASE = """
name: sized
seed: 3
nodes: {count: 4}
training: {rounds: 6, lr: 0.1, step_time: 0.02, round_timeout: 0.3, view_timeout: 1.0}
"""


@pytest.mark.parametrize("workload", [
    "{kind: linear, dim: 7}",
    "{kind: mlp, features: 5, classes: 3, hidden: 9}",
    "{kind: digits, hidden: 12}",
    "{kind: transformer, n_layer: 1, n_head: 2, n_embd: 16}",
    "{kind: transformer, n_layer: 2, n_head: 4, n_embd: 16, ffn: gelu}",
    "{kind: transformer, n_layer: 1, n_head: 2, n_embd: 8, ffn: moe, n_experts: 3}",
])
def test_the_parameter_count_is_the_built_models(tmp_path: Path, workload: str) -> None:
    (tmp_path / "s.yaml").write_text(BASE + f"workload: {workload}\n")
    scenario = load_scenario(tmp_path / "s.yaml")
    built = workload_for(scenario, RngStreams(scenario.seed)).init_params()
    assert parameter_count(scenario) == built.size


def test_validate_ends_with_the_footprint_as_yaml_comments() -> None:
    result = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "80"}).invoke(
        app, ["validate", str(SCENARIOS / "transformer_byzantine.yaml")])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.output)["name"] == "transformer-byzantine"
    *_, first, second = result.output.strip().splitlines()
    assert first == "# footprint (estimate): 25,760 parameters, 103.2 kB per gradient frame"
    assert second.startswith("# disk ") and "peak memory" in second


def test_the_disk_estimate_is_within_2x_of_a_run(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(
        BASE.replace("rounds: 6", "rounds: 20")
        + "workload: {kind: mlp, features: 16, classes: 4, hidden: 256}\n")
    scenario = load_scenario(tmp_path / "s.yaml")
    assert phalanx.run(scenario, out=tmp_path / "out").ok
    logs = sum(p.stat().st_size for p in (tmp_path / "out" / "nodes").glob("*.sqlite"))
    results = sum((tmp_path / "out" / f).stat().st_size
                  for f in ("rounds.parquet", "events.parquet"))
    guess = estimate(scenario)
    assert logs / 2 <= guess.node_logs_bytes <= logs * 2, (logs, guess)
    assert results / 2 <= guess.results_bytes <= results * 2, (results, guess)


def test_a_user_workload_has_no_estimate(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(
        BASE + "workload: {kind: 'phalanx.engine.workloads.linear:LinearRegression'}\n")
    assert estimate(load_scenario(tmp_path / "s.yaml")).lines() == [
        "footprint: unknown (a user workload: its parameter count is its own)"]
