"""The GPT-style decoder: token embedding, pre-norm blocks of attention and feed-forward on a
residual stream, a final norm and a language-model head tied to the embedding.

Laid out after nanoGPT's model.py (Karpathy), with the changes of later open models: rotary
positions instead of learned ones, RMSNorm, SwiGLU, grouped-query attention (LLaMA 2,
Mistral's sliding window), and an optional mixture of experts in place of the dense
feed-forward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from phalanx.engine.model.attention import CausalSelfAttention, KVCache
from phalanx.engine.model.config import GPTConfig
from phalanx.engine.model.layers import GeluMLP, SwiGLU, make_norm
from phalanx.engine.model.moe import MoE


@dataclass(frozen=True)
class Output:
    logits: torch.Tensor  # (B, T, vocab)
    loss: torch.Tensor | None  # lm_loss + aux_loss, what training minimises (None: no targets)
    lm_loss: torch.Tensor | None  # mean next-token cross-entropy, nats
    aux_loss: torch.Tensor  # MoE load-balancing (+ z) losses, 0 for a dense model
    dropped_fraction: float  # MoE assignments over capacity, averaged over layers
    # (B, T, n_embd) the final norm's output, what heads read: only when asked for, since
    # holding it keeps the tensor alive through backward (a step's peak memory)
    hidden: torch.Tensor | None = None


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.norm1, self.norm2 = make_norm(config), make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.ffn: nn.Module
        if config.ffn == "moe":
            self.ffn = MoE(config)
        else:
            dense = SwiGLU if config.ffn == "swiglu" else GeluMLP
            self.ffn = dense(config.n_embd, config.hidden, config.bias, config.dropout)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, cache: KVCache | None,
                layer: int) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), positions, cache, layer)
        h = self.norm2(x)
        # experts read the cache too: their capacity counts what earlier positions kept
        return x + (self.ffn(h, cache, layer) if isinstance(self.ffn, MoE) else self.ffn(h))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.n_embd)
        self.positions = (nn.Embedding(config.block_size, config.n_embd)
                          if config.positions == "learned" else None)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = make_norm(config)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.head.weight = self.embed.weight
        # recompute each block's activations in backward instead of keeping them: less memory
        # for about one more forward pass of compute (training only)
        self.checkpointing = False
        self.apply(self._init)
        # GPT-2's scaled init of the projections into the residual stream
        for name, p in self.named_parameters():
            if name.endswith(("proj.weight", "w2.weight")) or name.endswith(".ffn.w2"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, 0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        p = self.embed.weight
        return KVCache(self.config, batch, max_len, p.dtype, p.device)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                cache: KVCache | None = None, with_hidden: bool = False) -> Output:
        """Logits for the tokens `idx` (B, T); with `cache`, they continue the sequence held in
        it (which advances by T). `targets` (B, T), with -1 where no loss is wanted, give the
        losses; `with_hidden` returns the final hidden states too (Output.hidden)."""
        _, t = idx.shape
        start = cache.length if cache is not None else 0
        if cache is not None and start + t > cache.max_len:
            raise ValueError(f"cache holds {cache.max_len} positions; {start} + {t} do not fit")
        if cache is None and t > self.config.block_size:
            raise ValueError(f"sequence of {t} tokens exceeds block_size {self.config.block_size}")
        if self.positions is not None and start + t > self.config.block_size:
            raise ValueError(f"learned positions end at block_size {self.config.block_size}; "
                             f"{start} + {t} go past it")
        positions = torch.arange(start, start + t, device=idx.device)
        x = self.embed(idx)
        if self.positions is not None:
            x = x + self.positions(positions)
        x = self.drop(x)
        for layer, block in enumerate(self.blocks):
            if self.checkpointing and self.training and cache is None:
                x = checkpoint(block, x, positions, None, layer, use_reentrant=False)
            else:
                x = block(x, positions, cache, layer)
        if cache is not None:
            cache.length += t
        hidden = self.norm(x)
        logits = self.head(hidden)
        moe = [b.ffn for b in self.blocks if isinstance(b.ffn, MoE)]
        aux = sum((m.aux_loss for m in moe), torch.zeros((), device=idx.device))
        dropped = sum(m.dropped_fraction for m in moe) / len(moe) if moe else 0.0
        if targets is None:
            return Output(logits, None, None, aux, dropped, hidden if with_hidden else None)
        lm = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1),
                             ignore_index=-1)
        return Output(logits, lm + aux, lm, aux, dropped, hidden if with_hidden else None)
