"""Exact generation for every model option: greedy decoding through the KV cache gives the
tokens of uncached decoding, and the per-token log-probabilities of a rollout
(`sample_with_logprobs`) equal those of one full forward pass (`token_logprobs`), as PPO
needs. Mixtures of experts are included at the default capacity factor with tokens actually
dropped, which needs capacity that is causal and per sequence (engine/model/moe.py); and MoE
trains under bf16 autocast."""

from __future__ import annotations

import pytest
import torch

from phalanx.engine.model.config import GPTConfig
from phalanx.engine.model.generate import (
    Sampling,
    beam_search,
    generate,
    sample_with_logprobs,
    token_logprobs,
)
from phalanx.engine.model.gpt import GPT
from phalanx.engine.model.moe import MoE, route
from phalanx.engine.train.optim import adamw
from phalanx.engine.train.step import StepConfig, StepRunner

torch.set_num_threads(1)
V = 23
PROMPT = 2  # positions 0 and 1 never drop (capacity 1 then 2 per expert), so drops come later
NEW = 40

OPTIONS = {
    "swiglu": {},
    "gelu": {"ffn": "gelu"},
    "gqa": {"n_kv_head": 2},
    "window": {"sliding_window": 6},  # sequences of 42 run far past it
    "moe": {"ffn": "moe"},  # n_experts 4, top_k 2, capacity_factor 1.25: the defaults
}


def model_of(option: str, seed: int, **kw: object) -> GPT:
    torch.manual_seed(seed)
    config: dict[str, object] = dict(vocab_size=V, block_size=48, n_layer=2, n_head=4,
                                     n_embd=32, **OPTIONS[option])
    config.update(kw)
    return GPT(GPTConfig(**config)).eval()  # type: ignore[arg-type]


def prompt_of(batch: int, seed: int) -> torch.Tensor:
    return torch.randint(0, V, (batch, PROMPT), generator=torch.Generator().manual_seed(seed))


def moe_drops(model: GPT, seq: torch.Tensor) -> float:
    with torch.no_grad():
        return model(seq).dropped_fraction


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_cached_rollouts_give_the_full_pass_tokens_and_logprobs(option: str, seed: int) -> None:
    model, prompt = model_of(option, seed), prompt_of(3, seed)
    greedy = Sampling(greedy=True)
    seq, logprobs = sample_with_logprobs(model, prompt, NEW, greedy, None)
    assert seq.shape == (3, PROMPT + NEW) and logprobs.shape == (3, NEW)
    assert torch.equal(seq, generate(model, prompt, NEW, greedy, use_cache=False))
    with torch.no_grad():
        full = token_logprobs(model, seq, PROMPT)
    assert float((full - logprobs).abs().max()) < 1e-5
    if option == "moe":  # drops happen, and only in the generated part
        assert moe_drops(model, prompt) == 0.0 and moe_drops(model, seq) > 0.0


