"""An RLHF run through the node and the CLI (scenarios/rlhf.yaml, shortened): its stages,
the figures it writes, the lineage every proposal certifies and `phalanx audit` re-checks,
and the one-line errors of an RLHF scenario that cannot run."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from phalanx.apps.cli import app
from phalanx.engine.node import Node
from phalanx.engine.rng import RngStreams
from phalanx.net.codec import encode_record
from phalanx.net.crypto import Identity
from phalanx.scenario.build import member_keys, node_config, node_services, workload_for
from phalanx.scenario.schema import parse_scenario

RLHF = Path(__file__).resolve().parents[1] / "scenarios" / "rlhf.yaml"


def short(**workload: Any) -> dict[str, Any]:
    """scenarios/rlhf.yaml at 4 nodes, 60 tasks and a few rounds per stage."""
    data = yaml.safe_load(RLHF.read_text())
    data["nodes"]["count"] = 4
    data["workload"].update(collect_rounds=12, reward_rounds=6, policy_rounds=5, **workload)
    w = data["workload"]
    data["training"].update(rounds=w["collect_rounds"] + w["reward_rounds"] + w["policy_rounds"],
                            batch=8, eval_every=4)
    data["curation"]["tasks"] = {"kind": "preferences", "count": 60, "gold": 6}
    data["curation"]["crowd"]["annotators"] = 6
    data["expect"] = {"honest_hashes_equal": True}
    return data


def cli(*args: object) -> tuple[int, str]:
    result = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "200"}).invoke(
        app, [str(a) for a in args])
    return result.exit_code, result.output


def write(folder: Path, data: dict[str, Any]) -> Path:
    path = folder / "rlhf.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("rlhf")
    code, output = cli("run", write(folder, short()), "--out", folder / "out")
    assert code == 0, output
    assert " ppo" in output and " collect" in output  # the stage of each round in the table
    return folder / "out"


def test_a_run_reports_its_stages_figures_and_final_models(run: Path) -> None:
    summary = json.loads((run / "summary.json").read_text())
    rlhf = summary["rlhf"]
    assert [s["stage"] for s in rlhf["stages"]] == ["collect", "reward", "ppo"]
    assert [(s["first_round"], s["last_round"]) for s in rlhf["stages"]] == [
        (0, 11), (12, 17), (18, 22)]
    assert len(rlhf["final_models"]) == 1  # every honest node ends on one of each
    assert set(rlhf["held_out"]) >= {"reward_accuracy", "true_score", "kl", "reward"}
    rounds = pl.read_parquet(run / "rounds.parquet")
    # each stage's own figures, from each node's own gradient of the round
    ppo = rounds.filter(pl.col("round") >= 18)
    assert ppo["metric_kl"].null_count() == 0 and ppo["metric_true_score"].null_count() == 0
    assert rounds.filter(pl.col("round").is_between(12, 17))["metric_pair_accuracy"].min() >= 0
    assert (run / "rlhf.png").stat().st_size > 10_000


def test_audit_replays_the_run_and_prints_the_certified_lineage(run: Path) -> None:
    code, output = cli("audit", run)
    assert code == 0, output
    summary = json.loads((run / "summary.json").read_text())
    final = summary["rlhf"]["final_models"][0]
    flat = " ".join(output.split())  # the console may wrap the long line
    line = flat[flat.index("lineage"):]
    assert final["reward_hash"][:16] in line and final["policy_hash"][:16] in output
    pairs = int(re.search(r"\((\d+) pairs\)", line).group(1))  # type: ignore[union-attr]
    assert pairs >= 30  # most of the 60 tasks were labelled and committed by round 11


def test_audit_refuses_a_log_whose_lineage_its_scenario_does_not_give(run: Path,
                                                                      tmp_path: Path) -> None:
    """Doctor the run's scenario (another KL coefficient): the first proposal's certified
    lineage no longer matches what the auditing node derives, and every log fails there."""
    doctored = tmp_path / "run"
    doctored.mkdir()
    for item in run.iterdir():
        (doctored / item.name).symlink_to(item)
    (doctored / "scenario.resolved.yaml").unlink()
    data = yaml.safe_load((run / "scenario.resolved.yaml").read_text())
    data["workload"]["kl_coef"] = 0.3
    (doctored / "scenario.resolved.yaml").write_text(yaml.safe_dump(data))
    code, output = cli("audit", doctored)
    assert code == 1 and "sync_bad_proposal" in output


def _node() -> Node:
    scenario = parse_scenario(short())
    _, opener, _ = member_keys(scenario)
    return Node(node_config(scenario, 0), Identity.generate(),
                workload_for(scenario, RngStreams(scenario.seed)), opener,
                services=node_services(scenario))


def test_a_voter_refuses_a_proposal_without_its_own_lineage() -> None:
    node = _node()
    rlhf = node.service("rlhf")
    assert rlhf is not None
    mine = rlhf.lineage()  # type: ignore[attr-defined]
    assert rlhf.contribution_problem(rlhf.contribution()) is None
    other_policy = type(mine)(mine.preferences_root, mine.preferences_digest, mine.preferences,
                              mine.reward_hash, bytes(32), mine.kl_coef)
    assert rlhf.contribution_problem(encode_record(other_policy)) == "proposal_rlhf_lineage"
    assert rlhf.contribution_problem(b"") == "proposal_rlhf_lineage_missing"
    assert rlhf.contribution_problem(b"\xc1junk") == "proposal_rlhf_lineage_malformed"


def test_the_context_holds_the_kl_coefficient_and_no_preferences_before_the_snapshot() -> None:
    node = _node()
    inputs = node.workload_inputs()
    assert inputs == {"kl_coef": pytest.approx(0.2)}
    groups = {g.name: g for g in node.workload.parameter_groups()}
    assert groups["reward"].first_round == 12 and groups["policy"].first_round == 18
    assert np.array_equal(node.params, node.workload.init_params())


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["curation"].update(tasks={"kind": "synthetic", "count": 10}),
     "workload rlhf takes its preferences from the curation platform"),
    (lambda d: d["training"].update(rounds=7), "but the RLHF stages last"),
    (lambda d: d["workload"].update(kl_target=2.0, kl_horizon=5),
     "workload.kl_horizon: 5 rollouts is less than one PPO round's 32"),
    (lambda d: d["workload"].update(method="dpo", dpo_variant="hinge"), "dpo_variant"),
    (lambda d: d["workload"].update(n_embd=33), "not a multiple of n_head"),
])
def test_an_rlhf_scenario_that_cannot_run_is_refused_in_one_line(
        tmp_path: Path, edit: Any, message: str) -> None:
    data = short()
    edit(data)
    code, output = cli("validate", write(tmp_path, data))
    assert code != 0 and message in output, output
    assert "Traceback" not in output
