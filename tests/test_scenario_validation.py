"""Scenario validation: every malformed scenario is one `ScenarioError` line naming the field.

Each bad case is a small change to a valid base scenario (the content of quickstart.yaml); the
message must be a single line that holds the field path and, for enum-like fields, the allowed
values. Loading covers YAML syntax errors, unreadable files and non-mapping documents; every
shipped scenario must load and `resolved_yaml()` must round-trip.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import phalanx
from phalanx.scenario.schema import Scenario, ScenarioError, load_scenario, parse_scenario

SCENARIOS_DIR = Path(phalanx.__file__).resolve().parent / "scenarios"

# quickstart.yaml's content as a dict (the file is not read so this base never drifts silently)
BASE: dict[str, Any] = {
    "name": "quickstart",
    "description": "4 nodes, complete topology, mlp workload, no faults",
    "seed": 7,
    "nodes": {"count": 4},
    "topology": {"kind": "complete"},
    "links": {"latency": 0.005, "jitter": 0.002, "bandwidth": 100.0e6},
    "workload": {"kind": "mlp", "features": 16, "classes": 4, "hidden": 32},
    "training": {"rounds": 60, "lr": 0.1, "momentum": 0.9, "batch": 64, "step_time": 0.05},
    "expect": {"honest_hashes_equal": True, "rounds_committed_at_least": 60,
               "final_accuracy_above": 0.7},
}

DELETE = object()
ADAPTIVE = {"target_seconds": 0.05, "min_ratio": 0.01, "max_ratio": 0.1}

TOPOLOGY_KINDS = ["complete", "ring", "random_regular", "watts_strogatz", "barabasi_albert",
                  "geo_clusters"]
FAULT_KINDS = ["crash", "partition", "isolate", "one_way", "bridge", "degrade", "slow", "join",
               "leave"]


def variant(**changes: Any) -> dict[str, Any]:
    """BASE with changes at dotted paths (`links__latency` means links.latency)."""
    data = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *head, last = dotted.split("__")
        node = data
        for key in head:
            node = node.setdefault(key, {})
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return data


def crash(**fields: Any) -> dict[str, Any]:
    return variant(faults=[{"kind": "crash", "nodes": [1], **fields}])


# (id, scenario dict, regex the message must match (the field path), allowed values to list)
CASES: list[tuple[str, dict[str, Any], str, list[str]]] = [
    ("count_is_a_word", variant(nodes__count="four"), r"nodes\.count\b.*'four'", []),
    ("count_zero", variant(nodes__count=0), r"nodes\.count\b", []),
    ("count_missing", variant(nodes__count=DELETE), r"nodes\.count: .*required", []),
    ("nodes_not_a_mapping", variant(nodes=4), r"nodes: ", []),
    ("speeds_node_out_of_range", variant(nodes__speeds={9: 2.0}), r"nodes\.speeds\b.*9", []),
    ("speeds_negative", variant(nodes__speeds={1: -2.0}), r"nodes\.speeds\.1\b", []),
    ("unknown_top_level_field", variant(colour="red"), r"colour\b.*unknown field", []),
    ("unknown_field_in_links", variant(links__latncy=0.1), r"links\.latncy\b", []),
    ("unknown_field_in_workload", variant(workload__hiden=8),
     r"workload\.(mlp\.)?hiden\b", []),
    ("negative_latency", variant(links__latency=-0.1), r"links\.latency\b.*-0\.1", []),
    ("latency_is_a_word", variant(links__latency="fast"), r"links\.latency\b.*'fast'", []),
    ("loss_above_one", variant(links__loss=1.5), r"links\.loss\b.*1\.5", []),
    ("bandwidth_zero", variant(links__bandwidth=0), r"links\.bandwidth\b", []),
    ("unknown_jitter_dist", variant(links__jitter_dist="cauchy"), r"links\.jitter_dist\b",
     ["uniform", "normal", "exponential"]),
    ("unknown_topology_kind", variant(topology={"kind": "star"}), r"topology\b.*'star'",
     TOPOLOGY_KINDS),
    ("topology_not_a_mapping", variant(topology="complete"), r"topology: ", []),
    ("random_regular_degree_1", variant(topology={"kind": "random_regular", "degree": 1}),
     r"topology\.(random_regular\.)?degree\b", []),
    ("watts_strogatz_p_above_one", variant(topology={"kind": "watts_strogatz", "p": 2}),
     r"topology\.(watts_strogatz\.)?p\b", []),
    ("geo_negative_inter_latency",
     variant(topology={"kind": "geo_clusters", "inter_latency": -1}),
     r"topology\.(geo_clusters\.)?inter_latency\b", []),
    ("workload_kind_missing", variant(workload={"features": 16}), r"workload\b.*kind", []),
    ("unknown_workload_kind", variant(workload={"kind": "cnn"}), r"workload\b.*'cnn'",
     ["linear", "mlp"]),
    ("training_missing", variant(training=DELETE), r"training: .*required", []),
    ("rounds_zero", variant(training__rounds=0), r"training\.rounds\b", []),
    ("momentum_one", variant(training__momentum=1.0), r"training\.momentum\b", []),
    ("unknown_aggregator", variant(training__aggregator="krumm"), r"training\.aggregator\b",
     ["mean", "multi_krum"]),
    ("aggregator_needs_more_inputs", variant(training__aggregator="krum"),
     r"training\.aggregator: krum needs 2f \+ 3 = 5 inputs with f = 1, but only n − f = 3 are "
     r"sure to arrive .*the smallest n that works is 6, or lower the rule's tolerance "
     r"\(training\.aggregator\.f: 0\)$", []),
    ("aggregator_f_above_the_scenarios",
     variant(training__aggregator={"kind": "median", "f": 2}),
     r"training\.aggregator\.f: 2 is above the scenario's f = 1.*allowed: 0 to 1", []),
    ("aggregator_f_negative", variant(training__aggregator={"kind": "median", "f": -1}),
     r"training\.aggregator\.f\b", []),
    ("aggregator_f_not_an_integer", variant(training__aggregator={"kind": "median", "f": 0.5}),
     r"training\.aggregator\.f\b", []),
    ("pre_step_unknown_parameter", variant(training__aggregator={
        "kind": "median", "pre": [{"name": "bucketing", "size": 2}]}),
     r"training\.aggregator\.pre\.0: bucketing has no parameter 'size'", ["s"]),
    ("pre_step_bad_value", variant(training__aggregator={
        "kind": "median", "pre": ["nnm", {"name": "bucketing", "s": 0}]}),
     r"training\.aggregator\.pre\.1: bucketing: s must be an integer >= 1; got 0", []),
    ("pre_step_without_name", variant(training__aggregator={"kind": "median",
                                                             "pre": [{"s": 2}]}),
     r"training\.aggregator\.pre\.0: a step is a name or a mapping of `name`", []),
    ("pre_step_unknown", variant(training__aggregator={"kind": "median",
                                                        "pre": [{"name": "bucket"}]}),
     r"training\.aggregator\.pre\.0: unknown pre-aggregation step 'bucket'",
     ["bucketing", "nnm"]),
    ("unknown_pre_aggregation", variant(training__aggregator={"kind": "median", "pre": ["nn"]}),
     r"training\.aggregator\b", ["bucketing", "nnm"]),
    ("unknown_aggregator_param",
     variant(training__aggregator={"kind": "trimmed_mean", "params": {"trimm": 1}}),
     r"training\.aggregator\b", ["trim"]),
    ("view_timeout_not_above_round_timeout",
     variant(training__round_timeout=2.0, training__view_timeout=2.0),
     r"training\b.*view_timeout.*round_timeout", []),
    ("fault_with_at_and_at_round", crash(at=1.0, at_round=2), r"faults\.0\b.*at_round", []),
    ("fault_with_neither_trigger", crash(), r"faults\.0\b.*at_round", []),
    ("crash_of_node_99", variant(faults=[{"kind": "crash", "nodes": [99], "at": 1.0}]),
     r"faults\.0\b.*99.*0\.\.3", []),
    ("partition_groups_not_a_list",
     variant(faults=[{"kind": "partition", "groups": "abc", "at": 1.0}]),
     r"faults\.0\.(partition\.)?groups\b", []),
    ("bridge_with_one_side", variant(faults=[{"kind": "bridge", "sides": [[0]], "at": 1.0}]),
     r"faults\.0\.(bridge\.)?sides\b", []),
    ("slow_factor_not_above_one",
     variant(faults=[{"kind": "slow", "nodes": [1], "factor": 1.0, "at": 1.0}]),
     r"faults\.0\.(slow\.)?factor\b", []),
    ("unknown_fault_kind", variant(faults=[{"kind": "meteor", "at": 1.0}]),
     r"faults\.0\b.*'meteor'", FAULT_KINDS),
    ("faults_not_a_list", variant(faults={"kind": "crash"}), r"faults: ", []),
    ("byzantine_more_than_f", variant(byzantine=[{"nodes": [0, 1], "behaviour": "silent"}]),
     r"byzantine\b.*\bf=1\b.*unsafe", []),
    ("byzantine_unknown_behaviour", variant(byzantine=[{"nodes": [0], "behaviour": "evil"}]),
     r"byzantine\.0\.behaviour\b.*'evil'", ["honest", "silent"]),
    ("byzantine_negative_node", variant(byzantine=[{"nodes": [-1], "behaviour": "silent"}]),
     r"byzantine\.0\.nodes\.0\b", []),
    ("byzantine_unknown_param",
     variant(byzantine=[{"nodes": [0], "behaviour": "ipm", "params": {"eps": 1}}]),
     r"byzantine\.0\b.*'eps'", ["epsilon"]),
    ("byzantine_bad_param_value",
     variant(byzantine=[{"nodes": [0], "behaviour": "ipm", "params": {"epsilon": -1}}]),
     r"byzantine\.0\b.*epsilon", []),
    ("nemesis_unknown_fault_kind", variant(nemesis={"kinds": ["meteor"]}),
     r"nemesis\.kinds\b.*'meteor'", ["crash", "isolate", "partition", "slow", "degrade"]),
    ("nemesis_max_faulty_above_f", variant(nemesis={"kinds": ["crash"], "max_faulty": 3}),
     r"nemesis\.max_faulty\b.*\bf=1\b", []),
    ("accuracy_above_one", variant(expect__final_accuracy_above=2),
     r"expect\.final_accuracy_above\b", []),
    ("unknown_expectation", variant(expect__final_acuracy_above=0.5),
     r"expect\.final_acuracy_above\b", []),
    ("seed_float_string", variant(seed="1.5"), r"seed\b.*'1\.5'", []),
    ("seed_fractional", variant(seed=1.5), r"seed\b.*1\.5", []),
    ("unknown_record", variant(record="some"), r"record\b.*'some'", ["all", "drops", "none"]),
    ("port_out_of_range", variant(real__base_port=70000), r"real\.base_port\b.*70000", []),
    ("unsafe_not_a_bool", variant(unsafe="maybe"), r"unsafe\b.*'maybe'", []),
    ("name_missing", variant(name=DELETE), r"name: .*required", []),
    # user text with line breaks must not break the one-line message
    ("unknown_key_with_newline", {**copy.deepcopy(BASE), "bad\nkey": 1}, r"bad\\nkey\b", []),
    ("topology_kind_with_newline", variant(topology={"kind": "st\nar"}), r"topology\b",
     TOPOLOGY_KINDS),
    ("seed_negative", variant(seed=-5), r"seed\b.*-5", []),
    ("seed_past_64_bits", variant(seed=10**24), r"seed\b", []),
    ("bandwidth_infinite", variant(links__bandwidth=float("inf")), r"links\.bandwidth\b.*finite",
     []),
    ("lr_nan", variant(training__lr=float("nan")), r"training\.lr\b", []),
    ("partition_node_twice", variant(faults=[{"kind": "partition", "at": 1.0,
                                              "groups": [[0, 1], [1, 2]]}]),
     r"faults\.0\.(partition\.)?groups\b.*\[1\]", []),
    ("bridge_sides_overlap", variant(faults=[{"kind": "bridge", "at": 1.0,
                                              "sides": [[0, 1], [1, 2]]}]),
     r"faults\.0\.(bridge\.)?sides\b", []),
    ("real_ports_past_65535", variant(real={"base_port": 65534}), r"real\.base_port\b", []),
    # membership changes
    ("observer_out_of_range", variant(nodes__observers=[7]), r"nodes\.observers\b.*7", []),
    ("everyone_an_observer", variant(nodes__observers=[0, 1, 2, 3]),
     r"nodes\.observers\b.*needs members", []),
    ("member_asked_to_join", variant(nodes__observers=[3], faults=[
        {"kind": "join", "nodes": [1], "at_round": 2}]), r"faults\.0\b.*only observers join",
     []),
    ("join_with_a_duration", variant(nodes__observers=[3], faults=[
        {"kind": "join", "nodes": [3], "at_round": 2, "duration": 1.0}]),
     r"faults\.0\.join\b.*no duration", []),
    ("leave_of_node_9", variant(faults=[{"kind": "leave", "nodes": [9], "at_round": 2}]),
     r"faults\.0\b.*9.*0\.\.3", []),
    ("members_at_end_not_ids", variant(expect__members_at_end="all"),
     r"expect\.members_at_end\b", []),
    # compression
    ("unknown_compression", variant(compression={"method": "zip"}), r"compression\b.*zip", []),
    ("topk_ratio_above_one", variant(compression={"method": "topk", "params": {"ratio": 2}}),
     r"compression\b.*ratio", []),
    ("adaptive_sign", variant(compression={"method": "sign", "adaptive": ADAPTIVE}),
     r"compression\b.*adaptive.*top-k.*sign", []),
    ("adaptive_with_a_ratio", variant(compression={
        "method": "topk", "params": {"ratio": 0.1}, "adaptive": ADAPTIVE}),
     r"compression\b.*no ratio parameter", []),
    ("adaptive_bounds_reversed", variant(compression={
        "method": "topk", "adaptive": {**ADAPTIVE, "min_ratio": 0.5}}),
     r"compression\.adaptive\b.*min_ratio 0\.5 is above max_ratio 0\.1", []),
    ("sender_adam_with_adam", variant(training__worker_optimizer="adam",
                                      training__optimizer="adam"),
     r"training\b.*worker_optimizer adam.*optimizer sgd", []),
    ("feedback_decay_above_one", variant(compression={"method": "topk", "feedback_decay": 2}),
     r"compression\.feedback_decay\b", []),
    ("adaptive_target_zero", variant(compression={
        "method": "topk", "adaptive": {**ADAPTIVE, "target_seconds": 0}}),
     r"compression\.adaptive\.target_seconds\b", []),
]


def test_base_is_valid_and_matches_quickstart() -> None:
    assert parse_scenario(BASE) == load_scenario(SCENARIOS_DIR / "quickstart.yaml")


@pytest.mark.parametrize(("data", "pattern", "allowed"),
                         [pytest.param(d, p, a, id=i) for i, d, p, a in CASES])
def test_malformed_scenario_is_one_line_naming_the_field(
        data: dict[str, Any], pattern: str, allowed: list[str]) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(data, "bad.yaml")
    message = str(info.value)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith("bad.yaml: "), message
    assert re.search(pattern, message, re.IGNORECASE), f"{pattern!r} not in {message!r}"
    for value in allowed:  # quoted by pydantic's literal errors, bare in our own lists
        assert re.search(rf"(?<![\w']){value}(?![\w'])|'{value}'", message), (
            f"allowed value {value!r} missing from {message!r}")
    assert info.value.__cause__ is None  # raised `from None`: no chained pydantic dump


def test_enough_distinct_cases() -> None:
    assert len(CASES) >= 14
    assert len({case_id for case_id, *_ in CASES}) == len(CASES)


def test_several_errors_one_line_each() -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(variant(nodes={"count": "x", "speed": "y"}, links__loss=5), "s.yaml")
    assert [line.split(":")[1].strip() for line in info.value.lines] == [
        "nodes.count", "nodes.speed", "links.loss"]
    assert str(info.value) == "\n".join(info.value.lines)


def test_unsafe_allows_more_than_f_byzantine() -> None:
    data = variant(byzantine=[{"nodes": [0, 1], "behaviour": "silent"}], unsafe=True)
    assert parse_scenario(data).byzantine_nodes() == {0, 1}


@pytest.mark.parametrize("data", [[1, 2], "text", 42, None])
def test_non_mapping_document(data: Any) -> None:
    with pytest.raises(ScenarioError, match=r"^src: expected a mapping") as info:
        parse_scenario(data, "src")
    assert "\n" not in str(info.value)


# ---- loading files -----------------------------------------------------------------------------


def load_error(path: Path) -> str:
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    assert info.value.__cause__ is None
    return message


@pytest.mark.parametrize(("text", "line"), [
    ("name: x\nseed: 1\n\tnodes: 4\n", 3),  # a tab cannot start a token
    ("name: x\nnodes:\n  count: 4\n    bad: indent\n", 4),  # mapping values not allowed here
    ("name: x\nseed: [1, 2\nnodes: {count: 4}\n", 3),  # unclosed flow sequence
])
def test_yaml_syntax_error_names_the_line(tmp_path: Path, text: str, line: int) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    message = load_error(path)
    assert f"line {line}:" in message and "invalid YAML" in message, message


def test_yaml_python_tag_is_refused_not_run(tmp_path: Path) -> None:
    path = tmp_path / "tag.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    assert "invalid YAML" in load_error(path)


def test_missing_file(tmp_path: Path) -> None:
    message = load_error(tmp_path / "nope.yaml")
    assert "cannot read" in message and "No such file" in message


def test_directory_instead_of_file(tmp_path: Path) -> None:
    assert "cannot read" in load_error(tmp_path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfename: x\n")
    assert "UTF-8" in load_error(path)


@pytest.mark.parametrize("text", ["- a\n- b\n", "", "just text\n"], ids=["list", "empty", "str"])
def test_top_level_not_a_mapping(tmp_path: Path, text: str) -> None:
    path = tmp_path / "list.yaml"
    path.write_text(text)
    assert "expected a mapping" in load_error(path)


def test_bad_field_in_file_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(variant(links__latency=-1)))
    assert re.search(r"links\.latency\b.*-1", load_error(path))


def test_seed_override(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert load_scenario(path).seed == 7
    assert load_scenario(path, seed=42).seed == 42


# ---- shipped scenarios and the resolved echo ---------------------------------------------------

SHIPPED = sorted(SCENARIOS_DIR.glob("*.yaml"))


def test_shipped_scenarios_found() -> None:
    assert {"quickstart", "partition", "crash_restart"} <= {p.stem for p in SHIPPED}


def assert_round_trips(scenario: Scenario) -> None:
    text = scenario.resolved_yaml()
    echoed = yaml.safe_load(text)
    assert list(echoed) == list(Scenario.model_fields)  # every section, defaults filled in
    assert parse_scenario(echoed) == scenario
    assert parse_scenario(echoed).resolved_yaml() == text


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_scenario_loads_and_round_trips(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.name
    assert_round_trips(scenario)


ROUND_TRIP_VARIANTS = {
    **{f"topology_{kind}": variant(topology={"kind": kind}) for kind in TOPOLOGY_KINDS},
    "workload_linear": variant(workload={"kind": "linear", "dim": 3}),
    "speeds_and_byzantine": variant(nodes={"count": 7, "speeds": {2: 0.5, 6: 3.0}},
                                    byzantine=[{"nodes": [3, 5], "behaviour": "silent",
                                                "from_round": 2}]),
    "every_fault_kind": variant(nodes__count=7, faults=[
        {"kind": "crash", "nodes": [1], "at": 1.0, "duration": 2.0, "keep_disk": False},
        {"kind": "partition", "groups": [[0, 1], [2, 3]], "at_round": 3},
        {"kind": "isolate", "nodes": [2], "at": 0.5},
        {"kind": "one_way", "source": [0], "target": [1, 2], "at": 0.0},
        {"kind": "bridge", "sides": [[0], [1]], "at_round": 0},
        {"kind": "degrade", "extra_latency": 0.1, "loss": 0.2, "at": 2.0},
        {"kind": "slow", "nodes": [3], "factor": 4.0, "at": 1.0},
    ]),
    "nemesis_and_unbounded_links": variant(
        nemesis={"kinds": ["crash", "slow"], "stop": 9.0, "max_faulty": 1},
        links={"bandwidth": None, "jitter_dist": "exponential"}, record="drops",
        training__max_time=50.0),
}


@pytest.mark.parametrize("data", ROUND_TRIP_VARIANTS.values(), ids=ROUND_TRIP_VARIANTS.keys())
def test_resolved_yaml_round_trips(data: dict[str, Any]) -> None:
    assert_round_trips(parse_scenario(data))
