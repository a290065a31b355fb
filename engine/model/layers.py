"""Normalization, rotary position embeddings and the SwiGLU feed-forward."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from phalanx.engine.model.config import GPTConfig
from phalanx.kernels.dispatch import choose
from phalanx.kernels.rmsnorm import rmsnorm
from phalanx.kernels.swiglu import swiglu


class _RMSNormFunction(torch.autograd.Function):
    """RMSNorm with a hand-derived backward, in fp32 whatever the activations' dtype:
    dx = rstd * (g·w − x̂ · mean(g·w · x̂)), dw = Σ g · x̂. On the CPU this is markedly cheaper
    than autograd through F.rms_norm, which is not a fused op there."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        x32 = x.float()
        rstd = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
        normed = x32 * rstd
        ctx.save_for_backward(normed, rstd, weight)
        return (normed * weight.float()).type_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        normed, rstd, weight = ctx.saved_tensors
        g = grad.float()
        gw = g * weight.float()
        dx = rstd * (gw - normed * (gw * normed).mean(-1, keepdim=True))
        dw = (g * normed).reshape(-1, normed.size(-1)).sum(0)
        return dx.type_as(grad), dw.type_as(weight), None


class RMSNorm(nn.Module):
    """x / rms(x) * weight (Zhang & Sennrich 2019): LayerNorm without centring or bias."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if choose("rmsnorm", x.device) != "reference":
            return rmsnorm(x, self.weight, self.eps)  # the Triton kernel
        return _RMSNormFunction.apply(x, self.weight, self.eps)  # type: ignore[no-any-return]


def make_norm(config: GPTConfig) -> nn.Module:
    if config.norm == "rms":
        return RMSNorm(config.n_embd, config.norm_eps)
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)


class Rotary(nn.Module):
    """Rotary position embeddings (Su et al. 2021, RoFormer) in the interleaved layout of
    LLaMA: channels (2i, 2i + 1) form a complex number rotated by position * freq_i, one
    complex multiply (measured twice as fast on the CPU as the rotate-half layout's
    concatenation). Positions are absolute, so a KV cache rotates each new query and key by its
    own position once."""

    def __init__(self, head_dim: int, base: float = 10_000.0, cached: int = 1024) -> None:
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
        self.register_buffer("inv_freq", inv_freq.float(), persistent=False)
        # e^(i * position * freq) for the first `cached` positions (rows past it on demand)
        self.register_buffer("turns", self._table(torch.arange(cached)), persistent=False)

    def _table(self, positions: torch.Tensor) -> torch.Tensor:
        angles = positions.float()[:, None] * self.inv_freq[None, :]  # (T, d/2)
        return torch.polar(torch.ones_like(angles), angles)

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Rotate `x` of shape (B, T, heads, head_dim), whose rows sit at positions start,
        start + 1, ... Heads come after positions, as a projection lays them out, so the
        queries and keys of one projection rotate together in one multiply."""
        end = start + x.size(1)
        turns = (self.turns[start:end] if end <= self.turns.size(0) else
                 self._table(torch.arange(start, end, device=self.inv_freq.device)))
        pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(pairs * turns[:, None]).flatten(-2).type_as(x)


class SwiGLU(nn.Module):
    """W2 (silu(W1 x) * W3 x) (Shazeer 2020, "GLU Variants Improve Transformer")."""

    def __init__(self, dim: int, hidden: int, bias: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=bias)
        self.w3 = nn.Linear(dim, hidden, bias=bias)
        self.w2 = nn.Linear(hidden, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w1(x), self.w3(x)
        gated = swiglu(a, b) if choose("swiglu", x.device) != "reference" else F.silu(a) * b
        return self.dropout(self.w2(gated))


class GeluMLP(nn.Module):
    """W2 gelu(W1 x): GPT-2's feed-forward, with the exact (erf) GELU that nanoGPT uses."""

    def __init__(self, dim: int, hidden: int, bias: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=bias)
        self.w2 = nn.Linear(hidden, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.w2(F.gelu(self.w1(x))))
