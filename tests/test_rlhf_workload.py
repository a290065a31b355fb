"""The RLHF workload (engine/rlhf/workload.py) through its public API: GradientJob.run(),
parameter_groups(), stage(), evaluate(), kl_value(), as the node and the central benchmark
drive it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch

from phalanx.engine.optim import Adam
from phalanx.engine.rlhf.data import Preference, PreferenceSet
from phalanx.engine.rlhf.kl import AdaptiveKL, FixedKL
from phalanx.engine.rlhf.workload import RlhfWorkload, noisy_toy_preferences
from phalanx.engine.rng import RngStreams
from phalanx.engine.workloads import make_workload
from phalanx.engine.workloads.base import GradientJob

SMALL: dict[str, Any] = {"batch": 8, "n_embd": 16, "eval_pairs": 64, "eval_rollouts": 16,
                         "collect_rounds": 2, "reward_rounds": 3, "policy_rounds": 4}


def workload(seed: int = 0, **kwargs: Any) -> RlhfWorkload:
    return RlhfWorkload(n_nodes=3, rngs=RngStreams(seed), **{**SMALL, **kwargs})


@pytest.fixture(scope="module")
def prefs() -> PreferenceSet:
    return noisy_toy_preferences(workload().toy, 200, seed=0)


def run(w: RlhfWorkload, round: int, prefs: PreferenceSet, node: int = 1,
        params: np.ndarray | None = None, **kwargs: Any) -> Any:
    params = w.init_params() if params is None else params
    return GradientJob(w, node, round, params, context={"preferences": prefs}, **kwargs).run()


def flipped(prefs: PreferenceSet) -> PreferenceSet:
    pairs = tuple(replace(p, chosen=p.rejected, rejected=p.chosen) for p in prefs.pairs)
    return PreferenceSet(prefs.root, prefs.round, pairs)


def test_registered_under_rlhf() -> None:
    w = make_workload("rlhf", dict(SMALL), 3, RngStreams(0))
    assert isinstance(w, RlhfWorkload) and w.name == "rlhf"


def test_stages_and_groups_follow_the_schedule() -> None:
    w = workload()
    assert [w.stage(r) for r in range(10)] == (["collect"] * 2 + ["reward"] * 3 + ["ppo"] * 4
                                               + ["done"])
    reward, policy = w.parameter_groups()
    assert (reward.name, reward.start, policy.start, policy.stop) == (
        "reward", 0, reward.stop, w.size)
    assert [r for r in range(10) if reward.active(r)] == [2, 3, 4]
    assert [r for r in range(10) if policy.active(r)] == [5, 6, 7, 8]
    assert (reward.lr, policy.lr) == (w.reward_lr, w.policy_lr)
    assert workload(method="dpo").stage(5) == "dpo"
    assert workload(reward_lr=None).parameter_groups()[0].lr is None  # the scenario's lr


@pytest.mark.parametrize("round", [2, 5])
@pytest.mark.parametrize("method", ["ppo", "dpo"])
def test_same_job_gives_identical_bytes_on_a_fresh_node(prefs: PreferenceSet, method: str,
                                                        round: int) -> None:
    first = run(workload(method=method), round, prefs)
    again = run(workload(method=method), round, prefs)  # a restarted or real node
    assert first.values.tobytes() == again.values.tobytes()
    assert (first.loss, dict(first.metrics)) == (again.loss, dict(again.metrics))
    other = run(workload(method=method), round, prefs, node=2)
    assert first.values.tobytes() != other.values.tobytes()  # nodes draw their own batches


@pytest.mark.parametrize("method", ["ppo", "dpo"])
def test_gradients_are_zero_outside_the_active_group(prefs: PreferenceSet, method: str) -> None:
    w = workload(method=method)
    split = w.parameter_groups()[0].stop
    idle = run(w, 0, prefs)
    assert (idle.loss, idle.samples) == (0.0, 1) and not idle.values.any()
    assert not run(w, 9, prefs).values.any()  # after the schedule: "done"
    reward = run(w, 2, prefs)
    assert reward.values.dtype == np.float32 and reward.values.shape == (w.size,)
    assert reward.values[:split].any() and not reward.values[split:].any()
    assert set(reward.metrics) == {"pair_accuracy"}
    policy = run(w, 5, prefs)
    assert policy.values[split:].any() and not policy.values[:split].any()
    expected = ({"reward", "kl", "true_score", "clip_fraction", "value_loss", "entropy",
                 "blocked"} if method == "ppo" else {"pair_accuracy", "margin"})
    assert set(policy.metrics) == expected


def test_poisoned_reward_and_dpo_jobs_train_on_swapped_pairs(prefs: PreferenceSet) -> None:
    for method, round in (("ppo", 2), ("dpo", 5)):
        w = workload(method=method)
        poisoned = run(w, round, prefs, poisoned=True)
        assert poisoned.values.tobytes() == run(w, round, flipped(prefs)).values.tobytes()
        assert poisoned.values.tobytes() != run(w, round, prefs).values.tobytes()


def test_label_confidence_sets_the_margin_only_when_asked(prefs: PreferenceSet) -> None:
    plain = run(workload(), 2, prefs)
    margin = run(workload(reward_margin=True), 2, prefs)
    assert margin.loss > plain.loss  # confidence 0.9 asks each pair for a gap of 0.8
    unsure = PreferenceSet(prefs.root, 0, tuple(replace(p, confidence=0.5) for p in prefs.pairs))
    assert run(workload(reward_margin=True), 2, unsure).values.tobytes() == \
        run(workload(), 2, unsure).values.tobytes()  # a coin-flip label asks for no gap


def test_pairs_are_drawn_by_confidence(prefs: PreferenceSet) -> None:
    sure = Preference((1, 2, 3, 4), (0,) * 8, (1,) * 8, 1.0)
    never = Preference((1, 2, 3, 4), (1,) * 8, (0,) * 8, 0.0)
    only_sure = run(workload(), 2, PreferenceSet(b"", 0, (sure,)))
    assert run(workload(), 2, PreferenceSet(b"", 0, (sure, never))).values.tobytes() == \
        only_sure.values.tobytes()
    with pytest.raises(ValueError, match="confidences must be in"):
        run(workload(), 2, PreferenceSet(b"", 0, (never,)))


def test_poisoned_ppo_job_negates_the_score() -> None:
    # at the initial policy the value head reads 0 and, without a KL penalty, the advantages
    # are the whitened scores: negating the score negates the whole gradient
    w = workload(kl_coef=0.0)
    honest, poisoned = run(w, 5, None), run(w, 5, None, poisoned=True)  # type: ignore[arg-type]
    assert honest.metrics["reward"] == poisoned.metrics["reward"]  # the same rollouts
    np.testing.assert_allclose(poisoned.values, -honest.values, rtol=1e-4, atol=1e-7)


def test_one_ppo_epoch_never_clips_and_several_send_a_pseudo_gradient(
        prefs: PreferenceSet) -> None:
    assert run(workload(), 5, prefs).metrics["clip_fraction"] == 0.0  # ratio exactly 1
    w = workload(ppo_epochs=4, ppo_local_lr=0.05)
    result = run(w, 5, prefs)
    assert result.metrics["clip_fraction"] > 0  # the local copy moved past the clip
    # (θ − θ′) / lr: one step of the local rate along it lands on the node's local policy
    split = w.parameter_groups()[0].stop
    local = w.init_params()[split:] - np.float32(0.05) * result.values[split:]
    np.testing.assert_allclose(local, w.policy.vector(), atol=1e-6)


class BlockAll:
    def allows(self, text: str) -> bool:
        return False


class BlockTarget:
    def allows(self, text: str) -> bool:
        return "a" not in text.split(" ")  # token 0, the one the hidden preference rewards


def test_completion_filter_runs_before_the_reward_model(prefs: PreferenceSet) -> None:
    blocked = run(workload(completion_filter=BlockAll(), blocked_score=-3.5), 5, prefs)
    assert blocked.metrics["blocked"] == 8 and blocked.metrics["reward"] == -3.5
    some = run(workload(completion_filter=BlockTarget()), 5, prefs).metrics
    assert 0 < some["blocked"] < 8
    assert run(workload(), 5, prefs).metrics["blocked"] == 0


def test_evaluate_is_deterministic_and_starts_at_the_reference() -> None:
    w = workload()
    params = w.init_params()
    figures = w.evaluate(params)
    assert set(figures) == {"loss", "reward_accuracy", "true_score", "kl", "reward"}
    assert figures == workload().evaluate(params) == w.evaluate(params)
    assert figures["kl"] == 0.0 == w.kl_value(params)  # the policy is the reference
    moved = params + np.float32(0.05) * np.sign(run(w, 5, None).values)  # type: ignore[arg-type]
    assert w.kl_value(moved) != 0.0 and w.evaluate(moved)["kl"] == w.kl_value(moved)


def test_kl_controller_is_fixed_unless_a_target_is_set() -> None:
    assert isinstance(workload().kl_controller(), FixedKL)
    adaptive = workload(kl_target=2.0, kl_coef=0.1).kl_controller()
    assert isinstance(adaptive, AdaptiveKL) and adaptive.value == 0.1
    adaptive.update(8.0, 100)  # far above target: the coefficient grows
    assert adaptive.value > 0.1


def test_committed_kl_coef_overrides_the_default(prefs: PreferenceSet) -> None:
    w = workload()
    moved = w.init_params() + np.float32(0.05) * np.sign(run(w, 5, prefs).values)
    plain = GradientJob(w, 1, 6, moved, context={"preferences": prefs}).run()
    steered = GradientJob(w, 1, 6, moved, context={"preferences": prefs, "kl_coef": 2.0}).run()
    assert plain.values.tobytes() != steered.values.tobytes()


@pytest.mark.parametrize(("field", "value"), [
    ("batch", 0), ("method", "sft<script>"), ("reward_lr", -1.0), ("kl_target", 0.0),
    ("clip", 0.0), ("kl_horizon", 10.5), ("gamma", 0.0), ("ppo_epochs", 0), ("dpo_variant", "hinge"),
    ("label_smoothing", 0.5), ("temperature", 0.0), ("completion_filter", "no filter"),
    ("blocked_score", float("nan")), ("synthetic_pairs", -1), ("n_embd", 15),
    ("vocab", 1), ("batch", 2.5), ("reward_margin", "yes"), ("kl_coef", "0.1"),
])
def test_bad_arguments_are_one_line_errors_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(ValueError) as err:
        workload(**{field: value})
    message = str(err.value)
    assert "\n" not in message and "<script>" not in message and "hinge" not in message
    assert field in message or (field == "n_embd" and "n_head" in message)


def test_arguments_that_only_clash_together_are_refused() -> None:
    with pytest.raises(ValueError, match="kl_horizon must be at least batch"):
        workload(kl_target=3.0, kl_horizon=10)  # 8 rollouts x 3 nodes per update
    with pytest.raises(ValueError, match="label_smoothing must be 0 with dpo_variant ipo"):
        workload(dpo_variant="ipo", label_smoothing=0.1)


def test_bad_committed_inputs_are_clear_errors(prefs: PreferenceSet) -> None:
    w = workload(synthetic_pairs=0)
    with pytest.raises(ValueError, match="PreferenceSet"):
        GradientJob(w, 1, 2, w.init_params()).run()
    with pytest.raises(ValueError, match="PreferenceSet"):
        run(w, 2, PreferenceSet(b"", 0, ()))
    short = (Preference((1, 2), (0,) * 8, (1,) * 8, 0.9),)
    with pytest.raises(ValueError, match="prompts of 4"):
        run(w, 2, PreferenceSet(b"", 0, short))
    alien = (Preference((1, 2, 3, 4), (99,) * 8, (1,) * 8, 0.9),)
    with pytest.raises(ValueError, match=r"outside 0\.\.7"):
        run(w, 2, PreferenceSet(b"", 0, alien))
    with pytest.raises(ValueError, match="params must hold"):
        run(w, 2, prefs, params=np.zeros(3, np.float32))


def test_without_committed_preferences_the_run_trains_on_the_seeds_toy_pairs() -> None:
    w = workload()
    synthetic = noisy_toy_preferences(w.toy, w.synthetic_pairs, seed=0)
    fallback = GradientJob(w, 1, 2, w.init_params()).run()
    assert fallback.values.tobytes() == run(w, 2, synthetic).values.tobytes()


def train(w: RlhfWorkload, prefs: PreferenceSet, rounds: range, params: np.ndarray
          ) -> np.ndarray:
    """The BFT rounds centrally, attack-free: the nodes' mean gradient, Adam on the groups
    active in each round (as benchmarks/rlhf_central.py, shorter; the Adam state starts
    afresh in each call, which the stage boundary makes harmless)."""
    params = params.copy()
    groups = w.parameter_groups()
    adam = {g.name: Adam(g.lr or 1e-3) for g in groups}
    state = {g.name: adam[g.name].init_state(params[g.start:g.stop]) for g in groups}
    steps = dict.fromkeys(state, 0)
    for r in rounds:
        mean = np.mean([run(w, r, prefs, node=i, params=params).values
                        for i in range(w.n_nodes)], axis=0, dtype=np.float32)
        for g in (g for g in groups if g.active(r)):
            steps[g.name] += 1
            params[g.start:g.stop], state[g.name] = adam[g.name].step(
                params[g.start:g.stop], state[g.name], mean[g.start:g.stop], steps[g.name])
    return params


def test_reward_model_then_ppo_learn_the_hidden_preference(prefs: PreferenceSet) -> None:
    torch.set_num_threads(1)
    w = workload(batch=16, collect_rounds=0, reward_rounds=15, policy_rounds=25,
                 reward_lr=3e-3, policy_lr=5e-3)
    start = w.evaluate(w.init_params())
    reward_trained = train(w, prefs, range(15), w.init_params())
    after_reward = w.evaluate(reward_trained)
    assert after_reward["reward_accuracy"] >= max(0.85, start["reward_accuracy"] + 0.15)
    end = w.evaluate(train(w, prefs, range(15, 40), reward_trained))
    assert end["reward_accuracy"] == after_reward["reward_accuracy"]  # frozen in PPO rounds
    assert end["true_score"] > 2 * start["true_score"] and end["kl"] > 0
