"""A seed sweep in the style of deterministic-simulation testing: random fault mixes, each a
pure function of its seed, must end with every running honest node on one model after every
planned round. A failing seed replays exactly with `phalanx.run(random_scenario(seed))`."""

from __future__ import annotations

import random
from typing import Any

import pytest

import phalanx
from phalanx.scenario.schema import Scenario, parse_scenario


def random_fault(r: random.Random, n: int, f: int, rounds: int) -> dict[str, Any]:
    kind = r.choice(["crash", "crash", "partition", "isolate", "one_way", "degrade", "slow"])
    when = ({"at": round(r.uniform(0.1, 2.0), 2)} if r.random() < 0.5
            else {"at_round": r.randrange(rounds - 1)})
    targets = sorted(r.sample(range(n), r.randint(1, f)))
    fault: dict[str, Any] = {"kind": kind, "duration": round(r.uniform(0.3, 2.5), 2), **when}
    match kind:
        case "crash":
            fault |= {"nodes": targets, "keep_disk": r.random() < 0.5}
        case "partition":
            fault |= {"groups": [targets]}
        case "one_way":
            rest = [i for i in range(n) if i not in targets]
            fault |= {"source": targets, "target": sorted(r.sample(rest, r.randint(1, len(rest))))}
        case "degrade":
            fault |= {"nodes": targets, "extra_latency": r.choice([0.01, 0.1]),
                      "loss": r.choice([0.1, 0.3])}
        case "slow":
            fault |= {"nodes": targets, "factor": r.choice([3, 20])}
        case _:
            fault |= {"nodes": targets}
    return fault


def random_scenario(seed: int) -> Scenario:
    r = random.Random(seed)
    n = r.randint(4, 9)
    f, rounds = (n - 1) // 3, r.choice([10, 15])
    return parse_scenario({
        "name": f"sweep-{seed}", "seed": seed, "nodes": {"count": n}, "record": "none",
        "topology": r.choice([{"kind": "complete"}, {"kind": "geo_clusters", "clusters": 2,
                                                     "inter_latency": 0.03}]),
        "links": {"latency": r.choice([0.005, 0.02]), "jitter": r.choice([0.001, 0.01]),
                  "loss": r.choice([0.0, 0.0, 0.02]), "duplicate": r.choice([0.0, 0.05]),
                  "reorder": r.choice([0.0, 0.1])},
        "workload": {"kind": "linear", "dim": 4},
        "training": {"rounds": rounds, "lr": 0.1, "momentum": 0.5, "step_time": 0.02,
                     "round_timeout": 0.3, "view_timeout": 1.0},
        "faults": [random_fault(r, n, f, rounds) for _ in range(r.randint(0, 2))],
    }, f"sweep-{seed}")


@pytest.mark.parametrize("seed", range(120))
def test_random_fault_mix_converges(seed: int) -> None:
    scenario = random_scenario(seed)
    result = phalanx.run(scenario)
    s = result.summary
    assert s["min_rounds_committed"] == scenario.training.rounds, s
    assert s["distinct_final_hashes"] == 1, s
