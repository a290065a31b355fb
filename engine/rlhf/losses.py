"""The RLHF objectives as pure torch functions: the reward model's Bradley–Terry loss, PPO's
per-token rewards, advantages and clipped losses (InstructGPT / TRL), and DPO with its variants.

Conventions shared by every function:
- sequences are (B, T) tensors beside a `mask` of the same shape whose nonzero entries are the
  tokens that count (the completion); masked-out positions never contribute a value or a
  gradient, even when they hold padding garbage such as -inf log-probabilities;
- a mean over an empty mask is 0, not NaN: no tokens, no loss;
- statistics meant for logging (clip fractions, approximate KL, DPO's implicit rewards) come
  back detached; losses keep their graph.
Bad shapes or arguments raise a one-line ValueError that names the argument and what is allowed.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DPO_VARIANTS",
    "bradley_terry_loss",
    "dpo_loss",
    "entropy",
    "gae",
    "masked_mean",
    "ppo_policy_loss",
    "ppo_value_loss",
    "sequence_logprobs",
    "token_rewards",
    "whiten",
]

DPO_VARIANTS = ("sigmoid", "ipo", "reference_free")
WHITEN_EPS = 1e-8


def _same_shape(**tensors: Tensor) -> None:
    """ValueError unless all the named tensors have one shape."""
    (first, ref), *rest = tensors.items()
    for name, t in rest:
        if t.shape != ref.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, {first} has "
                             f"{tuple(ref.shape)}: they must match")


def _sequences(**tensors: Tensor) -> None:
    """ValueError unless the named tensors share one (B, T) shape."""
    _same_shape(**tensors)
    name, t = next(iter(tensors.items()))
    if t.dim() != 2:
        raise ValueError(f"{name} must be (batch, tokens), got {t.dim()} dimensions")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _per_token(logits: Tensor, **sequences: Tensor) -> None:
    """ValueError unless `logits` is (B, T, V) and each named tensor is its (B, T)."""
    _check(logits.dim() == 3,
           f"logits must be (batch, tokens, vocab), got {logits.dim()} dimensions")
    for name, t in sequences.items():
        _check(t.shape == logits.shape[:2], f"{name} has shape {tuple(t.shape)}, logits need "
               f"{tuple(logits.shape[:2])}")


def _finite(name: str, value: float) -> float:
    _check(isinstance(value, Real) and math.isfinite(value),
           f"{name} must be a finite number")
    return float(value)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of `x` over the entries where `mask` is nonzero: Σ x·m / Σ m, over all entries or
    along `dim`. An empty mask (or an empty row along `dim`) gives 0."""
    _same_shape(x=x, mask=mask)
    keep = mask != 0
    total = torch.where(keep, x, torch.zeros_like(x))
    if dim is None:
        return total.sum() / keep.sum().clamp(min=1)
    return total.sum(dim=dim) / keep.sum(dim=dim).clamp(min=1)


def bradley_terry_loss(chosen: Tensor, rejected: Tensor, *, margin: Tensor | None = None,
                       center: float = 0.0) -> Tensor:
    """The reward model's loss on preference pairs, a scalar:

        mean over pairs of −log σ(r_c − r_r − m)  +  center · mean((r_c + r_r)²)

    The first term is the Bradley–Terry likelihood of the labels (Bradley & Terry 1952, as
    used by Ouyang et al. 2022); the optional margin m, larger for pairs the labellers
    preferred more clearly, is Llama 2's (Touvron et al. 2023). The second term pulls each
    pair's mean reward towards 0, which BT alone leaves free (reward centering, Eisenstein et
    al. 2023); `center` ≈ 0.01 is typical, 0 turns it off.
    """
    _same_shape(chosen=chosen, rejected=rejected)
    _check(chosen.numel() > 0, "bradley_terry_loss needs at least one pair")
    center = _finite("center", center)
    _check(center >= 0, "center must be >= 0")
    diff = chosen - rejected
    if margin is not None:
        _same_shape(chosen=chosen, margin=margin)
        diff = diff - margin
    loss = -F.logsigmoid(diff).mean()
    if center > 0:
        loss = loss + center * (chosen + rejected).pow(2).mean()
    return loss


