"""The RLHF workload's BFT rounds simulated centrally (issue 20): does it learn before it is
wired into the node? Each round, every one of n nodes computes its gradient with
`GradientJob(...).run()`, the mean of the n gradients is the aggregate (no attacker), and
engine/optim.py's Adam steps only the groups active in that round, each at its own lr with its
own step count. With `kl_target` set, the adaptive KL controller advances after each PPO round
from `kl_value` of the committed params, as the node's RLHF service will.

The preferences are `noisy_toy_preferences`: `preference_tasks` pairs labelled by their hidden
truth with probability 0.9 and inverted otherwise (no crowd). The workload's defaults are the
tuned values; flags override the stages only. Not a test.

    python benchmarks/rlhf_central.py [--nodes 7] [--seed 0] [--method ppo|dpo|both]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

from phalanx.engine.optim import Adam
from phalanx.engine.rlhf.workload import RlhfWorkload, noisy_toy_preferences
from phalanx.engine.rng import RngStreams
from phalanx.engine.workloads.base import GradientJob


def train(workload: RlhfWorkload, context: dict[str, Any], lr: float, every: int,
          log: list[dict[str, Any]]) -> np.ndarray:
    """Run every round of the workload's schedule; returns the final params."""
    params = workload.init_params()
    groups = workload.parameter_groups()
    optimizers = {g.name: Adam(g.lr if g.lr is not None else lr) for g in groups}
    states = {g.name: optimizers[g.name].init_state(params[g.start:g.stop]) for g in groups}
    steps = dict.fromkeys(states, 0)
    controller = workload.kl_controller()
    last = workload.collect_rounds + workload.reward_rounds + workload.policy_rounds
    for round in range(last):
        started = time.perf_counter()
        stage = workload.stage(round)
        ctx = {**context, "kl_coef": controller.value}
        results = [GradientJob(workload, node, round, params, context=ctx).run()
                   for node in range(workload.n_nodes)]
        aggregate = np.mean([r.values for r in results], axis=0, dtype=np.float32)
        for g in groups:
            if g.active(round):
                steps[g.name] += 1
                params[g.start:g.stop], states[g.name] = optimizers[g.name].step(
                    params[g.start:g.stop], states[g.name], aggregate[g.start:g.stop],
                    steps[g.name])
        if stage == "ppo" and workload.kl_target is not None:
            controller.update(workload.kl_value(params), workload.batch * workload.n_nodes)
        seconds = time.perf_counter() - started
        if (round + 1) % every == 0 or round + 1 == last:
            figures = workload.evaluate(params)
            metrics = {k: float(np.mean([r.metrics[k] for r in results]))
                       for k in results[0].metrics}
            row = {"round": round + 1, "stage": stage, "seconds": round_to(seconds),
                   "kl_coef": round_to(controller.value), **{k: round_to(v) for k, v in
                                                             figures.items()},
                   **{f"train_{k}": round_to(v) for k, v in metrics.items()}}
            log.append(row)
            print(json.dumps(row), flush=True)
    return params


def round_to(x: float) -> float:
    return float(f"{x:.4g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", choices=("ppo", "dpo", "both"), default="both")
    parser.add_argument("--pairs", type=int, default=1000, help="preference pairs")
    parser.add_argument("--lr", type=float, default=1e-3, help="lr of a group without its own")
    parser.add_argument("--reward-rounds", type=int)
    parser.add_argument("--policy-rounds", type=int)
    parser.add_argument("--kl-target", type=float)
    parser.add_argument("--every", type=int, default=10, help="evaluate every this many rounds")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                        help="override a workload argument, e.g. --set kl_coef=0.2")
    args = parser.parse_args()
    torch.set_num_threads(1)
    overrides = {k: v for k, v in (("reward_rounds", args.reward_rounds),
                                   ("policy_rounds", args.policy_rounds),
                                   ("kl_target", args.kl_target)) if v is not None}
    for item in args.set:
        field, _, value = item.partition("=")
        overrides[field] = json.loads(value)
    methods = ("ppo", "dpo") if args.method == "both" else (args.method,)
    for method in methods:
        rngs = RngStreams(args.seed)
        workload = RlhfWorkload(n_nodes=args.nodes, rngs=rngs, method=method, **overrides)
        prefs = noisy_toy_preferences(workload.toy, args.pairs, args.seed, 0.9)
        print(f"== {method}: {args.nodes} nodes, {workload.size} parameters, "
              f"{len(prefs)} pairs (labels right with p = 0.9)", flush=True)
        start = workload.evaluate(workload.init_params())
        print(json.dumps({"round": 0, **{k: round_to(v) for k, v in start.items()}}))
        log: list[dict[str, Any]] = []
        began = time.perf_counter()
        train(workload, {"preferences": prefs}, args.lr, args.every, log)
        total = time.perf_counter() - began
        rounds = workload.reward_rounds + workload.policy_rounds
        policy_rows = [r for r in log if r["stage"] == method]
        reward_rows = [r for r in log if r["stage"] == "reward"]
        print(json.dumps({
            "method": method,
            "reward_accuracy": reward_rows[-1]["reward_accuracy"] if reward_rows else None,
            "true_score_start": round_to(start["true_score"]),
            "true_score_end": policy_rows[-1]["true_score"] if policy_rows else None,
            "kl_end": policy_rows[-1]["kl"] if policy_rows else None,
            "kl_max": max((r["kl"] for r in policy_rows), default=None),
            "seconds_per_round": round_to(total / max(rounds, 1))}), flush=True)


if __name__ == "__main__":
    main()
