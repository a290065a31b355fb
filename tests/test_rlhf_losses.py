"""The RLHF losses and KL controllers against values worked out by hand from the papers'
definitions on tiny tensors (the arithmetic is in the comments), plus their gradients and the
errors bad arguments raise."""

from __future__ import annotations

import math

import pytest
import torch

from phalanx.engine.rlhf.kl import AdaptiveKL, FixedKL, kl_controller_from_state
from phalanx.engine.rlhf.losses import (
    bradley_terry_loss,
    dpo_loss,
    entropy,
    gae,
    masked_mean,
    ppo_policy_loss,
    ppo_value_loss,
    sequence_logprobs,
    token_rewards,
    whiten,
)

INF = float("inf")


def t(*rows: object) -> torch.Tensor:
    return torch.tensor(rows if len(rows) > 1 else rows[0], dtype=torch.float64)


def close(actual: torch.Tensor, expected: object, tol: float = 1e-6) -> None:
    torch.testing.assert_close(actual, torch.as_tensor(expected, dtype=actual.dtype),
                               atol=tol, rtol=0)


# --- masked_mean -------------------------------------------------------------------------

def test_masked_mean_over_all_entries_rows_and_an_empty_mask() -> None:
    x = t([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    mask = t([1.0, 1.0, 0.0], [0.0, 1.0, 0.0])
    close(masked_mean(x, mask), 8 / 3)  # (1 + 2 + 5) / 3
    close(masked_mean(x, mask.bool()), 8 / 3)
    close(masked_mean(x, mask, dim=1), [1.5, 5.0])  # (1 + 2) / 2, 5 / 1
    close(masked_mean(x, torch.zeros_like(mask)), 0.0)  # no tokens, no loss, no NaN
    close(masked_mean(x, t([1.0, 1.0, 1.0], [0.0, 0.0, 0.0]), dim=1), [2.0, 0.0])


# --- Bradley–Terry -----------------------------------------------------------------------

def test_bradley_terry_plain_with_margin_and_with_centering() -> None:
    chosen, rejected = t([1.0, 0.0]), t([0.5, 0.5])
    # diffs 0.5, −0.5: σ(0.5) = 0.622459, −log = 0.474077; σ(−0.5) = 0.377541, −log = 0.974077
    close(bradley_terry_loss(chosen, rejected), (0.474077 + 0.974077) / 2)
    # margins 0.5, 0 (Llama 2): diffs 0, −0.5: −log σ(0) = log 2 = 0.693147
    close(bradley_terry_loss(chosen, rejected, margin=t([0.5, 0.0])), (0.693147 + 0.974077) / 2)
    # centering 0.1 (Eisenstein et al.): sums 1.5, 0.5 → mean of squares (2.25 + 0.25) / 2 = 1.25
    close(bradley_terry_loss(chosen, rejected, center=0.1), 0.724077 + 0.1 * 1.25)


def test_bradley_terry_gradient_separates_the_pair() -> None:
    chosen = t([0.0]).requires_grad_()
    rejected = t([0.0]).requires_grad_()
    bradley_terry_loss(chosen, rejected).backward()
    # d/dr_c −log σ(r_c − r_r) = −σ(−0) = −0.5: descent raises the chosen reward
    close(chosen.grad, [-0.5])
    close(rejected.grad, [0.5])


# --- token_rewards -----------------------------------------------------------------------

def test_token_rewards_place_the_score_on_the_last_completion_token() -> None:
    # row 0: prompt, two completion tokens, padding (−inf log-probs); row 1: prompt + three
    logprobs = t([-9.0, -1.0, -0.5, -INF], [-5.0, -2.0, -1.0, -1.0])
    ref = t([-9.0, -1.2, -0.4, -INF], [-5.0, -1.0, -1.0, -1.5])
    mask = t([0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0])
    rewards, kl = token_rewards(t([1.0, -0.5]), logprobs, ref, mask, kl_coef=0.1)
    # row 0 log-ratios 0.2, −0.1 → −0.1·ratio = −0.02, 0.01, + score 1 on t=2
    # row 1 log-ratios −1, 0, 0.5 → 0.1, 0, −0.05 + score −0.5 on t=3
    close(rewards, [[0.0, -0.02, 1.01, 0.0], [0.0, 0.1, 0.0, -0.55]])
    close(kl, [0.1, -0.5])  # 0.2 − 0.1; −1 + 0 + 0.5


def test_token_rewards_with_one_completion_token_at_position_zero() -> None:
    rewards, kl = token_rewards(t([2.0]), t([[-1.0, -3.0]]), t([[-1.5, -1.0]]),
                                t([[1.0, 0.0]]), kl_coef=1.0)
    close(rewards, [[-0.5 + 2.0, 0.0]])  # log-ratio 0.5 → −0.5, score on t=0
    close(kl, [0.5])


# --- GAE ---------------------------------------------------------------------------------

def test_gae_three_steps_gamma_one_lambda_095_by_hand() -> None:
    rewards, values = t([[0.0, 0.0, 1.0]]), t([[0.5, 0.6, 0.7]])
    advantages, returns = gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=0.95)
    # δ2 = 1 − 0.7 = 0.3 (no bootstrap); A2 = 0.3
    # δ1 = 0 + 0.7 − 0.6 = 0.1; A1 = 0.1 + 0.95·0.3 = 0.385
    # δ0 = 0 + 0.6 − 0.5 = 0.1; A0 = 0.1 + 0.95·0.385 = 0.46575
    close(advantages, [[0.46575, 0.385, 0.3]])
    close(returns, [[0.96575, 0.985, 1.0]])  # A + V


def test_gae_skips_padding_and_prompt_positions() -> None:
    # the same three tokens behind a prompt token and before padding with garbage values
    rewards = t([[100.0, 0.0, 0.0, 1.0, 100.0]])
    values = t([[100.0, 0.5, 0.6, 0.7, 100.0]])
    mask = t([[0.0, 1.0, 1.0, 1.0, 0.0]])
    advantages, returns = gae(rewards, values, mask)
    close(advantages, [[0.0, 0.46575, 0.385, 0.3, 0.0]])
    close(returns, [[0.0, 0.96575, 0.985, 1.0, 0.0]])


def test_gae_steps_over_a_gap_in_the_mask() -> None:
    # a masked-out token inside the completion (e.g. a tool's output) is skipped, not a step
    rewards, values = t([[0.0, 9.0, 1.0]]), t([[0.5, 9.0, 0.7]])
    advantages, _ = gae(rewards, values, t([[1.0, 0.0, 1.0]]), gamma=1.0, lam=0.95)
    # A2 = 1 − 0.7 = 0.3; δ0 = 0 + V2 − V0 = 0.2, A0 = 0.2 + 0.95·0.3 = 0.485
    close(advantages, [[0.485, 0.0, 0.3]])


def test_gae_lambda_one_is_returns_to_go_and_lambda_zero_is_td() -> None:
    rewards, values, mask = t([[1.0, 0.0, 1.0]]), t([[0.5, 0.6, 0.7]]), torch.ones(1, 3)
    # γ = 0.9: returns-to-go G2 = 1, G1 = 0 + 0.9·1 = 0.9, G0 = 1 + 0.9·0.9 = 1.81
    advantages, returns = gae(rewards, values, mask, gamma=0.9, lam=1.0)
    close(advantages, [[1.81 - 0.5, 0.9 - 0.6, 1.0 - 0.7]])
    close(returns, [[1.81, 0.9, 1.0]])
    # λ = 0: r_t + γ·V_{t+1} − V_t = 1 + 0.54 − 0.5, 0 + 0.63 − 0.6, 1 + 0 − 0.7
    advantages, _ = gae(rewards, values, mask, gamma=0.9, lam=0.0)
    close(advantages, [[1.04, 0.03, 0.3]])


def test_gae_outputs_are_detached() -> None:
    values = t([[0.5, 0.6]]).requires_grad_()
    advantages, returns = gae(t([[0.0, 1.0]]), values, torch.ones(1, 2))
    assert not advantages.requires_grad and not returns.requires_grad


# --- whiten ------------------------------------------------------------------------------

def test_whiten_over_masked_entries() -> None:
    x = t([1.0, 2.0, 100.0], [3.0, 4.0, -50.0])
    mask = t([1.0, 1.0, 0.0], [1.0, 1.0, 0.0])
    # entries 1, 2, 3, 4: mean 2.5, biased var (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25,
    # std 1.118034 → −1.341641, −0.447214, 0.447214, 1.341641
    out = whiten(x, mask)
    close(out, [[-1.341641, -0.447214, 0.0], [0.447214, 1.341641, 0.0]])
    close(masked_mean(out, mask), 0.0)
    close(masked_mean(out.pow(2), mask), 1.0)  # biased std 1 (eps 1e-8 shifts it by < 1e-8)
    # shift_mean=False puts the mean 2.5 back: 1.158359, 2.052786, 2.947214, 3.841641
    close(whiten(x, mask, shift_mean=False),
          [[1.158359, 2.052786, 0.0], [2.947214, 3.841641, 0.0]])


# --- PPO ---------------------------------------------------------------------------------

def test_ppo_policy_loss_clips_both_signs_of_advantage() -> None:
    # old log π = 0, so ρ = exp(log π): ratios 1.5, 0.5, 0.5, 1.5, 1.1 and one padded token
    ratios = [1.5, 0.5, 0.5, 1.5, 1.1, 50.0]
    logprobs = t([[math.log(r) for r in ratios]]).requires_grad_()
    advantages = t([[1.0, 1.0, -1.0, -1.0, 2.0, 9.0]])
    mask = t([[1.0, 1.0, 1.0, 1.0, 1.0, 0.0]])
    loss, clip_fraction, approx_kl = ppo_policy_loss(logprobs, torch.zeros_like(logprobs),
                                                     advantages, mask, clip=0.2)
    # −min(ρA, clip(ρ, 0.8, 1.2)A):
    #   ρ 1.5, A +1: min(1.5, 1.2) = 1.2 → −1.2 clipped   ρ 0.5, A +1: min(0.5, 0.8) → −0.5
    #   ρ 0.5, A −1: min(−0.5, −0.8) → 0.8 clipped         ρ 1.5, A −1: min(−1.5, −1.2) → 1.5
    #   ρ 1.1, A +2: inside → −2.2;  mean (−1.2 − 0.5 + 0.8 + 1.5 − 2.2) / 5 = −0.32
    close(loss, -0.32)
    close(clip_fraction, 2 / 5)
    # ½·mean(log ρ)²: ln1.5 = 0.405465, ln0.5 = −0.693147, ln1.1 = 0.095310 →
    # squares 0.164402, 0.480453, 0.480453, 0.164402, 0.009084 → sum 1.298794 / 5 / 2 = 0.129879
    close(approx_kl, 0.129879)
    assert not clip_fraction.requires_grad and not approx_kl.requires_grad
    loss.backward()
    # clipped tokens and the padded one get no gradient; others d(−ρA)/d log π / 5 = −ρA / 5
    close(logprobs.grad, [[0.0, -0.1, 0.0, 0.3, -0.44, 0.0]])


def test_ppo_value_loss_clips_the_value_move() -> None:
    values = t([[1.0, 0.6, 0.0, 7.0]]).requires_grad_()
    old_values = t([[0.5, 0.5, 0.5, 0.0]])
    returns = t([[1.0, 0.0, 1.0, 0.0]])
    mask = t([[1.0, 1.0, 1.0, 0.0]])
    loss, clip_fraction = ppo_value_loss(values, old_values, returns, mask, clip=0.2)
    # t0: V 1.0 clipped to 0.7: errors 0 and 0.09 → 0.09, the clipped one is larger
    # t1: V 0.6 within 0.5 ± 0.2: 0.36 both, not counted
    # t2: V 0.0 clipped to 0.3: errors 1.0 and 0.49 → 1.0, not counted
    # ½ · (0.09 + 0.36 + 1.0) / 3 = 0.241667
    close(loss, 0.241667)
    close(clip_fraction, 1 / 3)
    loss.backward()
    # t0's loss follows the clipped value (no gradient to V); t1: (V − R)/3 = 0.2; t2: −1/3
    close(values.grad, [[0.0, 0.2, -1 / 3, 0.0]])


# --- entropy and sequence log-probabilities ----------------------------------------------

def test_entropy_of_uniform_and_skewed_logits() -> None:
    close(entropy(torch.zeros(2, 3, 5, dtype=torch.float64), torch.ones(2, 3)), math.log(5))
    # logits (0, ln 3) → p = (0.25, 0.75): H = 0.25·1.386294 + 0.75·0.287682 = 0.562335;
    # (0, 0, −inf) → H = ln 2 = 0.693147 (no NaN); the masked-out token (−inf, −inf, −inf)
    # would be NaN but does not count
    logits = t([[[0.0, math.log(3), -INF], [0.0, 0.0, -INF], [-INF, -INF, -INF]]])
    close(entropy(logits, t([[1.0, 1.0, 0.0]])), (0.562335 + 0.693147) / 2)


def test_sequence_logprobs_sums_the_masked_tokens() -> None:
    # vocab 2: logits (0, ln 3) → log p = (ln 0.25, ln 0.75); (0, 0) → ln 0.5 each
    logits = t([[[0.0, math.log(3)], [0.0, 0.0], [5.0, -5.0]]])
    tokens = torch.tensor([[1, 0, -100]])  # −100: a padding id the mask hides
    # ln 0.75 + ln 0.5 = −0.287682 − 0.693147 = −0.980829
    close(sequence_logprobs(logits, tokens, t([[1.0, 1.0, 0.0]])), [-0.980829])


# --- DPO ---------------------------------------------------------------------------------

PC, PR, RC, RR = t([-1.0]), t([-2.0]), t([-1.5]), t([-1.0])
# log-ratios: chosen −1 − (−1.5) = 0.5, rejected −2 − (−1) = −1; h = 1.5


def test_dpo_sigmoid_and_label_smoothing() -> None:
    loss, chosen, rejected = dpo_loss(PC, PR, RC, RR, beta=0.1)
    # βh = 0.15: e^−0.15 = 0.860708, −log σ(0.15) = ln 1.860708 = 0.620957
    close(loss, 0.620957)
    close(chosen, [0.05])  # β · 0.5
    close(rejected, [-0.1])  # β · (−1)
    # ε = 0.1: 0.9·0.620957 + 0.1·(−log σ(−0.15) = 0.620957 + 0.15 = 0.770957) = 0.635957
    loss, _, _ = dpo_loss(PC, PR, RC, RR, beta=0.1, label_smoothing=0.1)
    close(loss, 0.635957)


def test_dpo_ipo_and_reference_free() -> None:
    close(dpo_loss(PC, PR, RC, RR, beta=0.1, variant="ipo")[0], 12.25)  # (1.5 − 1/0.2)² = 3.5²
    close(dpo_loss(PC, PR, RC, RR, beta=0.5, variant="ipo")[0], 0.25)  # (1.5 − 1)²
    # reference free: h = −1 − (−2) = 1, βh = 0.1: −log σ(0.1) = ln(1 + 0.904837) = 0.644397
    loss, chosen, rejected = dpo_loss(PC, PR, RC, RR, beta=0.1, variant="reference_free")
    close(loss, 0.644397)
    close(chosen, [-0.1])
    close(rejected, [-0.2])


def test_dpo_gradient_raises_the_chosen_sequence() -> None:
    # d/dπ_c −log σ(βh) = −β·σ(−βh) = −0.1·σ(−0.15) = −0.1·0.462570 = −0.046257
    pc, pr = PC.clone().requires_grad_(), PR.clone().requires_grad_()
    dpo_loss(pc, pr, RC, RR, beta=0.1)[0].backward()
    close(pc.grad, [-0.046257])
    close(pr.grad, [0.046257])
    # end to end through token logits: one SGD step on the loss makes the chosen completion
    # likelier and the rejected one less likely under the policy
    logits = torch.zeros(2, 3, 4, dtype=torch.float64, requires_grad=True)
    tokens = torch.tensor([[0, 1, 2], [3, 3, 1]])  # row 0 chosen, row 1 rejected
    mask = torch.ones(2, 3)
    before = sequence_logprobs(logits, tokens, mask).detach()
    logps = sequence_logprobs(logits, tokens, mask)
    dpo_loss(logps[:1], logps[1:], before[:1], before[1:])[0].backward()
    with torch.no_grad():
        after = sequence_logprobs(logits - 1.0 * logits.grad, tokens, mask)
    assert after[0] > before[0] and after[1] < before[1]


# --- gradients stop at the mask ----------------------------------------------------------

def test_masked_out_positions_get_no_gradient() -> None:
    mask = t([[1.0, 0.0, 1.0]])
    x = t([[1.0, 2.0, 3.0]]).requires_grad_()
    (masked_mean(x, mask) + (whiten(x, mask) * t([[1.0, 5.0, 2.0]])).sum()).backward()
    assert x.grad[0, 1] == 0 and x.grad[0, 0] != 0
    logits = torch.randn(1, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    logits.requires_grad_()
    (entropy(logits, mask) + sequence_logprobs(logits, torch.tensor([[1, 2, 3]]), mask).sum()
     ).backward()
    assert (logits.grad[0, 1] == 0).all() and (logits.grad[0, 0] != 0).any()
    logprobs = t([[-1.0, -2.0, -3.0]]).requires_grad_()
    rewards, kl = token_rewards(t([1.0]), logprobs, torch.zeros_like(logprobs), mask, 0.5)
    (rewards.sum() + kl.sum()).backward()
    close(logprobs.grad, [[0.5, 0.0, 0.5]])  # −0.5 from the reward + 1 from the KL sum


# --- KL controllers ----------------------------------------------------------------------

@pytest.mark.parametrize(("kl", "expected"), [
    (9.0, 0.102),  # 9/6 − 1 = 0.5 → clipped to 0.2: 0.1·(1 + 0.2·1000/10000)
    (6.6, 0.101),  # 0.1: 0.1·(1 + 0.1·0.1)
    (6.0, 0.1),  # on target: unchanged
    (5.4, 0.099),  # −0.1
    (0.0, 0.098),  # −1 → clipped to −0.2
])
def test_adaptive_kl_moves_towards_the_target(kl: float, expected: float) -> None:
    controller = AdaptiveKL(init=0.1, target=6.0, horizon=10000)
    controller.update(kl, 1000)
    assert controller.value == pytest.approx(expected, abs=1e-12)


def test_kl_controllers_restore_from_their_state() -> None:
    adaptive = AdaptiveKL(0.2, 6.0, 100)
    for kl in (1.0, 20.0, 7.0):
        adaptive.update(kl, 10)
    restored = kl_controller_from_state(adaptive.state())
    assert isinstance(restored, AdaptiveKL) and restored.state() == adaptive.state()
    restored.update(3.0, 5)
    adaptive.update(3.0, 5)
    assert restored.value == adaptive.value
    fixed = FixedKL(0.05)
    fixed.update(100.0, 10)
    assert fixed.value == 0.05 and FixedKL.from_state(fixed.state()).value == 0.05
    with pytest.raises(ValueError, match="not of kind 'fixed'"):
        FixedKL.from_state(adaptive.state())
    with pytest.raises(ValueError, match="lacks 'horizon'"):
        kl_controller_from_state({"kind": "adaptive", "value": 0.1, "target": 6.0})
    with pytest.raises(ValueError, match="kind must be"):
        kl_controller_from_state({"kind": ["x"]})


@pytest.mark.parametrize(("make", "message"), [
    (lambda: AdaptiveKL(0.0, 6.0, 100), "init must be > 0"),
    (lambda: AdaptiveKL(0.1, -1.0, 100), "target must be > 0"),
    (lambda: AdaptiveKL(0.1, 6.0, 0), "horizon must be an integer >= 1"),
    (lambda: AdaptiveKL(0.1, 6.0, 100).update(float("nan"), 1), "kl must be a finite number"),
    (lambda: AdaptiveKL(0.1, 6.0, 100).update(1.0, 101), "steps must be <= horizon"),
    (lambda: AdaptiveKL(0.1, 6.0, 100).update(1.0, -1), "steps must be an integer >= 0"),
    (lambda: FixedKL(-0.1), "coef must be >= 0"),
    (lambda: FixedKL(0.1).update(torch.tensor(1.0), 1),  # type: ignore[arg-type]
     "kl must be a finite number"),  # a tensor: the caller converts, on every node alike
])
def test_kl_controllers_reject_bad_arguments(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


# --- argument checks ---------------------------------------------------------------------

S2, S3 = torch.zeros(2), torch.zeros(3)
M23, M24 = torch.ones(2, 3), torch.ones(2, 4)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: masked_mean(M23, M24), "mask has shape"),
    (lambda: bradley_terry_loss(S2, S3), "rejected has shape"),
    (lambda: bradley_terry_loss(S2, S2, margin=S3), "margin has shape"),
    (lambda: bradley_terry_loss(S2, S2, center=-1.0), "center must be >= 0"),
    (lambda: bradley_terry_loss(torch.zeros(0), torch.zeros(0)), "at least one pair"),
    (lambda: token_rewards(S3, M23, M23, M23, 0.1), r"score must be \(batch,\)"),
    (lambda: token_rewards(S2, M23, M24, M23, 0.1), "ref_logprobs has shape"),
    (lambda: token_rewards(S2, M23, M23, M23, -0.1), "kl_coef must be >= 0"),
    (lambda: token_rewards(S2, M23, M23, torch.tensor([[1.0, 0, 0], [0, 0, 0]]), 0.1),
     "every row of mask"),
    (lambda: gae(M23, M23, M23, gamma=1.5), r"gamma must be in \[0, 1\]"),
    (lambda: gae(M23, M23, M23, lam=-0.1), r"lam must be in \[0, 1\]"),
    (lambda: gae(M23, M23, M23, lam=float("nan")), "lam must be a finite number"),
    (lambda: gae(S2, S2, S2), r"must be \(batch, tokens\)"),
    (lambda: whiten(M23, M24), "mask has shape"),
    (lambda: ppo_policy_loss(M23, M23, M23, M23, clip=0.0), "clip must be > 0"),
    (lambda: ppo_policy_loss(M23, M23, M24, M23), "advantages has shape"),
    (lambda: ppo_value_loss(M23, M23, M23, M23, clip=-0.2), "clip must be > 0"),
    (lambda: entropy(M23, torch.ones(2)), "logits must be"),
    (lambda: entropy(torch.zeros(2, 3, 4), M24), "mask has shape"),
    (lambda: sequence_logprobs(torch.zeros(2, 3, 4), torch.tensor([[0, 1, 4], [0, 0, 0]]),
                               M23), r"tokens must be in \[0, 4\)"),
    (lambda: sequence_logprobs(torch.zeros(2, 3, 4), M23, M23), "integer tensor"),
    (lambda: sequence_logprobs(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long), M24),
     "tokens has shape"),
    (lambda: dpo_loss(S2, S2, S2, S3), "ref_rejected has shape"),
    (lambda: dpo_loss(S2, S2, S2, S2, beta=0.0), "beta must be > 0"),
    (lambda: dpo_loss(S2, S2, S2, S2, variant="hinge"),
     "variant must be one of 'sigmoid', 'ipo', 'reference_free'"),
    (lambda: dpo_loss(S2, S2, S2, S2, label_smoothing=0.5), r"label_smoothing must be in"),
    (lambda: dpo_loss(S2, S2, S2, S2, variant="ipo", label_smoothing=0.1),
     "sigmoid variants only"),
])
def test_bad_arguments_raise_one_line_errors(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        call()  # type: ignore[operator]
    assert "\n" not in str(info.value)
