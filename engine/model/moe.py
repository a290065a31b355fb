"""A sparse mixture of SwiGLU experts with top-k routing and causal expert capacity.

Routing follows Switch Transformer (Fedus et al. 2021) and its top-k generalisation: a linear
router gives each token a softmax over the E experts; the token goes to its k most likely
experts, weighted by those probabilities renormalised to sum to 1.

Capacity. Switch Transformer bounds each expert at ceil(capacity_factor * k * N / E)
assignments over all N tokens of a batch, dropping the ones past it; a token's fate then depends
on the tokens after it and on which sequences share its batch, so a full forward pass, a
KV-cached step-by-step pass and a differently batched pass disagree (and so would the
log-probabilities that PPO compares). Here capacity is causal and per sequence instead: the
assignment of the token at position t to expert e is kept iff fewer than

    capacity(t) = ceil(capacity_factor * k * (t + 1) / E)

assignments to e were kept at the earlier positions of the same sequence. The bound is Switch's
over the prefix 0..t, so an expert that is over-subscribed still serves its fair share of a
prefix and drops only the excess; a token's k experts are distinct, so the order of choices
within one position does not matter. A decision depends only on the token and the tokens
before it in its sequence; the KV cache carries each sequence's kept count per expert (and
layer) from one decoding step to the next. A token dropped by all its experts passes through
the block on the residual alone.

The load-balancing loss is alpha * E * sum_i f_i * P_i, with f_i the share of assignments
routed to expert i (before dropping) and P_i its mean router probability: 1 * alpha when
perfectly balanced. The optional router z-loss (Zoph et al. 2022, ST-MoE) is
beta * mean(logsumexp(router logits)^2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from phalanx.engine.model.config import GPTConfig
from phalanx.kernels.dispatch import choose
from phalanx.kernels.router import route_topk

if TYPE_CHECKING:
    from phalanx.engine.model.attention import KVCache


@dataclass(frozen=True)
class Routing:
    """One routing decision over the N = B * T tokens of B sequences (kept for losses,
    statistics and tests); token rows are sequence-major."""

    probs: torch.Tensor  # (N, E) router softmax
    experts: torch.Tensor  # (N, k) chosen experts, most likely first
    weights: torch.Tensor  # (N, k) their renormalised probabilities (rows sum to 1)
    kept: torch.Tensor  # (N, k) booleans: within the expert's capacity
    capacity: torch.Tensor  # (T,) each position's capacity per expert
    counts: torch.Tensor  # (B, E) assignments kept per expert in each sequence, all positions


def capacity_at(positions: torch.Tensor, k: int, capacity_factor: float,
                n_experts: int) -> torch.Tensor:
    """ceil(capacity_factor * k * (t + 1) / E) for each position t, in float64 so that the same
    position always gets the same integer however the tokens are batched."""
    share = capacity_factor * k / n_experts
    return torch.ceil((positions.double() + 1) * share).long()


def route(logits: torch.Tensor, k: int, capacity_factor: float, start: int = 0,
          counts: torch.Tensor | None = None) -> Routing:
    """Route `logits` (B, T, E), or (T, E) for one sequence, whose positions begin at `start`;
    `counts` (B, E) are the assignments already kept per expert in each sequence (from a
    cache), zero when None."""
    *lead, t, e = logits.shape
    b = math.prod(lead)
    flat = logits.reshape(b * t, e)
    if choose("moe_router", logits.device) != "reference":
        fused = route_topk(flat, k)  # the Triton kernel: softmax, top-k, renormalisation
        probs, experts, weights = fused.probs, fused.experts, fused.weights
    else:
        probs = flat.float().softmax(dim=-1)
        top, experts = probs.topk(k, dim=-1)
        weights = top / top.sum(dim=-1, keepdim=True)
    positions = torch.arange(start, start + t, device=logits.device)
    capacity = capacity_at(positions, k, capacity_factor, e)
    prior = (torch.zeros(b, e, dtype=torch.long, device=logits.device) if counts is None
             else counts)
    # routed[b, t, e]: 1 where token t of sequence b chose e (its k experts are distinct)
    routed = F.one_hot(experts, e).sum(dim=1).view(b, t, e)
    # kept count after t: y_t = min(y_(t-1) + routed_t, capacity_t), a clipped running sum
    # (y never exceeds the non-decreasing capacity), in closed form
    # y_t = R_t + min(prior, min_(s <= t)(capacity_s - R_s)) with R the inclusive cumsum
    total = routed.cumsum(dim=1)
    floor = (capacity[None, :, None] - total).cummin(dim=1).values
    kept_count = total + torch.minimum(prior[:, None, :], floor)
    before = torch.cat([prior[:, None, :], kept_count[:, :-1]], dim=1)
    kept_by_expert = (routed > 0) & (before < capacity[None, :, None])
    kept = kept_by_expert.view(b * t, e).gather(1, experts)
    final = kept_count[:, -1] if t > 0 else prior
    return Routing(probs, experts, weights, kept, capacity, final)


class MoE(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_experts, self.top_k = config.n_experts, config.top_k
        self.capacity_factor = config.capacity_factor
        self.aux_coef, self.z_coef = config.aux_loss_coef, config.z_loss_coef
        c, h, e = config.n_embd, config.hidden, config.n_experts
        self.router = nn.Linear(c, e, bias=False)
        scale = 1.0 / math.sqrt(c)
        self.w1 = nn.Parameter(torch.randn(e, c, h) * scale)
        self.w3 = nn.Parameter(torch.randn(e, c, h) * scale)
        self.w2 = nn.Parameter(torch.randn(e, h, c) / math.sqrt(h))
        self.dropout = nn.Dropout(config.dropout)
        self.aux_loss = torch.zeros(())  # of the last forward pass
        self.dropped_fraction = 0.0  # assignments over capacity in the last forward pass

    def forward(self, x: torch.Tensor, cache: KVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        """`x` (B, T, C), or (T, C) for one sequence; with a cache, its T positions follow the
        `cache.length` already there, and the layer's kept counts in it advance."""
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])
        logits = self.router(tokens)
        start = cache.length if cache is not None else 0
        counts = cache.expert_counts[layer] if cache is not None else None
        r = route(logits.view(*shape[:-1], self.n_experts), self.top_k, self.capacity_factor,
                  start, counts)
        if cache is not None:
            cache.expert_counts[layer] = r.counts
        # accumulate in the residual stream's dtype: under autocast the experts' products come
        # out in bf16 while the tokens (and so `out`) stay fp32
        out = torch.zeros_like(tokens)
        for expert in range(self.n_experts):
            rows, slot = torch.nonzero((r.experts == expert) & r.kept, as_tuple=True)
            if rows.numel() == 0:
                continue
            xe = tokens.index_select(0, rows)
            ye = (F.silu(xe @ self.w1[expert]) * (xe @ self.w3[expert])) @ self.w2[expert]
            weight = r.weights[rows, slot, None].to(out.dtype)
            out.index_add_(0, rows, ye.to(out.dtype) * weight)
        self.aux_loss = self.losses(logits, r)
        self.dropped_fraction = float(1.0 - r.kept.float().mean())
        return self.dropout(out.view(shape))

    def losses(self, logits: torch.Tensor, r: Routing) -> torch.Tensor:
        e = self.n_experts
        share = F.one_hot(r.experts, e).float().sum(dim=(0, 1)) / r.experts.numel()  # f_i
        balance = self.aux_coef * e * (share * r.probs.mean(dim=0)).sum()
        if self.z_coef == 0.0:
            return balance
        z = torch.logsumexp(logits.float(), dim=-1).pow(2).mean()
        return balance + self.z_coef * z
