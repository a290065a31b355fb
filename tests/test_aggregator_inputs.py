"""How many gradients each rule needs, and the scenarios and memberships that cannot feed it
(issue 17): a round is sure to get only n − f gradients, so a rule that needs more (Krum's
2f + 3 at n = 3f + 1) is refused up front with one line, its tolerance can be lowered with
`training.aggregator.f`, and pre-aggregation steps take parameters."""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from nodekit import Kit, config

from phalanx.engine.aggregate import (
    AGGREGATORS,
    AggregationContext,
    Aggregator,
    Bucketing,
    Median,
    PreAggregator,
    declared_need,
    make_aggregator,
    probe_inputs,
    required_inputs,
)
from phalanx.engine.node import Node
from phalanx.scenario.build import node_config
from phalanx.scenario.schema import ScenarioError, ScenarioRefused, parse_scenario

BASE: dict[str, Any] = {
    "name": "inputs",
    "nodes": {"count": 10},
    "workload": {"kind": "linear", "dim": 4},
    "training": {"rounds": 3},
}


def scenario(n: int = 10, **aggregator: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data["nodes"]["count"] = n
    data["training"]["aggregator"] = aggregator or "mean"
    return data


def refusal(data: dict[str, Any]) -> str:
    with pytest.raises(ScenarioRefused) as info:
        parse_scenario(data, "s.yaml")
    message = str(info.value)
    assert "\n" not in message and info.value.__cause__ is None
    return message.removeprefix("s.yaml: ")


# ---- each rule's declared need -------------------------------------------------------------

PARAMS: dict[str, list[dict[str, Any]]] = {
    "trimmed_mean": [{}, {"trim": 1}, {"trim": 4}],
    "multi_krum": [{}, {"m": 1}, {"m": 6}, {"m": 12}],
}
PRES: list[tuple[Any, ...]] = [(), ("nnm",), (("bucketing", {"s": 2}),),
                               (("bucketing", {"s": 3}), "nnm"), ("nnm", ("bucketing", {}))]


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_every_builtin_declares_what_the_probe_finds(name: str) -> None:
    for params, pre, f in itertools.product(PARAMS.get(name, [{}]), PRES, range(6)):
        rule = make_aggregator(name, f, pre, **params)
        need = declared_need(rule, f)
        assert need is not None, (name, params, pre)
        assert need.inputs == probe_inputs(rule, f, 80), (name, params, pre, f, need)
        assert rule.min_inputs(f) == need.inputs  # the method every rule answers


def test_the_known_formulas() -> None:
    def need(name: str, f: int, pre: tuple[Any, ...] = (), **params: Any) -> int:
        found = declared_need(make_aggregator(name, f, pre, **params), f)
        assert found is not None
        return found.inputs

    assert [need("krum", f) for f in range(4)] == [3, 5, 7, 9]
    assert need("multi_krum", 3, m=8) == 11  # m + f
    assert need("median", 3) == 7 and need("mean", 3) == 1
    assert need("median", 3, (("bucketing", {"s": 2}),)) == 13  # ⌈13/2⌉ = 7 means
    assert need("median", 10, (("bucketing", {"s": 2}),)) == 41
    assert need("mean", 2, ("nnm",)) == 5  # nnm itself needs n > 2f


@dataclass(frozen=True)
class Quorum(Aggregator):
    """A user rule that declares nothing: needs 3f + 1 inputs, found by the probe."""

    name = "quorum_mean"

    def aggregate_rows(self, x: np.ndarray, ctx: AggregationContext) -> np.ndarray:
        self.require(x.shape[0] >= 3 * ctx.f + 1, "needs 3f + 1 inputs")
        return x.mean(axis=0)


@dataclass(frozen=True)
class Declared(Quorum):
    name = "declared_quorum_mean"

    def min_inputs(self, f: int) -> int | None:
        return 3 * f + 1


@dataclass(frozen=True)
class Pairs(PreAggregator):
    """A user step that halves the count and declares it."""

    name = "pairs"

    def inputs_for(self, outputs: int, f: int) -> int | None:
        return 2 * outputs

    def transform(self, x: np.ndarray, ctx: AggregationContext) -> np.ndarray:
        return (x[0::2][: x.shape[0] // 2] + x[1::2]) / 2


def test_an_undeclared_rule_is_probed_and_a_declared_one_is_believed() -> None:
    assert declared_need(Quorum(), 2) is None and Quorum().min_inputs(2) is None
    probed = required_inputs(Quorum(), 2, 20)
    assert probed is not None and probed.inputs == 7
    assert required_inputs(Quorum(), 2, 6) is None  # more than it may try
    declared = required_inputs(Declared(), 2, 1)  # no probe: the declaration is enough
    assert declared is not None and declared.inputs == 7
    # steps compose through the rule they wrap: built-in around a user rule and the reverse
    around_user = declared_need(Bucketing(inner=Declared(), s=2), 2)
    assert around_user is not None and around_user.inputs == 13
    assert Bucketing(inner=Declared(), s=2).min_inputs(2) == 13
    user_step = declared_need(Pairs(inner=Median()), 2)
    assert user_step is not None and user_step.inputs == 10
    assert probe_inputs(Pairs(inner=Median()), 2, 20) == 10
    assert declared_need(Pairs(inner=Quorum()), 2) is None  # the probe then decides
    found = required_inputs(Pairs(inner=Quorum()), 2, 30)
    assert found is not None and found.inputs == 14


# ---- scenarios the members cannot feed -----------------------------------------------------


def test_krum_at_n_10_is_refused_with_one_line_that_says_what_works() -> None:
    assert refusal(scenario(kind="krum")) == (
        "training.aggregator: krum needs 2f + 3 = 9 inputs with f = 3, but only n − f = 7 are "
        "sure to arrive (f members may be silent or crashed); the smallest n that works is 12, "
        "or lower the rule's tolerance (training.aggregator.f: 2)")
    assert "the smallest n that works is 9" in refusal(scenario(7, kind="multi_krum"))
    for n, f_rule in ((10, 2), (12, None), (9, None), (31, 9)):
        kind = {"kind": "krum"} | ({"f": f_rule} if f_rule is not None else {})
        assert parse_scenario(scenario(n, **kind)).training.aggregator.kind == "krum"


@pytest.mark.parametrize(("n", "lower"), [(10, 1), (31, 5)])
def test_bucketing_by_2_is_refused_at_the_scenarios_f(n: int, lower: int) -> None:
    pre = [{"name": "bucketing", "s": 2}]
    message = refusal(scenario(n, kind="median", pre=pre))
    f = (n - 1) // 3
    assert message.startswith(
        f"training.aggregator: median after bucketing (s = 2) needs {4 * f + 1} inputs "
        f"(⌈{4 * f + 1}/2⌉ = {2 * f + 1} bucket means for median, which needs 2f + 1 = "
        f"{2 * f + 1} inputs) with f = {f}, but only n − f = {n - f} are sure to arrive"), message
    # no n fits bucketing by 2 in front of a 2f + 1 rule while f follows n; a lower f does
    assert message.endswith("no n works while the rule tolerates f = ⌊(n − 1)/3⌋; lower the "
                            f"rule's tolerance (training.aggregator.f: {lower})"), message
    parse_scenario(scenario(n, kind="median", pre=pre, f=lower))
    assert "training.aggregator.f: " in refusal(scenario(n, kind="median", pre=pre, f=lower + 1))


def test_multi_krum_with_m_needs_m_plus_f() -> None:
    message = refusal(scenario(kind="multi_krum", params={"m": 6}, f=2))
    assert message == (
        "training.aggregator: multi_krum (m = 6) needs m + f = 8 inputs with "
        "training.aggregator.f = 2, but only n − f = 10 − 3 = 7 are sure to arrive (f members "
        "may be silent or crashed); the smallest n that works is 11, or lower the rule's "
        "tolerance (training.aggregator.f: 1)")
    parse_scenario(scenario(kind="multi_krum", params={"m": 6}, f=1))
    # an m that no lower f rescues: only more members
    assert refusal(scenario(kind="multi_krum", params={"m": 9})).endswith(
        "the smallest n that works is 21")  # f = 6: 9 + 6 = n − f


def test_a_refusal_is_a_scenario_error_and_other_mistakes_are_not_refusals() -> None:
    assert issubclass(ScenarioRefused, ScenarioError)
    with pytest.raises(ScenarioError) as info:
        parse_scenario(scenario(kind="krum", f=4))
    assert not isinstance(info.value, ScenarioRefused)
    assert "training.aggregator.f: 4 is above the scenario's f = 3" in str(info.value)


# ---- the rule's tolerance and the steps' parameters reach the node -------------------------


def test_aggregator_f_and_step_parameters_reach_the_node_config() -> None:
    s = parse_scenario(scenario(kind="krum", f=2, pre=[{"name": "bucketing", "s": 1}, "nnm"]))
    c = node_config(s, 0)
    assert c.aggregator_f == 2
    assert c.pre_aggregation == (("bucketing", (("s", 1),)), "nnm")
    # bare names give the config they gave before the parameters existed
    plain = node_config(parse_scenario(scenario(kind="median", pre=["nnm", "bucketing"], f=1)),
                        0)
    assert plain.pre_aggregation == ("nnm", "bucketing") and plain.aggregator_f == 1
    assert node_config(parse_scenario(scenario(kind="median", pre=["nnm"])), 0).aggregator_f is None
    # the resolved scenario loads back as the same scenario
    assert parse_scenario(s.model_dump(mode="json")) == s


def member(n: int, **kw: Any) -> Node:
    kit = Kit(17)
    return Node(config(0, 4, members=tuple(range(n)), **kw), kit.ids[0], kit.workload, kit.open)


def test_membership_builds_the_rule_for_its_tolerance() -> None:
    m = member(10, aggregator="krum", aggregator_f=2).membership
    assert (m.f, m.rule_f, m.min_set) == (3, 2, 7)
    assert m.aggregate == make_aggregator("krum", 2)
    m = member(10, aggregator="median", pre_aggregation=(("bucketing", (("s", 2),)),),
               aggregator_f=1).membership
    assert (m.rule_f, m.min_set) == (1, 7)
    assert m.aggregate == make_aggregator("median", 1, [("bucketing", {"s": 2})])
    # default: the membership's own f, as before
    m = member(10, aggregator="median").membership
    assert (m.f, m.rule_f, m.min_set) == (3, 3, 7)
    # the chosen tolerance never exceeds what the membership tolerates (here 1 of 4)
    m = member(4, aggregator="median", aggregator_f=2).membership
    assert (m.f, m.rule_f) == (1, 1)


def test_no_membership_change_can_leave_the_rule_short_of_sure_inputs() -> None:
    krum = member(9, aggregator="krum").membership  # f = 2: 2f + 3 = 7 = n − f
    assert [n for n in range(1, 16) if krum._fits(n)] == [3, 6, 9, 12, 15]
    assert krum.change_problem("leave") == (
        "leaving would leave 8 members, whose n − f sure gradients are fewer than krum needs")
    lowered = member(9, aggregator="krum", aggregator_f=2).membership
    assert all(lowered._fits(n) for n in range(9, 40))  # 2f_rule + 3 = 7 <= n − f from 9 up
    assert not lowered._fits(8)
    median = member(10, aggregator="median").membership
    assert all(median._fits(n) for n in range(1, 40))  # 2f + 1 <= n − f always
