"""The MoE router: softmax over E experts, top-k per token, renormalised weights and the
statistics of the load-balancing loss, in one pass over the router logits.

For N tokens and E experts, with k experts per token:
- probs (N, E): the fp32 softmax of the logits;
- experts (N, k): the k most likely experts, most likely first; equal logits go to the lower
  expert index. Experts are ranked by logit, which orders them exactly as the probabilities
  do but without exp's rounding, so the kernel and the reference pick the same experts;
- weights (N, k): their probabilities renormalised to sum to 1;
- counts (E,): assignments per expert (the share is f_i = counts / (N * k));
- mean_probs (E,): P_i, the mean router probability of each expert.

torch.topk is not used: on the CPU it does not send ties to the lower index (zeros(1, 8).topk(2)
picks experts 6 and 5). A stable descending sort does.

The router backward recomputes in torch: E is tiny, the cost is negligible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from phalanx.kernels.dispatch import choose


@dataclass(frozen=True)
class RouterOutput:
    probs: torch.Tensor  # (N, E) fp32 softmax
    experts: torch.Tensor  # (N, k) int64, most likely first
    weights: torch.Tensor  # (N, k) fp32, rows sum to 1
    counts: torch.Tensor  # (E,) int64 assignments per expert
    mean_probs: torch.Tensor  # (E,) fp32 mean probability per expert


def _check(logits: torch.Tensor, k: int) -> None:
    if logits.dim() != 2:
        raise ValueError(f"router logits must be (tokens, experts), got {tuple(logits.shape)}")
    if not 1 <= k <= logits.shape[1]:
        raise ValueError(f"k={k} must be between 1 and the number of experts {logits.shape[1]}")


def _top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    return logits.float().sort(dim=-1, descending=True, stable=True).indices[:, :k]


def _weights(probs: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    top = probs.gather(-1, experts)
    return top / top.sum(dim=-1, keepdim=True)


def router_reference(logits: torch.Tensor, k: int) -> RouterOutput:
    _check(logits, k)
    probs = logits.float().softmax(dim=-1)
    experts = _top_k(logits, k)
    counts = torch.bincount(experts.flatten(), minlength=logits.shape[1])
    return RouterOutput(probs, experts, _weights(probs, experts), counts, probs.mean(dim=0))


@triton.jit
def _router_fwd(logits_ptr, probs_ptr, experts_ptr, weights_ptr, counts_ptr, psum_ptr,
                n_tokens, n_experts, K: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_E: tl.constexpr, BLOCK_K: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_E)
    kcols = tl.arange(0, BLOCK_K)
    mask = (rows < n_tokens)[:, None] & (cols < n_experts)[None, :]
    offs = rows[:, None] * n_experts + cols[None, :]
    # rows past the end load zeros (not -inf, which would make NaNs); they are never stored
    x = tl.load(logits_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    x = tl.where((cols < n_experts)[None, :], x, float("-inf"))
    p = tl.exp(x - tl.max(x, axis=1)[:, None])
    p = p / tl.sum(p, axis=1)[:, None]
    tl.store(probs_ptr + offs, p, mask=mask)

    # k rounds of "take the largest logit still available, lowest index on ties"; the
    # availability mask (rather than overwriting taken logits) stays right when logits are -inf
    avail = mask
    chosen = tl.zeros([BLOCK_N, BLOCK_E], dtype=tl.int32)
    top_e = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.int32)
    top_p = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    for j in tl.static_range(K):
        key = tl.where(avail, x, float("-inf"))
        best = tl.max(key, axis=1)
        idx = tl.min(tl.where(avail & (key == best[:, None]), cols[None, :], BLOCK_E), axis=1)
        hit = cols[None, :] == idx[:, None]
        top_e = tl.where(kcols[None, :] == j, idx[:, None], top_e)
        top_p = tl.where(kcols[None, :] == j, tl.sum(tl.where(hit, p, 0.0), axis=1)[:, None],
                         top_p)
        chosen += hit.to(tl.int32)
        avail = avail & (cols[None, :] != idx[:, None])

    kmask = (rows < n_tokens)[:, None] & (kcols < K)[None, :]
    koffs = rows[:, None] * K + kcols[None, :]
    tl.store(experts_ptr + koffs, top_e.to(tl.int64), mask=kmask)
    total = tl.sum(top_p, axis=1)
    total = tl.where(total > 0.0, total, 1.0)  # 0 only in the rows past the end: no 0 / 0
    tl.store(weights_ptr + koffs, top_p / total[:, None], mask=kmask)
    # per-program partials of the statistics, summed in torch: deterministic, no atomics
    part = pid.to(tl.int64) * BLOCK_E + cols
    tl.store(counts_ptr + part, tl.sum(chosen, axis=0))
    tl.store(psum_ptr + part, tl.sum(tl.where(mask, p, 0.0), axis=0))


def _router_triton(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
    n, e = logits.shape
    logits = logits.contiguous()
    dev = logits.device
    # tiles of at least 16 for Triton's layouts; about 4K logits per program
    block_e = max(16, triton.next_power_of_2(e))
    block_n = max(16, min(64, 4096 // block_e))
    block_k = max(16, triton.next_power_of_2(k))
    programs = triton.cdiv(n, block_n)
    probs = torch.empty(n, e, dtype=torch.float32, device=dev)
    experts = torch.empty(n, k, dtype=torch.int64, device=dev)
    weights = torch.empty(n, k, dtype=torch.float32, device=dev)
    counts = torch.empty(programs, block_e, dtype=torch.int32, device=dev)
    psum = torch.empty(programs, block_e, dtype=torch.float32, device=dev)
    if n > 0:
        _router_fwd[(programs,)](logits, probs, experts, weights, counts, psum, n, e, K=k,
                                 BLOCK_N=block_n, BLOCK_E=block_e, BLOCK_K=block_k)
    mean_probs = psum.sum(dim=0)[:e] / n
    return probs, experts, weights, counts.sum(dim=0)[:e].long(), mean_probs


class RouterFunction(torch.autograd.Function):
    """Triton forward; the backward recomputes the softmax and renormalisation in torch for the
    experts the forward chose (E is tiny, the cost is negligible)."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
        probs, experts, weights, counts, mean_probs = _router_triton(logits, k)
        ctx.save_for_backward(logits, experts)
        ctx.mark_non_differentiable(experts, counts)
        return probs, experts, weights, counts, mean_probs

    @staticmethod
    @once_differentiable  # no double backward: fail loudly, not with zeros
    def backward(ctx: Any, g_probs: torch.Tensor | None, _g_experts: Any,
                 g_weights: torch.Tensor | None, _g_counts: Any,
                 g_mean: torch.Tensor | None) -> tuple[torch.Tensor, None]:
        logits, experts = ctx.saved_tensors
        with torch.enable_grad():
            leaf = logits.detach().requires_grad_()
            probs = leaf.float().softmax(dim=-1)
            pairs = [(probs, g_probs), (_weights(probs, experts), g_weights),
                     (probs.mean(dim=0), g_mean)]
            outs = [out for out, g in pairs if g is not None]
            grads = [g for _, g in pairs if g is not None]
            if not outs:
                return torch.zeros_like(logits), None
            (d_logits,) = torch.autograd.grad(outs, leaf, grads)
        return d_logits, None


def route_topk(logits: torch.Tensor, k: int) -> RouterOutput:
    """Route N tokens over E experts (logits (N, E)) to k experts each; path by dispatch."""
    _check(logits, k)
    if choose("moe_router", logits.device) == "reference":
        return router_reference(logits, k)
    return RouterOutput(*RouterFunction.apply(logits, k))