@pytest.mark.parametrize("option", ["moe", "window"])
def test_sampled_rollouts_are_reproducible_and_exact(option: str) -> None:
    model, prompt = model_of(option, 4), prompt_of(4, 4)
    sampling = Sampling(temperature=1.3, top_k=12, top_p=0.95)
    runs = [sample_with_logprobs(model, prompt, NEW, sampling, torch.Generator().manual_seed(9))
            for _ in range(2)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    seq, logprobs = runs[0]
    with torch.no_grad():
        full = token_logprobs(model, seq, PROMPT)
    assert float((full - logprobs).abs().max()) < 1e-5
    assert bool((logprobs <= 0).all())  # the model's own log-probabilities, not the filtered
    uncached = generate(model, prompt, NEW, sampling, torch.Generator().manual_seed(9),
                        use_cache=False)
    assert torch.equal(seq, uncached)


def router_logits(model: GPT, seq: torch.Tensor) -> list[torch.Tensor]:
    """Each MoE layer's router logits (B, T, E) in a forward pass over `seq`."""
    seen: list[torch.Tensor] = []
    moes = [b.ffn for b in model.blocks if isinstance(b.ffn, MoE)]
    handles = [m.router.register_forward_hook(lambda _m, _a, out: seen.append(out))
               for m in moes]
    with torch.no_grad():
        model(seq)
    for h in handles:
        h.remove()
    return [s.view(*seq.shape, -1) for s in seen]


def test_a_batch_routes_each_sequence_as_it_would_alone() -> None:
    model = model_of("moe", 5)
    seq, _ = sample_with_logprobs(model, prompt_of(4, 5), NEW, Sampling(),
                                  torch.Generator().manual_seed(1))
    config = model.config
    for logits in router_logits(model, seq):
        together = route(logits, config.top_k, config.capacity_factor)
        alone = [route(logits[b], config.top_k, config.capacity_factor) for b in range(4)]
        assert not bool(together.kept.all())
        assert torch.equal(together.kept, torch.cat([a.kept for a in alone]))
        assert torch.equal(together.counts, torch.cat([a.counts for a in alone]))
    with torch.no_grad():  # end to end: a sequence's batch-mates change none of its logits
        batched = model(seq).logits
        single = torch.cat([model(seq[b:b + 1]).logits for b in range(4)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-6)


def test_beam_search_through_the_cache_reorders_the_expert_counts() -> None:
    model = model_of("moe", 6)
    prompt = prompt_of(1, 6)[0]
    cached, score = beam_search(model, prompt, 20, beams=4)
    uncached, score_uncached = beam_search(model, prompt, 20, beams=4, use_cache=False)
    assert torch.equal(cached, uncached) and score == pytest.approx(score_uncached, abs=1e-4)
    assert moe_drops(model, cached[None]) > 0.0


def test_rollout_inputs_are_checked() -> None:
    model = model_of("swiglu", 0)
    greedy = Sampling(greedy=True)
    with pytest.raises(ValueError, match=r"prompt must be \(batch, length >= 1\)"):
        sample_with_logprobs(model, torch.zeros(5, dtype=torch.long), 3, greedy, None)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 0"):
        sample_with_logprobs(model, prompt_of(1, 0), -1, greedy, None)
    seq, logprobs = sample_with_logprobs(model, prompt_of(2, 0), 0, greedy, None)
    assert seq.shape == (2, PROMPT) and logprobs.shape == (2, 0)
    with pytest.raises(ValueError, match=r"start must be in \[1, 2\]"):
        token_logprobs(model, seq, 0)


# ---- bf16 ------------------------------------------------------------------------------------


def moe_trainer(**kw: object) -> tuple[GPT, torch.Tensor, torch.Tensor]:
    model = model_of("moe", 7, capacity_factor=1.0, **kw).train()
    data = torch.randint(0, V, (4, 17), generator=torch.Generator().manual_seed(7))
    return model, data[:, :-1], data[:, 1:]


def test_moe_trains_under_bf16_autocast() -> None:
    model, x, y = moe_trainer()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, targets=y)
        out.loss.backward()  # type: ignore[union-attr]
        losses.append(float(out.loss.detach()))  # type: ignore[union-attr]
        optimizer.step()
    assert out.dropped_fraction > 0.0
    assert all(p.grad is not None and bool(p.grad.isfinite().all()) for p in model.parameters())
    assert losses[-1] < losses[0] - 0.05, losses


def test_moe_trains_through_the_step_runner_in_bf16() -> None:
    model, x, y = moe_trainer()
    runner = StepRunner(model, adamw(model, 3e-3, 0.1),
                        StepConfig(lr=3e-3, warmup=1, steps=6, precision="bf16"))
    stats = [runner.step([(x, y)], step) for step in range(6)]
    assert all(s.dropped_fraction > 0.0 and s.aux_loss > 0.0 for s in stats)
    assert stats[-1].lm_loss < stats[0].lm_loss - 0.05, [s.lm_loss for s in stats]
