"""A sparse mixture of SwiGLU experts with top-k routing and expert capacity.

Routing follows Switch Transformer (Fedus et al. 2021) and its top-k generalisation: a linear
router gives each token a softmax over the E experts; the token goes to its k most likely
experts, weighted by those probabilities renormalised to sum to 1. Each expert takes at most
capacity = ceil(capacity_factor * k * tokens / E) assignments, first choices before second
choices, in token order; an assignment past the capacity is dropped, and a token dropped by all
its experts passes through the block on the residual alone. The load-balancing loss is
alpha * E * sum_i f_i * P_i, with f_i the share of assignments routed to expert i (before
dropping) and P_i its mean router probability: 1 * alpha when perfectly balanced. The optional
router z-loss (Zoph et al. 2022, ST-MoE) is beta * mean(logsumexp(router logits)^2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from phalanx.engine.model.config import GPTConfig
from phalanx.kernels.dispatch import choose
from phalanx.kernels.router import route_topk


@dataclass(frozen=True)
class Routing:
    """One routing decision over N tokens (kept for losses, statistics and tests)."""

    probs: torch.Tensor  # (N, E) router softmax
    experts: torch.Tensor  # (N, k) chosen experts, most likely first
    weights: torch.Tensor  # (N, k) their renormalised probabilities (rows sum to 1)
    kept: torch.Tensor  # (N, k) booleans: within the expert's capacity
    capacity: int


def route(logits: torch.Tensor, k: int, capacity_factor: float) -> Routing:
    n, e = logits.shape
    if choose("moe_router", logits.device) != "reference":
        fused = route_topk(logits, k)  # the Triton kernel: softmax, top-k, renormalisation
        probs, experts, weights = fused.probs, fused.experts, fused.weights
    else:
        probs = logits.float().softmax(dim=-1)
        top, experts = probs.topk(k, dim=-1)
        weights = top / top.sum(dim=-1, keepdim=True)
    capacity = math.ceil(capacity_factor * k * n / e)
    # queue order: every token's first choice, then every token's second choice, ...
    order = experts.t().reshape(-1)  # (k * N,)
    seat = (F.one_hot(order, e).cumsum(dim=0) * F.one_hot(order, e)).sum(dim=1) - 1
    kept = (seat < capacity).view(k, n).t()
    return Routing(probs, experts, weights, kept, capacity)


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])
        logits = self.router(tokens)
        r = route(logits, self.top_k, self.capacity_factor)
        out = torch.zeros_like(tokens)
        for expert in range(self.n_experts):
            rows, slot = torch.nonzero((r.experts == expert) & r.kept, as_tuple=True)
            if rows.numel() == 0:
                continue
            xe = tokens.index_select(0, rows)
            ye = (F.silu(xe @ self.w1[expert]) * (xe @ self.w3[expert])) @ self.w2[expert]
            out.index_add_(0, rows, ye * r.weights[rows, slot, None].to(ye.dtype))
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
