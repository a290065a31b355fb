"""Text generation: greedy, sampled (temperature, top-k, nucleus) and beam search, all
decoding through the KV cache.

While the sequence fits the model's block size, each step runs only the new token through the
model and reads the earlier positions from the cache; past the block size the context is the
last `block_size` tokens, recomputed each step exactly as uncached decoding does, so both
paths give the same logits everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from phalanx.engine.model.attention import KVCache
from phalanx.engine.model.gpt import GPT


@dataclass(frozen=True)
class Sampling:
    """How to pick each next token. greedy: the most likely; otherwise a draw from the
    distribution at `temperature`, limited to the `top_k` most likely tokens and to the
    smallest set whose probability reaches `top_p` (Holtzman et al. 2020)."""

    greedy: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def next_logits(model: GPT, seq: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
    """Logits of the token after `seq` (B, L): through the cache while `seq` fits it (the
    cache then holds all of `seq`), else from the last block_size tokens."""
    if cache is not None and seq.size(1) <= cache.max_len:
        return model(seq[:, cache.length:], cache=cache).logits[:, -1]
    return model(seq[:, -model.config.block_size:]).logits[:, -1]


def filter_logits(logits: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """The logits at the sampling temperature with everything outside top-k / top-p at -inf."""
    logits = logits.float() / sampling.temperature
    if sampling.top_k is not None and sampling.top_k < logits.size(-1):
        kth = logits.topk(sampling.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p is not None and sampling.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        before = sorted_logits.softmax(dim=-1).cumsum(dim=-1) - sorted_logits.softmax(dim=-1)
        drop_sorted = before >= sampling.top_p  # the most likely token always stays
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def _decode(model: GPT, prompt: torch.Tensor, max_new_tokens: int, sampling: Sampling,
            generator: torch.Generator | None, use_cache: bool
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoding loop of `generate` and `sample_with_logprobs`: the sequences and each new
    token's log-probability under the model (temperature 1, unfiltered)."""
    seq = prompt
    cache = model.new_cache(seq.size(0), model.config.block_size) if use_cache else None
    logprobs = []
    for _ in range(max_new_tokens):
        logits = next_logits(model, seq, cache)
        if sampling.greedy:
            token = logits.argmax(dim=-1, keepdim=True)
        else:
            probs = filter_logits(logits, sampling).softmax(dim=-1)
            token = torch.multinomial(probs, 1, generator=generator)
        logprobs.append(logits.float().log_softmax(dim=-1).gather(1, token))
        seq = torch.cat([seq, token], dim=1)
    empty = torch.zeros(seq.size(0), 0, device=seq.device)
    return seq, torch.cat(logprobs, dim=1) if logprobs else empty


@torch.no_grad()
def generate(model: GPT, prompt: torch.Tensor, max_new_tokens: int,
             sampling: Sampling = Sampling(), generator: torch.Generator | None = None,
             use_cache: bool = True) -> torch.Tensor:
    """`prompt` (B, T) followed by `max_new_tokens` generated tokens."""
    return _decode(model, prompt, max_new_tokens, sampling, generator, use_cache)[0]


@torch.no_grad()
def sample_with_logprobs(model: GPT, prompt: torch.Tensor, max_new_tokens: int,
                         sampling: Sampling, generator: torch.Generator | None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """What an RLHF rollout needs: `prompt` (B, T) followed by `max_new_tokens` tokens decoded
    through the KV cache (greedy, or drawn with `generator` at the sampling's temperature,
    top-k and top-p), and each new token's log-probability (B, max_new_tokens) under the
    model's own distribution: log_softmax of the logits at temperature 1, unfiltered, the log
    pi of PPO's ratio and KL penalty. The sampling settings only choose the tokens.

    While prompt and continuation fit the block size these equal `token_logprobs` of the
    returned sequence from one full forward pass (to float rounding), for every model option,
    mixtures of experts included (their capacity is causal)."""
    if prompt.dim() != 2 or prompt.size(1) == 0:
        raise ValueError(f"prompt must be (batch, length >= 1) token ids, got shape "
                         f"{tuple(prompt.shape)}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    return _decode(model, prompt, max_new_tokens, sampling, generator, use_cache=True)


def token_logprobs(model: GPT, seq: torch.Tensor, start: int) -> torch.Tensor:
    """log p(seq[:, t] | seq[:, :t]) for t = start .. L-1 (B, L - start) from one full forward
    pass over `seq` (B, L), which must fit the block size: the full-pass side of PPO's ratio
    (differentiable, for the policy's update)."""
    if not 1 <= start <= seq.size(1):
        raise ValueError(f"start must be in [1, {seq.size(1)}], got {start}")
    logp = model(seq).logits[:, start - 1:-1].float().log_softmax(dim=-1)
    return logp.gather(2, seq[:, start:, None]).squeeze(2)


@torch.no_grad()
def beam_search(model: GPT, prompt: torch.Tensor, max_new_tokens: int, beams: int = 4,
                use_cache: bool = True) -> tuple[torch.Tensor, float]:
    """The continuation of `prompt` (T,) with the highest total log-probability among those
    kept by a beam of width `beams`, and that log-probability."""
    if beams < 1:
        raise ValueError(f"beams must be >= 1, got {beams}")
    seq = prompt.view(1, -1)
    scores = torch.zeros(1)
    cache = model.new_cache(1, model.config.block_size) if use_cache else None
    for _ in range(max_new_tokens):
        logp = next_logits(model, seq, cache).float().log_softmax(dim=-1)  # (W, V)
        total = (scores[:, None] + logp).view(-1)
        scores, flat = total.topk(min(beams, total.numel()))
        parents, tokens = flat // logp.size(1), flat % logp.size(1)
        seq = torch.cat([seq.index_select(0, parents), tokens[:, None]], dim=1)
        if cache is not None:
            cache.reorder(parents)
    return seq[0], float(scores[0])
