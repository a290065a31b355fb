"""Training the transformer (engine/train): schedule, optimizers, the step (accumulation,
precision, clipping, checkpointing), exact resume, and the data the batches come from."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import torch

from phalanx.engine.model.config import GPTConfig
from phalanx.engine.model.gpt import GPT
from phalanx.engine.model.tokenizer import CharTokenizer
from phalanx.engine.train.data import (
    DataError,
    TokenStream,
    eval_batches,
    parse_prompt_completion,
    prompt_completion_stream,
    split,
    step_batch,
)
from phalanx.engine.train.optim import SAM, adamw, param_groups
from phalanx.engine.train.schedule import lr_at
from phalanx.engine.train.step import StepConfig, StepRunner

torch.set_num_threads(1)
V = 17
STREAM = TokenStream(np.random.default_rng(0).integers(0, V, 5000))


def tiny(**kw: object) -> GPT:
    torch.manual_seed(0)
    base: dict[str, object] = dict(vocab_size=V, block_size=16, n_layer=2, n_head=2, n_embd=16)
    base.update(kw)
    return GPT(GPTConfig(**base))  # type: ignore[arg-type]


def batches(step: int, micro: int = 1, batch: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return split(step_batch(STREAM, 5, step, batch * micro, 16), batch)


# ---- schedule and optimizers ----------------------------------------------------------------


def test_warmup_then_cosine_to_the_floor() -> None:
    lrs = [lr_at(s, 1.0, 10, 110, 0.1) for s in range(120)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[60] == pytest.approx(0.55)
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))
    assert lrs[110:] == [pytest.approx(0.1)] * 10


def test_weight_decay_spares_gains_and_biases() -> None:
    model = tiny(norm="layer", bias=True)
    decayed, spared = param_groups(model, 0.1)
    assert all(p.dim() >= 2 for p in decayed["params"])  # type: ignore[attr-defined]
    assert all(p.dim() == 1 for p in spared["params"])  # type: ignore[attr-defined]
    assert spared["weight_decay"] == 0.0 and len(spared["params"]) > 0  # type: ignore[arg-type]


def test_sam_step_follows_its_definition_on_a_quadratic() -> None:
    a = torch.tensor([[3.0, 1.0], [1.0, 2.0]])
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    sam = SAM(torch.optim.SGD([w], lr=0.1), rho=0.05)
    w0 = w.detach().clone()
    (0.5 * w @ a @ w).backward()
    sam.ascend()
    sam.zero_grad()
    (0.5 * w @ a @ w).backward()
    sam.step()
    g1 = a @ w0
    g2 = a @ (w0 + 0.05 * g1 / g1.norm())
    torch.testing.assert_close(w.detach(), w0 - 0.1 * g2)


# ---- the step ----------------------------------------------------------------------------------


def _run(model: GPT, config: StepConfig, steps: range, micro: int = 1) -> StepRunner:
    runner = StepRunner(model, adamw(model, config.lr, 0.1), config)
    for s in steps:
        runner.step(batches(s, micro), s)
    return runner


def test_accumulating_micro_batches_equals_one_big_batch() -> None:
    config = StepConfig(lr=1e-2, warmup=1, steps=10, grad_clip=None)
    split, whole = tiny(), tiny()
    # SGD: the update is linear in the gradient (Adam would magnify float rounding where its
    # second moment is tiny)
    r1 = StepRunner(split, torch.optim.SGD(split.parameters(), lr=0.1), config)
    r2 = StepRunner(whole, torch.optim.SGD(whole.parameters(), lr=0.1), config)
    for s in range(3):
        parts = batches(s, micro=2)
        r1.step(parts, s)
        r2.step([(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))], s)
    for a, b in zip(split.parameters(), whole.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_uneven_micro_batches_weigh_by_their_rows() -> None:
    """10 sequences as micro-batches of 4, 3 and 3 give the gradient of the 10 at once."""
    config = StepConfig(lr=1e-2, warmup=1, steps=10, grad_clip=None)
    uneven, whole = tiny(), tiny()
    r1 = StepRunner(uneven, torch.optim.SGD(uneven.parameters(), lr=0.1), config)
    r2 = StepRunner(whole, torch.optim.SGD(whole.parameters(), lr=0.1), config)
    for s in range(3):
        batch = step_batch(STREAM, 5, s, 10, 16)
        a, b = r1.step(split(batch, 4), s), r2.step([batch], s)
        assert a.loss == pytest.approx(b.loss, rel=1e-5)
    for a, b in zip(uneven.parameters(), whole.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_clipping_bounds_the_update_and_reports_the_norm() -> None:
    model = tiny()
    runner = StepRunner(model, torch.optim.SGD(model.parameters(), lr=1.0),
                        StepConfig(lr=1.0, min_lr=1.0, warmup=0, grad_clip=0.01))
    before = [p.detach().clone() for p in model.parameters()]
    stats = runner.step(batches(0), 0)
    moved = torch.linalg.vector_norm(torch.stack([
        torch.linalg.vector_norm(p.detach() - b) for p, b in zip(model.parameters(), before,
                                                                 strict=True)]))
    assert stats.grad_norm > 0.01 and float(moved) == pytest.approx(0.01, rel=1e-3)


def test_bf16_autocast_trains_on_the_cpu_and_fp16_is_refused_there() -> None:
    fp32 = _run(tiny(), StepConfig(lr=1e-2, warmup=1, steps=5), range(1))
    bf16 = StepRunner(tiny(), adamw(tiny(), 1e-2, 0.1), StepConfig(precision="bf16"))
    a, b = fp32.step(batches(1), 1), bf16.step(batches(0), 0)
    assert abs(a.lm_loss - b.lm_loss) < 0.1 and not b.skipped
    with pytest.raises(ValueError, match="fp16 training needs a CUDA device"):
        StepRunner(tiny(), adamw(tiny(), 1e-2, 0.1), StepConfig(precision="fp16"))
    with pytest.raises(ValueError, match="precision must be"):
        StepConfig(precision="fp8")  # type: ignore[arg-type]


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    grads = []
    for checkpointing in (False, True):
        model = tiny(dropout=0.1, ffn="moe", n_experts=2, top_k=1).train()
        model.checkpointing = checkpointing
        torch.manual_seed(3)
        x, y = batches(0)[0]
        model(x, targets=y).loss.backward()  # type: ignore[union-attr]
        grads.append([p.grad.clone() for p in model.parameters()])  # type: ignore[union-attr]
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("sam", [False, True])
def test_resume_is_exact(sam: bool) -> None:
    """Train 2N steps == train N, save, resume in a fresh process state, train N more."""
    config = StepConfig(lr=3e-3, warmup=2, steps=8, sam_rho=0.05 if sam else None)

    def optimizer(model: GPT) -> torch.optim.Optimizer | SAM:
        base = adamw(model, config.lr, 0.1)
        return SAM(base, 0.05) if sam else base

    straight = tiny(dropout=0.1).train()
    torch.manual_seed(11)
    runner = StepRunner(straight, optimizer(straight), config)
    for s in range(8):
        runner.step(batches(s, micro=2), s)

    first = tiny(dropout=0.1).train()
    torch.manual_seed(11)
    runner = StepRunner(first, optimizer(first), config)
    for s in range(4):
        runner.step(batches(s, micro=2), s)
    saved = io.BytesIO()
    torch.save({"model": first.state_dict(), "runner": runner.state_dict()}, saved)
    torch.manual_seed(999)  # whatever happened in between
    saved.seek(0)
    state = torch.load(saved, weights_only=True)
    resumed = tiny(dropout=0.1).train()
    resumed.load_state_dict(state["model"])
    runner = StepRunner(resumed, optimizer(resumed), config)
    runner.load_state_dict(state["runner"])
    for s in range(4, 8):
        runner.step(batches(s, micro=2), s)
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


# ---- data -----------------------------------------------------------------------------------------


def test_a_batch_is_a_pure_function_of_seed_and_step() -> None:
    x, y = step_batch(STREAM, 5, 3, 4, 16)
    x2, y2 = step_batch(STREAM, 5, 3, 4, 16)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one
    assert not torch.equal(x, step_batch(STREAM, 5, 4, 4, 16)[0])
    assert not torch.equal(x, step_batch(STREAM, 6, 3, 4, 16)[0])
    with pytest.raises(DataError, match="cannot fill a window"):
        step_batch(TokenStream(np.arange(10)), 0, 0, 1, 16)


def test_micro_batches_are_even_slices_of_the_step_batch() -> None:
    x, y = step_batch(STREAM, 5, 3, 10, 16)
    parts = split((x, y), 4)
    assert [p[0].size(0) for p in parts] == [4, 3, 3]
    assert torch.equal(torch.cat([p[0] for p in parts]), x)
    assert torch.equal(torch.cat([p[1] for p in parts]), y)
    assert [p[0].size(0) for p in split((x, y), 10)] == [10]
    assert [p[0].size(0) for p in split((x, y), 1)] == [1] * 10


def test_evaluation_windows_predict_every_token_once() -> None:
    stream = TokenStream(np.arange(100) % V)
    got = eval_batches(stream, batch=3, block=8)
    targets = torch.cat([y.reshape(-1) for _, y in got])
    assert targets.tolist() == (np.arange(1, 97) % V).tolist()  # 12 windows of 8


def test_prompt_completion_lines_carry_loss_on_the_completion_only() -> None:
    pairs = parse_prompt_completion(["I like to cook in the |kitchen\n", "\n", "a|b"])
    assert pairs == [("I like to cook in the ", "kitchen"), ("a", "b")]
    tok = CharTokenizer("I liketocknhabs\n")
    stream = prompt_completion_stream(pairs, tok)
    assert stream.loss is not None
    text = tok.decode(stream.tokens.tolist())
    assert text == "I like to cook in the kitchen\nab\n"
    scored = "".join(c for c, keep in zip(text, stream.loss, strict=True) if keep)
    assert scored == "kitchen\nb\n"
    _, y = step_batch(stream, 0, 0, 2, 8)
    assert (y == -1).any() and (y != -1).any()
    for bad, reason in ((["no bar here"], "data.txt:1: expected 'prompt|completion'"),
                        (["ok|fine", "a|b|c"], "data.txt:2: expected"),
                        (["x|"], "data.txt:1: empty completion"), ([""], "no prompt")):
        with pytest.raises(DataError, match=reason):
            parse_prompt_completion(bad, "data.txt")
