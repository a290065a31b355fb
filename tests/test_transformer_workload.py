"""The transformer trained through the BFT round (`scenarios/transformer_byzantine.yaml`, on a
reduced number of rounds): honest nodes agree on every round's model and the model learns,
with and without the scenario's Byzantine nodes."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import yaml
from rich.console import Console

from phalanx.apps.runner import RoundPrinter, run_sim
from phalanx.sim.scenario import ScenarioError, parse_scenario

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "transformer_byzantine.yaml"
ROUNDS = 40


def run(attack: bool) -> pl.DataFrame:
    data = yaml.safe_load(SCENARIO.read_text())
    data["training"] = {**data["training"], "rounds": ROUNDS, "eval_every": 20}
    data["expect"] = {"honest_hashes_equal": True, "rounds_committed_at_least": ROUNDS}
    if not attack:
        data.pop("byzantine")
    scenario = parse_scenario(data)
    result = run_sim(scenario, RoundPrinter(scenario, Console(quiet=True), enabled=False))
    assert result.ok, result.failures
    return result.rounds.filter(~pl.col("byzantine"))


@pytest.mark.parametrize("attack", [False, True])
def test_transformer_trains_through_consensus(attack: bool) -> None:
    rounds = run(attack)
    evals = (rounds.filter(pl.col("eval_loss").is_not_null()).group_by("round")
             .agg(pl.col("eval_loss").n_unique().alias("k"), pl.col("eval_loss").first(),
                  pl.col("eval_excess_loss").first()).sort("round"))
    assert evals["k"].to_list() == [1, 1]  # one model per round among the honest nodes
    first, last = evals["eval_loss"].to_list()
    assert last < first  # it learns
    assert all(x > 0 for x in evals["eval_excess_loss"].to_list())  # never below the entropy rate


def test_a_transformer_workload_that_cannot_be_built_is_a_one_line_error() -> None:
    data = yaml.safe_load(SCENARIO.read_text())
    data["workload"] = {**data["workload"], "n_embd": 30, "n_head": 4}
    with pytest.raises(ScenarioError, match="workload") as err:
        parse_scenario(data)
    assert "\n" not in str(err.value)
