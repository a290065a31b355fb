"""The transformer (engine/model): configuration checks, attention variants against their
definitions, the KV cache against uncached decoding, MoE routing conventions, generation."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from phalanx.engine.model.attention import attention_mask
from phalanx.engine.model.config import ConfigError, GPTConfig
from phalanx.engine.model.generate import Sampling, beam_search, filter_logits, generate
from phalanx.engine.model.gpt import GPT
from phalanx.engine.model.layers import RMSNorm, Rotary, SwiGLU
from phalanx.engine.model.moe import MoE, route

torch.set_num_threads(1)
V = 23  # an odd vocabulary, so no shape lines up by accident


def small(**kw: object) -> GPTConfig:
    base: dict[str, object] = dict(vocab_size=V, block_size=32, n_layer=2, n_head=4,
                                   n_embd=32)
    base.update(kw)
    return GPTConfig(**base)  # type: ignore[arg-type]


def model_of(config: GPTConfig, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(config).eval()


def tokens(b: int, t: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (b, t), generator=torch.Generator().manual_seed(seed))


VARIANTS = {
    "mha": {},
    "gqa": {"n_kv_head": 2},
    "mqa": {"n_kv_head": 1},
    "window": {"sliding_window": 5},
    "layernorm": {"norm": "layer", "bias": True},
    "moe": {"ffn": "moe", "n_experts": 4, "top_k": 2, "capacity_factor": 8.0},
    # GPT-2's architecture, nanoGPT's layout
    "gpt2": {"positions": "learned", "ffn": "gelu", "norm": "layer", "bias": True},
}


# ---- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "field"), [
    ({"n_embd": 30}, "n_head"), ({"n_kv_head": 3}, "n_kv_head"), ({"top_k": 5}, "top_k"),
    ({"n_embd": 12, "n_head": 4}, "head size"), ({"dropout": 1.0}, "dropout"),
    ({"sliding_window": 0}, "sliding_window"), ({"vocab_size": 0}, "vocab_size"),
    ({"norm": "batch"}, "norm"), ({"capacity_factor": 0.0}, "capacity_factor"),
    ({"positions": "alibi"}, "positions"), ({"ffn": "relu"}, "ffn"),
])
def test_bad_configs_name_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field) as err:
        small(**change)
    assert "\n" not in str(err.value)


def test_config_round_trips_through_json(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "config.json"
    config = small(ffn="moe", n_kv_head=2, sliding_window=8)
    config.save(path)
    assert GPTConfig.load(path) == config
    with pytest.raises(ConfigError, match="unknown model config fields \\['colour'\\]"):
        GPTConfig.from_dict({**config.to_dict(), "colour": "red"})
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON object"):
        GPTConfig.load(path)
    assert small().hidden == 88 and small(n_embd=128).hidden == 344  # 8/3 d, multiple of 8


# ---- layers against their definitions ---------------------------------------------------------


def test_rmsnorm_matches_its_definition() -> None:
    x = torch.randn(3, 5, 16)
    norm = RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2.0, 16))
    expected = x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), expected, rtol=1e-5, atol=1e-6)
    # its hand-written backward against autograd through the definition
    x.requires_grad_(True)
    upstream = torch.randn(3, 5, 16)
    got = torch.autograd.grad(norm(x), (x, norm.weight), upstream)
    ref = torch.autograd.grad(x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-6)
                              * norm.weight, (x, norm.weight), upstream)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    half = norm(x.detach().half())
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), expected.detach(), rtol=2e-3, atol=2e-3)


def test_rotary_scores_depend_only_on_the_distance() -> None:
    rot = Rotary(8, cached=16)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)  # (B, T, heads, head_dim)

    def score(i: int, j: int) -> float:
        return float((rot(q, i) * rot(k, j)).sum())

    assert score(3, 1) == pytest.approx(score(10, 8), abs=1e-5)
    assert score(0, 0) == pytest.approx(float((q * k).sum()), abs=1e-6)  # position 0: identity
    assert score(3, 1) != pytest.approx(score(3, 2), abs=1e-3)
    assert score(40, 5) == pytest.approx(score(36, 1), abs=1e-5)  # past the cached table


def test_attention_mask_is_causal_and_windowed() -> None:
    mask = attention_mask(torch.arange(5), 5, window=2)
    assert mask.tolist() == [[i - 2 < j <= i for j in range(5)] for i in range(5)]
    shifted = attention_mask(torch.tensor([3, 4]), 5, window=None)  # decoding after a cache
    assert shifted.tolist() == [[j <= 3 for j in range(5)], [True] * 5]


def test_attention_matches_a_naive_implementation_with_gqa() -> None:
    config = small(n_layer=1, n_kv_head=2, sliding_window=3)
    attn = model_of(config).blocks[0].attn
    x = torch.randn(2, 7, 32)
    b, t, c, h, kvh, d = 2, 7, 32, 4, 2, 8
    q, k, v = attn.qkv(x).split([c, kvh * d, kvh * d], dim=2)
    pos = torch.arange(t)
    q = attn.rotary(q.view(b, t, h, d)).transpose(1, 2)
    k = attn.rotary(k.view(b, t, kvh, d)).transpose(1, 2)
    v = v.view(b, t, kvh, d).transpose(1, 2)
    out = torch.empty(b, h, t, d)
    for head in range(h):
        g = head // (h // kvh)  # query heads 0,1 read kv head 0; 2,3 read kv head 1
        scores = q[:, head] @ k[:, g].transpose(-1, -2) / math.sqrt(d)
        allowed = torch.tensor([[i - 3 < j <= i for j in range(t)] for i in range(t)])
        scores = scores.masked_fill(~allowed, float("-inf"))
        out[:, head] = scores.softmax(-1) @ v[:, g]
    expected = attn.proj(out.transpose(1, 2).reshape(b, t, c))
    torch.testing.assert_close(attn(x, pos), expected, rtol=1e-5, atol=1e-5)


def test_gqa_shrinks_the_key_value_projection() -> None:
    full, grouped = GPT(small()), GPT(small(n_kv_head=1))
    assert full.blocks[0].attn.qkv.weight.shape == (96, 32)
    assert grouped.blocks[0].attn.qkv.weight.shape == (48, 32)  # 32 queries + 2 * 8
    assert grouped.num_params() < full.num_params()


# ---- the model ------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_initial_loss_is_near_uniform_and_gradients_flow(variant: str) -> None:
    torch.manual_seed(0)
    model = GPT(small(**VARIANTS[variant])).train()
    out = model(tokens(4, 16), targets=tokens(4, 16, seed=9))
    assert out.logits.shape == (4, 16, V)
    assert abs(float(out.lm_loss.detach()) - math.log(V)) < 0.25  # type: ignore[union-attr]
    out.loss.backward()  # type: ignore[union-attr]
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing
    assert model.head.weight is model.embed.weight


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_causal_no_logit_depends_on_a_later_token(variant: str) -> None:
    model = model_of(small(**VARIANTS[variant]))
    idx = tokens(1, 12)
    changed = idx.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % V
    a, b = model(idx).logits, model(changed).logits
    torch.testing.assert_close(a[:, :8], b[:, :8])
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_sliding_window_forgets_tokens_beyond_it() -> None:
    model = model_of(small(n_layer=1, sliding_window=4))
    idx = tokens(1, 10)
    changed = idx.clone()
    changed[0, 0] = (changed[0, 0] + 1) % V
    a, b = model(idx).logits, model(changed).logits
    assert not torch.allclose(a[:, 1:4], b[:, 1:4])  # token 0 is within the window of 1..3
    torch.testing.assert_close(a[:, 4:], b[:, 4:])  # and outside the window of 4..9


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cached_decoding_gives_the_uncached_logits(variant: str) -> None:
    model = model_of(small(**VARIANTS[variant]))
    idx = tokens(2, 20)
    full = model(idx).logits
    cache = model.new_cache(2, 32)
    steps = [model(idx[:, :7], cache=cache).logits]  # a prompt, then one token at a time
    steps += [model(idx[:, t:t + 1], cache=cache).logits for t in range(7, 20)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-4, atol=1e-5)
    assert cache.length == 20
    with pytest.raises(ValueError, match="cache holds 32 positions"):
        model(tokens(2, 13), cache=cache)


def test_dropout_acts_in_training_only() -> None:
    torch.manual_seed(0)
    model = GPT(small(dropout=0.2))
    idx = tokens(2, 10)
    model.train()
    assert not torch.allclose(model(idx).logits, model(idx).logits)
    model.eval()
    torch.testing.assert_close(model(idx).logits, model(idx).logits)


def test_too_long_a_sequence_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds block_size 32"):
        model_of(small())(tokens(1, 33))


def test_learned_positions_end_at_the_block_size_even_through_a_cache() -> None:
    model = model_of(small(**VARIANTS["gpt2"]))
    cache = model.new_cache(1, 40)  # rotary positions could go on; a learned table cannot
    model(tokens(1, 30), cache=cache)
    with pytest.raises(ValueError, match="learned positions end at block_size 32"):
        model(tokens(1, 3), cache=cache)


def test_gelu_mlp_is_four_wide_and_matches_its_definition() -> None:
    config = small(ffn="gelu")
    ffn = model_of(config).blocks[0].ffn
    assert config.hidden == 4 * 32 and ffn.w1.out_features == 128
    x = torch.randn(3, 5, 32)
    expected = ffn.w2(0.5 * ffn.w1(x) * (1 + torch.erf(ffn.w1(x) / math.sqrt(2))))
    torch.testing.assert_close(ffn(x), expected)


# ---- mixture of experts -----------------------------------------------------------------------


def test_routing_gives_k_distinct_experts_with_weights_summing_to_one() -> None:
    logits = torch.randn(50, 6)
    r = route(logits, k=3, capacity_factor=10.0)
    assert r.experts.shape == (50, 3)
    assert all(len(set(row)) == 3 for row in r.experts.tolist())
    torch.testing.assert_close(r.weights.sum(-1), torch.ones(50))
    probs = logits.softmax(-1)
    assert (probs.gather(1, r.experts[:, :1]) >= probs.max(-1, keepdim=True).values).all()
    assert r.kept.all()  # ample capacity


def test_capacity_grows_with_position_and_counts_only_earlier_kept_tokens() -> None:
    # every token's first choice is expert 0, second choice expert 1
    logits = torch.tensor([[3.0, 2.0, 0.0, 0.0]] * 8)
    r = route(logits, k=2, capacity_factor=1.0)  # capacity at t: ceil(1 * 2 * (t + 1) / 4)
    assert r.capacity.tolist() == [1, 1, 2, 2, 3, 3, 4, 4]
    alternate = [True, False] * 4  # each expert is full after every kept token, then grows
    assert r.kept[:, 0].tolist() == alternate and r.kept[:, 1].tolist() == alternate
    assert r.counts.tolist() == [[4, 4, 0, 0]]
    moe = MoE(small(ffn="moe", n_experts=4, top_k=2, capacity_factor=1.0))
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[0, 0], moe.router.weight[1, 0] = 3.0, 2.0
    x = torch.zeros(8, 32)
    x[:, 0] = 1.0
    out = moe(x)
    assert moe.dropped_fraction == pytest.approx(0.5)
    assert (out[1::2] == 0).all() and out[::2].abs().sum() > 0  # dropped tokens: residual only


def test_capacity_is_per_sequence_and_resumes_from_counts() -> None:
    logits = torch.randn(3, 12, 4, generator=torch.Generator().manual_seed(5)) * 3
    whole = route(logits, k=2, capacity_factor=1.0)
    assert not whole.kept.all()  # tight enough that some assignments drop
    alone = [route(logits[b], k=2, capacity_factor=1.0) for b in range(3)]
    assert torch.equal(whole.kept, torch.cat([a.kept for a in alone]))
    head = route(logits[:, :5], k=2, capacity_factor=1.0)
    tail = route(logits[:, 5:], k=2, capacity_factor=1.0, start=5, counts=head.counts)
    assert torch.equal(torch.cat([head.kept.view(3, 5, 2), tail.kept.view(3, 7, 2)], dim=1),
                       whole.kept.view(3, 12, 2))
    assert torch.equal(tail.counts, whole.counts)


def test_load_balancing_loss_is_alpha_when_balanced_and_grows_when_not() -> None:
    config = small(ffn="moe", n_experts=4, top_k=1, aux_loss_coef=1.0)
    moe = MoE(config)
    balanced = torch.eye(4).repeat(8, 1) * 5.0  # token j prefers expert j mod 4, symmetrically
    assert float(moe.losses(balanced, route(balanced, 1, 1.0))) == pytest.approx(1.0, abs=1e-6)
    skewed = torch.zeros(32, 4)
    skewed[:, 0] = 5.0
    assert float(moe.losses(skewed, route(skewed, 1, 1.0))) > 3.5  # near E when all pick one
    z = MoE(small(ffn="moe", n_experts=4, top_k=1, aux_loss_coef=0.0, z_loss_coef=0.5))
    expected = 0.5 * torch.logsumexp(skewed, -1).pow(2).mean()
    assert float(z.losses(skewed, route(skewed, 1, 1.0))) == pytest.approx(float(expected))


def test_one_expert_moe_equals_the_dense_feed_forward() -> None:
    config = small(ffn="moe", n_experts=1, top_k=1, capacity_factor=1.0)
    moe, dense = MoE(config), SwiGLU(32, config.hidden)
    with torch.no_grad():
        moe.w1[0].copy_(dense.w1.weight.t())
        moe.w3[0].copy_(dense.w3.weight.t())
        moe.w2[0].copy_(dense.w2.weight.t())
    x = torch.randn(3, 5, 32)
    torch.testing.assert_close(moe(x), dense(x), rtol=1e-5, atol=1e-6)
    assert moe.dropped_fraction == 0.0


def test_moe_model_reports_its_aux_loss_and_drops() -> None:
    model = model_of(small(ffn="moe", capacity_factor=0.5))
    out = model(tokens(2, 16), targets=tokens(2, 16, seed=2))
    assert float(out.aux_loss.detach()) > 0 and out.dropped_fraction > 0
    torch.testing.assert_close(out.loss, out.lm_loss + out.aux_loss)  # type: ignore[operator]


# ---- generation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["mha", "gqa", "window", "moe", "gpt2"])
def test_cached_and_uncached_generation_agree(variant: str) -> None:
    model = model_of(small(**VARIANTS[variant]))
    prompt = tokens(2, 5)
    greedy = Sampling(greedy=True)
    # 40 new tokens run past the 32-token block: the tail decodes from a cropped context
    cached = generate(model, prompt, 40, greedy)
    assert torch.equal(cached, generate(model, prompt, 40, greedy, use_cache=False))
    assert cached.shape == (2, 45) and torch.equal(cached[:, :5], prompt)
    sampled = Sampling(temperature=0.8, top_k=10, top_p=0.9)
    runs = [generate(model, prompt, 12, sampled, torch.Generator().manual_seed(7), use_cache=c)
            for c in (True, True, False)]
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])


def test_top_k_one_and_a_tiny_nucleus_are_greedy() -> None:
    model = model_of(small())
    prompt = tokens(1, 4)
    greedy = generate(model, prompt, 10, Sampling(greedy=True))
    for sampling in (Sampling(top_k=1), Sampling(top_p=1e-6)):
        assert torch.equal(generate(model, prompt, 10, sampling,
                                    torch.Generator().manual_seed(3)), greedy)


def test_nucleus_keeps_the_smallest_set_reaching_p() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = filter_logits(logits, Sampling(top_p=0.8)).isfinite()
    assert kept.tolist() == [[True, True, False, False]]
    kept = filter_logits(logits, Sampling(top_p=0.81)).isfinite()
    assert kept.tolist() == [[True, True, True, False]]
    assert filter_logits(logits, Sampling(top_k=2)).isfinite().tolist() == [
        [True, True, False, False]]
    with pytest.raises(ValueError, match="top_p"):
        Sampling(top_p=0.0)


def test_beam_search_finds_the_exhaustive_best_when_wide_enough() -> None:
    config = small(vocab_size=5, n_layer=1)
    model = model_of(config)
    prompt = torch.tensor([1, 2, 3])

    @torch.no_grad()
    def logprob(continuation: tuple[int, ...]) -> float:
        seq = torch.cat([prompt, torch.tensor(continuation)])[None]
        logp = F.log_softmax(model(seq).logits[0].float(), -1)
        return sum(float(logp[len(prompt) - 1 + i, tok]) for i, tok in enumerate(continuation))

    best = max(itertools.product(range(5), repeat=3), key=logprob)
    seq, score = beam_search(model, prompt, 3, beams=25)
    assert tuple(seq[3:].tolist()) == best and score == pytest.approx(logprob(best), abs=1e-4)
    uncached, _ = beam_search(model, prompt, 3, beams=25, use_cache=False)
    assert torch.equal(seq, uncached)
    one, _ = beam_search(model, prompt, 6, beams=1)
    assert torch.equal(one, generate(model, prompt[None], 6, Sampling(greedy=True))[0])


# ---- save and load --------------------------------------------------------------------------------


def test_saved_model_loads_with_identical_logits_and_tokenizer(tmp_path: object) -> None:
    from pathlib import Path

    from phalanx.engine.model.io import load_model, save_model
    from phalanx.engine.model.tokenizer import CharTokenizer

    folder = Path(str(tmp_path)) / "run"
    model = model_of(small(ffn="moe", n_kv_head=2))
    tok = CharTokenizer("abcdefghijklmnopqrstuvw")
    save_model(folder, model, tok)
    loaded, tok2 = load_model(folder)
    idx = tokens(2, 9)
    torch.testing.assert_close(loaded(idx).logits, model(idx).logits, rtol=0, atol=0)
    assert loaded.head.weight is loaded.embed.weight  # tied again
    assert tok2 is not None and tok2.encode("cab") == tok.encode("cab")
    # a folder whose weights do not fit its config: one line naming the file
    small(n_embd=64).save(folder / "config.json")
    with pytest.raises(ConfigError, match=r"model\.safetensors: does not fit the config") as err:
        load_model(folder)
    assert "\n" not in str(err.value)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match=r"no model\.safetensors"):
        load_model(folder)


# ---- the Triton kernels inside the model ---------------------------------------------------------


@pytest.mark.parametrize("ffn", ["swiglu", "moe"])
def test_the_model_on_the_triton_kernels_matches_the_torch_path(
        monkeypatch: pytest.MonkeyPatch, ffn: str) -> None:
    """PHALANX_KERNELS=triton runs attention, RMSNorm, SwiGLU and the MoE router through the
    Triton kernels (interpreted here: conftest sets TRITON_INTERPRET=1 without a GPU); logits
    and gradients match the default torch path."""
    from phalanx.kernels import dispatch

    config = small(n_layer=1, n_head=2, n_kv_head=1, n_embd=32, sliding_window=6, ffn=ffn,
                   capacity_factor=8.0)
    idx, targets = tokens(2, 11), tokens(2, 11, seed=4)
    results = []
    for mode in ("auto", "triton"):
        monkeypatch.setenv("PHALANX_KERNELS", mode)
        model = model_of(config).train()
        out = model(idx, targets=targets)
        out.loss.backward()  # type: ignore[union-attr]
        results.append((out.logits.detach(), [p.grad for p in model.parameters()]))
    used = dispatch.report()
    kernels = ("attention", "rmsnorm", "moe_router" if ffn == "moe" else "swiglu")
    assert all(used[k].startswith("triton-interpreted") for k in kernels), used
    (logits_t, grads_t), (logits_k, grads_k) = results
    torch.testing.assert_close(logits_k, logits_t, rtol=1e-4, atol=1e-5)
    for a, b in zip(grads_k, grads_t, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
