"""The simulator's measured cost model (sim/costs.py, sim/costed.py): a costs file is
validated (a bad one is one error line), a run with it is a pure function of (scenario, seed,
file), it changes the modelled time and nothing else, and the default run is untouched."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from test_cli import invoke, one_error_line

from phalanx.apps.calibrate import fit_linear, measure_components, node_costs
from phalanx.apps.runner import run_scenario
from phalanx.engine.events import Received
from phalanx.net.envelope import peek_kind
from phalanx.scenario.schema import parse_scenario
from phalanx.sim.costs import (
    FORMAT,
    CostError,
    CpuPool,
    event_kind,
    parse_costs,
    workload_key,
)

TINY = parse_scenario({
    "name": "tiny-costs", "seed": 4, "nodes": {"count": 4},
    "workload": {"kind": "linear", "dim": 8, "samples_per_node": 64, "eval_samples": 64},
    "training": {"rounds": 6, "step_time": 0.01}, "links": {"latency": 0.002}})


def costs(**changes: Any) -> dict[str, Any]:
    key = workload_key(TINY)
    data: dict[str, Any] = {
        "format": FORMAT, "cores": 2, "gradient_seconds": {key: 0.004},
        "handle_seconds": {key: {"frame/Gradient": 2e-4, "frame/Vote": 1e-4,
                                 "ComputeDone": 3e-4}},
        "transport_send": {"base": 5e-5, "per_byte": 1e-9},
        "transport_recv": {"base": 5e-5, "per_byte": 1e-9},
        "persist_cpu": {"base": 2e-4, "per_byte": 1e-9},
        "flush": {"base": 0.002, "per_byte": 1e-8}, "switch_seconds": 5e-5,
        "transport_latency": 5e-5}
    data.update(changes)
    return data


BAD = {
    "not_json": ("{", r"invalid JSON"),
    "a_list": ("[]", r"expected a JSON object"),
    "wrong_format": (json.dumps(costs(format="other")), r"format must be"),
    "zero_cores": (json.dumps(costs(cores=0)), r"cores must be an integer"),
    "negative": (json.dumps(costs(flush={"base": -1, "per_byte": 0})),
                 r"flush\.base must be a finite number"),
    "missing_part": (json.dumps(costs(transport_recv={"base": 0.0})), r"transport_recv must be"),
    "old_format": (json.dumps(costs(format="phalanx-costs/1")), r"format must be"),
    "flat_handling": (json.dumps(costs(handle_seconds={"x": 0.1})), r"handle_seconds must be"),
    "negative_load": (json.dumps(costs(background_load=-2)), r"background_load must be"),
    "other_workload": (json.dumps(costs(gradient_seconds={"x": 0.1})),
                       r"no measured gradient/handling time"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_costs_file_is_one_error_line(tmp_path: Path, case: str) -> None:
    text, pattern = BAD[case]
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(TINY.resolved_yaml())
    path = tmp_path / "costs.json"
    path.write_text(text)
    result = invoke("run", scenario, "--costs", path, "--out", tmp_path / "out", "-q")
    assert result.exit_code == 2, result.output
    line = one_error_line(result.stderr)
    assert re.search(pattern, line), line
    assert not (tmp_path / "out").exists()
    missing = invoke("run", scenario, "--costs", tmp_path / "nope.json", "-q")
    assert missing.exit_code == 2 and "cannot read" in one_error_line(missing.stderr)


def test_a_run_with_a_costs_file_is_deterministic_and_models_the_costs() -> None:
    model = parse_costs(costs(), "costs.json")
    a, b = run_scenario(TINY, costs=model), run_scenario(TINY, costs=model)
    assert a.rounds.equals(b.rounds) and a.events.equals(b.events)
    plain = run_scenario(TINY)
    assert "cost_model" not in plain.summary and a.summary["cost_model"] == "costs.json"
    # the same rounds and models, other times: the cost model changes only when things happen
    assert a.rounds["model_hash"].to_list() == plain.rounds["model_hash"].to_list()
    assert a.rounds["time"].to_list() != plain.rounds["time"].to_list()
    slower = run_scenario(TINY, costs=parse_costs(costs(flush={"base": 0.05, "per_byte": 0.0})))
    assert slower.rounds["time"].max() > a.rounds["time"].max() + 6 * 0.05


def test_cores_are_shared_and_linear_fits_hold() -> None:
    pool = CpuPool(2)
    assert [pool.run(0.0, 1.0) for _ in range(3)] == [1.0, 1.0, 2.0]
    assert pool.run(5.0, 0.0) == 5.0
    shared = CpuPool(2, parse_costs(costs(background_load=2.0)).speed)  # half of each core
    assert shared.run(0.0, 1.0) == 2.0
    fit = fit_linear([(0, 1.0), (10, 2.0), (20, 3.0)])
    assert fit == pytest.approx({"base": 1.0, "per_byte": 0.1})
    with pytest.raises(CostError, match="cores"):
        parse_costs(costs(cores=True))


def test_events_are_priced_by_kind_and_an_unseen_kind_by_the_median_frame() -> None:
    model = parse_costs(costs())
    handling = model.for_workload(workload_key(TINY))[1]
    assert handling("frame/Vote") == 1e-4 and handling("ComputeDone") == 3e-4
    assert handling("frame/Proposal") == 2e-4  # median of the measured frame kinds
    assert handling("TimerFired") == 2e-4
    assert event_kind(Received(b"\x00garbage")) == "frame/unreadable"
    assert peek_kind(b"") is None and peek_kind(b"\x98\x01") is None
    # a slower vote makes every round slower: votes are on the critical path
    fast = run_scenario(TINY, costs=model)
    slow = run_scenario(TINY, costs=parse_costs(costs(handle_seconds={
        workload_key(TINY): {"frame/Gradient": 2e-4, "frame/Vote": 0.02, "ComputeDone": 3e-4}})))
    assert slow.rounds["time"].max() > fast.rounds["time"].max() + 6 * 0.02


def test_calibrate_measures_the_cores_handling_of_each_event_kind() -> None:
    measured = node_costs(TINY)
    for kind in ("Started", "ComputeDone", "frame/Gradient", "frame/Proposal", "frame/Vote"):
        assert 0 < measured["handle"][kind] < 1.0, (kind, measured["handle"])
    # every node's transactions: real records, with their sizes as the simulator counts them
    sizes = [size for size, _ in measured["transactions"]]
    assert len(sizes) >= 4 * TINY.training.rounds and min(sizes) > 0
    assert parse_costs(costs(handle_seconds={workload_key(TINY): measured["handle"]},
                             persist_cpu=fit_linear(measured["transactions"])))


def test_measured_components_make_a_costs_file_the_simulator_runs() -> None:
    measured = measure_components([TINY], repeats=5, window=0.02)
    model = parse_costs(json.loads(json.dumps(measured)), "measured")
    key = workload_key(TINY)
    gradient, handling = model.for_workload(key)
    assert 0 < gradient < 1 and measured["gradient_seconds_back_to_back"][key] > 0
    assert handling("frame/Vote") > 0 and model.transport_send(256) > 0
    assert model.persist_cpu(1000) > 0 and model.switch_seconds >= 0
    probe = measured["switch_probe"]  # 4 node processes taking turns, 2 at a time
    assert (probe["processes"], probe["tokens"]) == (4, 2) and probe["turns"] >= 10
    assert measured["transport_link"]["stack"] == "TcpTransport + link emulation"
    run = run_scenario(TINY, costs=model)
    assert run.summary["min_rounds_committed"] == TINY.training.rounds
