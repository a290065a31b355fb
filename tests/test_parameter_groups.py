"""Parameter groups (engine/workloads/base.py ParameterGroup, engine/optim.py GroupedOptimizer):
a group steps only in its rounds, at its own learning rate, and a frozen group keeps its
parameters and its optimizer state bit for bit whatever the aggregate holds on its slice."""

from __future__ import annotations

import numpy as np
import pytest

from phalanx.engine.optim import Adam, GroupedOptimizer, MomentumSGD
from phalanx.engine.workloads.base import ParameterGroup

GROUPS = (ParameterGroup("reward", 0, 3, lr=0.1, first_round=2, last_round=4),
          ParameterGroup("policy", 3, 5, lr=None, first_round=5))


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_a_group_moves_only_in_its_rounds(kind: str) -> None:
    opt = GroupedOptimizer(kind, 0.01, 0.9, GROUPS)
    params = np.arange(5, dtype=np.float32)
    state = opt.init_state(params)
    rng = np.random.default_rng(0)
    for round in range(8):
        update = rng.normal(size=5).astype(np.float32)  # a Byzantine mean: nonzero everywhere
        new, new_state = opt.step(params, state, update, round + 1)
        reward_on, policy_on = 2 <= round <= 4, round >= 5
        assert np.array_equal(new[:3], params[:3]) != reward_on
        assert np.array_equal(new[3:], params[3:]) != policy_on
        params, state = new, new_state
    assert params.dtype == np.float32 and state.dtype == np.float32


def test_each_group_steps_as_its_own_optimizer_with_its_lr_and_step_count() -> None:
    opt = GroupedOptimizer("adam", 0.01, 0.9, GROUPS)
    params = np.linspace(-1, 1, 5).astype(np.float32)
    state = opt.init_state(params)
    update = np.array([0.5, -1.0, 2.0, 0.25, -0.75], np.float32)
    got, _ = opt.step(params, state, update, 3)  # round 2: the reward group's first step
    alone = Adam(0.1, beta1=0.9)
    want, _ = alone.step(params[:3], alone.init_state(params[:3]), update[:3], 1)
    assert np.array_equal(got[:3], want)  # t = 1 for the group: bias correction as fresh
    assert np.array_equal(got[3:], params[3:])
    got, _ = opt.step(params, state, update, 6)  # round 5: the policy group, training.lr
    alone = Adam(0.01, beta1=0.9)
    want, _ = alone.step(params[3:], alone.init_state(params[3:]), update[3:], 1)
    assert np.array_equal(got[3:], want)


def test_sgd_groups_keep_their_momentum_apart() -> None:
    opt = GroupedOptimizer("sgd", 0.5, 0.9, GROUPS)
    params = np.zeros(5, np.float32)
    state = opt.init_state(params)
    assert state.size == 5
    ones = np.ones(5, np.float32)
    params, state = opt.step(params, state, ones, 3)
    sgd = MomentumSGD(0.1, 0.9)
    want, _ = sgd.step(np.zeros(3, np.float32), np.zeros(3, np.float32), ones[:3])
    assert np.array_equal(params[:3], want) and np.array_equal(state[3:], np.zeros(2))
