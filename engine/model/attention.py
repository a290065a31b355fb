"""Causal self-attention: multi-head or grouped-query, rotary positions, optional sliding
window, and a key/value cache for decoding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from phalanx.engine.model.config import GPTConfig
from phalanx.engine.model.layers import Rotary
from phalanx.kernels.attention import attention as fused_attention
from phalanx.kernels.dispatch import choose


class KVCache:
    """Keys and values of every layer for the positions decoded so far, preallocated, and for
    a mixture of experts each layer's kept assignments per expert in each sequence (the causal
    capacity of engine/model/moe.py reads them).

    `length` positions are filled; a forward pass writes its T new positions after them and the
    model then advances `length`. Beam search reorders the batch rows with `reorder`."""

    def __init__(self, config: GPTConfig, batch: int, max_len: int, dtype: torch.dtype,
                 device: torch.device | str = "cpu") -> None:
        shape = (batch, config.kv_heads, max_len, config.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layer)]
        self.values = [torch.zeros_like(k) for k in self.keys]
        experts = config.n_experts if config.ffn == "moe" else 0
        self.expert_counts = [torch.zeros(batch, experts, dtype=torch.long, device=device)
                              for _ in range(config.n_layer)]
        self.max_len = max_len
        self.length = 0

    def reorder(self, rows: torch.Tensor) -> None:
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]
        self.expert_counts = [c.index_select(0, rows) for c in self.expert_counts]


def attention_mask(query_pos: torch.Tensor, key_len: int,
                   window: int | None) -> torch.Tensor:
    """(T, key_len) booleans, True where a query may attend: keys at or before it, and within
    `window` positions of it (itself included) when a window is set."""
    key_pos = torch.arange(key_len, device=query_pos.device)
    allowed = key_pos[None, :] <= query_pos[:, None]
    if window is not None:
        allowed &= query_pos[:, None] - key_pos[None, :] < window
    return allowed


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.kv_heads, self.head_dim = config.n_head, config.kv_heads, config.head_dim
        self.window = config.sliding_window
        kv_dim = self.kv_heads * self.head_dim
        self.qkv = nn.Linear(config.n_embd, config.n_embd + 2 * kv_dim, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.rotary = (Rotary(self.head_dim, config.rope_base, cached=config.block_size)
                       if config.positions == "rotary" else None)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, positions: torch.Tensor,
                cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        """`x` (B, T, C) holds the tokens at `positions` (T,); with a cache, those follow the
        `cache.length` positions already in it."""
        B, T, C = x.shape
        kv_dim = self.kv_heads * self.head_dim
        start = cache.length if cache is not None else 0
        qk, v = self.qkv(x).split([C + kv_dim, kv_dim], dim=2)
        qk = qk.view(B, T, self.n_head + self.kv_heads, self.head_dim)
        if self.rotary is not None:
            qk = self.rotary(qk, start)  # queries and keys in one multiply
        q, k = (z.transpose(1, 2) for z in qk.split([self.n_head, self.kv_heads], dim=2))
        v = v.view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        if cache is not None:
            cache.keys[layer][:, :, start:start + T] = k
            cache.values[layer][:, :, start:start + T] = v
            k, v = cache.keys[layer][:, :, :start + T], cache.values[layer][:, :, :start + T]
        dropout = self.dropout if self.training else 0.0
        if dropout == 0.0 and choose("attention", x.device) != "reference":
            # the Triton kernel: grouped heads read in place, the window and cache offset inside
            y = fused_attention(q, k, v, self.window)
            return self.resid_dropout(self.proj(y.transpose(1, 2).contiguous().view(B, T, C)))
        if self.kv_heads != self.n_head:  # each group of query heads reads one key/value head
            repeat = self.n_head // self.kv_heads
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        if start == 0 and self.window is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:
            mask = attention_mask(positions, start + T, self.window)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.proj(y))