def token_rewards(score: Tensor, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor,
                  kl_coef: float) -> tuple[Tensor, Tensor]:
    """PPO's per-token reward (Ziegler et al. 2019; Ouyang et al. 2022; TRL): on each
    completion token −kl_coef · (log π − log π_ref), the KL penalty that keeps the policy near
    the reference, plus the reward model's sequence `score` (B,) on each row's last masked-in
    token; 0 elsewhere.

    Returns (rewards (B, T), kl (B,)) with kl the per-sequence sum of log π − log π_ref over
    the mask, the sample estimate of KL(π ‖ π_ref) an adaptive KL controller reads. Rollouts
    are computed without a graph, but nothing here detaches. Every row needs a masked-in token.
    """
    _sequences(logprobs=logprobs, ref_logprobs=ref_logprobs, mask=mask)
    _check(score.shape == logprobs.shape[:1],
           f"score must be (batch,) = ({logprobs.shape[0]},), got {tuple(score.shape)}")
    kl_coef = _finite("kl_coef", kl_coef)
    _check(kl_coef >= 0, "kl_coef must be >= 0")
    keep = mask != 0
    _check(bool(keep.any(dim=1).all()), "every row of mask needs at least one completion token")
    log_ratio = torch.where(keep, logprobs - ref_logprobs, torch.zeros_like(logprobs))
    positions = torch.arange(mask.shape[1], device=mask.device)
    last = (keep * positions).argmax(dim=1, keepdim=True)  # the largest masked-in index
    rewards = (-kl_coef * log_ratio).scatter_add(1, last, score.to(log_ratio.dtype)[:, None])
    return rewards, log_ratio.sum(dim=1)


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016) along each row's masked-in
    tokens, read right to left:

        δ_t = r_t + γ·V_{t'} − V_t,   A_t = δ_t + γλ·A_{t'}

    where t' is the next masked-in token; after a row's last one both V_{t'} and A_{t'} are 0,
    since the episode ends there (no bootstrap). λ = 1 gives returns-to-go minus values, λ = 0
    one-step TD errors; γ = 1, λ = 0.95 are InstructGPT's / TRL's defaults.

    Returns (advantages, returns = advantages + values), both (B, T), detached, and 0 at
    masked-out positions.
    """
    _sequences(rewards=rewards, values=values, mask=mask)
    gamma, lam = _finite("gamma", gamma), _finite("lam", lam)
    _check(0 <= gamma <= 1, "gamma must be in [0, 1]")
    _check(0 <= lam <= 1, "lam must be in [0, 1]")
    _check(rewards.shape[1] > 0, "gae needs at least one token per row")
    keep = mask != 0
    zero = torch.zeros_like(rewards, dtype=values.dtype)
    r = torch.where(keep, rewards.detach(), zero)
    v = torch.where(keep, values.detach(), zero)
    next_value = next_advantage = zero[:, 0]
    columns = []
    for t in reversed(range(r.shape[1])):
        delta = r[:, t] + gamma * next_value - v[:, t]
        advantage = delta + gamma * lam * next_advantage
        here = keep[:, t]
        columns.append(torch.where(here, advantage, zero[:, 0]))
        next_value = torch.where(here, v[:, t], next_value)
        next_advantage = torch.where(here, advantage, next_advantage)
    advantages = torch.stack(columns[::-1], dim=1)
    return advantages, torch.where(keep, advantages + v, zero)


def whiten(x: Tensor, mask: Tensor, shift_mean: bool = True) -> Tensor:
    """(x − mean) / sqrt(var + 1e-8) with the mean and the biased variance taken over the
    masked-in entries of the whole batch, as PPO normalizes advantages (TRL's `whiten`);
    `shift_mean=False` adds the mean back, rescaling only. 0 at masked-out positions."""
    _same_shape(x=x, mask=mask)
    mean = masked_mean(x, mask)
    centered = x - mean
    var = masked_mean(centered.pow(2), mask)
    out = centered * torch.rsqrt(var + WHITEN_EPS)
    if not shift_mean:
        out = out + mean
    return torch.where(mask != 0, out, torch.zeros_like(out))


def ppo_policy_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor,
                    clip: float = 0.2) -> tuple[Tensor, Tensor, Tensor]:
    """PPO's clipped surrogate (Schulman et al. 2017), a masked mean over tokens of

        −min(ρ·A, clip(ρ, 1 − ε, 1 + ε)·A),   ρ = exp(log π − log π_old)

    with ε = `clip` (0.2 in the paper, InstructGPT and TRL). Returns (loss, clip_fraction,
    approx_kl): the share of tokens where the clipped term is the smaller one, so the token
    gets no gradient (ρ > 1 + ε with A > 0, or ρ < 1 − ε with A < 0), and the masked mean of
    ½(log π − log π_old)², both detached.
    """
    _same_shape(logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages, mask=mask)
    clip = _finite("clip", clip)
    _check(clip > 0, "clip must be > 0")  # from 1 up, ρ is only clipped from above
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip, 1 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped > unclipped).to(ratio.dtype), mask)
    approx_kl = masked_mean(0.5 * log_ratio.pow(2), mask)
    return loss, clip_fraction.detach(), approx_kl.detach()


def ppo_value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor,
                   clip: float = 0.2) -> tuple[Tensor, Tensor]:
    """The value head's clipped loss (as in OpenAI's PPO2 baselines and TRL):

        ½ · masked mean of max((V − R)², (clip(V, V_old − ε, V_old + ε) − R)²)

    so one update cannot move a value estimate more than ε = `clip` (0.2) for free. Returns
    (loss, clip_fraction): the share of tokens where the clipped error is the larger one,
    detached.
    """
    _same_shape(values=values, old_values=old_values, returns=returns, mask=mask)
    clip = _finite("clip", clip)
    _check(clip > 0, "clip must be > 0")
    clipped_values = old_values + (values - old_values).clamp(-clip, clip)
    error = (values - returns).pow(2)
    clipped_error = (clipped_values - returns).pow(2)
    loss = 0.5 * masked_mean(torch.maximum(error, clipped_error), mask)
    clip_fraction = masked_mean((clipped_error > error).to(error.dtype), mask)
    return loss, clip_fraction.detach()


def entropy(logits: Tensor, mask: Tensor) -> Tensor:
    """Masked mean over tokens of the entropy H = −Σ_v p_v log p_v of softmax(`logits`)
    (B, T, V), an exploration bonus or a collapse alarm; uniform logits give log V."""
    _per_token(logits, mask=mask)
    logp = F.log_softmax(logits, dim=-1)
    p = logp.exp()
    # p log p → 0 as p → 0; `where` also keeps a −inf logit from making 0·(−inf) = NaN
    plogp = torch.where(p > 0, p * logp, torch.zeros_like(p))
    return masked_mean(-plogp.sum(dim=-1), mask)


def sequence_logprobs(logits: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
    """log π(y) = Σ_t mask_t · log softmax(logits[:, t])[tokens[:, t]], per row: (B,).

    `logits[:, t]` predicts `tokens[:, t]`, so a causal model's logits are shifted by one
    before the call. Masked-out tokens may hold anything (padding ids); masked-in ones must be
    in [0, vocab).
    """
    _per_token(logits, tokens=tokens, mask=mask)
    integer = not (tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool)
    _check(integer, "tokens must be an integer tensor")
    keep = mask != 0
    ids = torch.where(keep, tokens, torch.zeros_like(tokens))
    vocab = logits.shape[-1]
    _check(bool(((ids >= 0) & (ids < vocab)).all()), f"tokens must be in [0, {vocab})")
    picked = F.log_softmax(logits, dim=-1).gather(-1, ids.long()[..., None])[..., 0]
    return torch.where(keep, picked, torch.zeros_like(picked)).sum(dim=1)


def dpo_loss(policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor,
             ref_rejected: Tensor, *, beta: float = 0.1, variant: str = "sigmoid",
             label_smoothing: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """Direct preference optimization on sequence log-probabilities (B,) of the chosen and the
    rejected completions under the policy and the frozen reference. With the log-ratio
    difference h = (π_c − ref_c) − (π_r − ref_r):

    - "sigmoid": −log σ(β·h), DPO (Rafailov et al. 2023), β ≈ 0.1; with label_smoothing ε it
      is conservative DPO (Mitchell 2023), (1 − ε)·(−log σ(βh)) + ε·(−log σ(−βh)), for labels
      flipped with probability ε;
    - "ipo": (h − 1/(2β))², IPO (Azar et al. 2023), which regresses h to a finite target
      instead of pushing it to infinity; no label smoothing;
    - "reference_free": the sigmoid loss with the reference terms taken as 0.

    Returns (mean loss, chosen_rewards = β(π_c − ref_c), rejected_rewards = β(π_r − ref_r)),
    the implicit rewards, detached (the reference terms are 0 for "reference_free").
    """
    _same_shape(policy_chosen=policy_chosen, policy_rejected=policy_rejected,
                ref_chosen=ref_chosen, ref_rejected=ref_rejected)
    _check(policy_chosen.numel() > 0, "dpo_loss needs at least one pair")
    _check(variant in DPO_VARIANTS,
           "variant must be one of " + ", ".join(repr(v) for v in DPO_VARIANTS))
    beta = _finite("beta", beta)
    _check(beta > 0, "beta must be > 0")
    label_smoothing = _finite("label_smoothing", label_smoothing)
    _check(0 <= label_smoothing < 0.5, "label_smoothing must be in [0, 0.5)")
    _check(variant != "ipo" or label_smoothing == 0,
           "label_smoothing applies to the sigmoid variants only")
    if variant == "reference_free":
        ref_chosen, ref_rejected = torch.zeros_like(ref_chosen), torch.zeros_like(ref_rejected)
    chosen_ratio = policy_chosen - ref_chosen
    rejected_ratio = policy_rejected - ref_rejected
    h = chosen_ratio - rejected_ratio
    if variant == "ipo":
        losses = (h - 1 / (2 * beta)).pow(2)
    else:
        losses = (-(1 - label_smoothing) * F.logsigmoid(beta * h)
                  - label_smoothing * F.logsigmoid(-beta * h))
    return losses.mean(), (beta * chosen_ratio).detach(), (beta * rejected_ratio).detach()
