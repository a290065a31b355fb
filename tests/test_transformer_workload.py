"""The transformer trained through the BFT round (`scenarios/transformer_byzantine.yaml`, on a
reduced number of rounds): honest nodes agree on every round's model, the model learns, and
with the scenario's two sign-flipping nodes it ends within 5% of the attack-free validation
loss."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import yaml
from rich.console import Console

from phalanx.apps.runner import RoundPrinter, run_sim
from phalanx.scenario.schema import ScenarioError, parse_scenario

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "transformer_byzantine.yaml"
ROUNDS = 150


def run(attack: bool) -> pl.DataFrame:
    data = yaml.safe_load(SCENARIO.read_text())
    data["training"] = {**data["training"], "rounds": ROUNDS, "eval_every": ROUNDS // 2}
    data["expect"] = {"honest_hashes_equal": True, "rounds_committed_at_least": ROUNDS}
    if not attack:
        data.pop("byzantine")
    scenario = parse_scenario(data)
    result = run_sim(scenario, RoundPrinter(scenario, Console(quiet=True), enabled=False))
    assert result.ok, result.failures
    return result.rounds.filter(~pl.col("byzantine"))


def evaluations(rounds: pl.DataFrame) -> pl.DataFrame:
    return (rounds.filter(pl.col("eval_loss").is_not_null()).group_by("round")
            .agg(pl.col("eval_loss").n_unique().alias("k"), pl.col("eval_loss").first(),
                 pl.col("eval_excess_loss").first()).sort("round"))


def test_transformer_trains_through_consensus_despite_sign_flippers() -> None:
    clean, attacked = evaluations(run(attack=False)), evaluations(run(attack=True))
    for evals in (clean, attacked):
        assert evals["k"].to_list() == [1, 1]  # one model per round among the honest nodes
        first, last = evals["eval_loss"].to_list()
        assert last < first - 0.2  # it learns
        assert all(x > 0 for x in evals["eval_excess_loss"].to_list())  # never below H
    final_clean, final_attacked = clean["eval_loss"][-1], attacked["eval_loss"][-1]
    assert final_attacked <= 1.05 * final_clean, (final_attacked, final_clean)


def test_a_transformer_workload_that_cannot_be_built_is_a_one_line_error() -> None:
    data = yaml.safe_load(SCENARIO.read_text())
    data["workload"] = {**data["workload"], "n_embd": 30, "n_head": 4}
    with pytest.raises(ScenarioError, match="workload") as err:
        parse_scenario(data)
    assert "\n" not in str(err.value)
