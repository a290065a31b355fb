"""Adaptive micro-batches: the CPU memory meter, the budget probe, and the out-of-memory
retry that splits a step finer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from phalanx.engine.model.config import GPTConfig
from phalanx.engine.model.gpt import GPT
from phalanx.engine.train.data import TokenStream, split, step_batch
from phalanx.engine.train.micro_batch import (
    MB,
    BudgetError,
    MicroBatcher,
    pass_peak_bytes,
    probe_micro_batch,
    state_bytes,
)
from phalanx.engine.train.optim import adamw
from phalanx.engine.train.step import StepConfig, StepRunner

torch.set_num_threads(1)
CPU = torch.device("cpu")
STREAM = TokenStream(np.random.default_rng(0).integers(0, 29, 20_000))


def runner(checkpointing: bool = False, optimizer: str = "adamw") -> StepRunner:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=29, block_size=32, n_layer=2, n_head=2, n_embd=32)).train()
    model.checkpointing = checkpointing
    opt = (adamw(model, 1e-3, 0.1) if optimizer == "adamw" else
           torch.optim.SGD(model.parameters(), lr=0.1))
    return StepRunner(model, opt, StepConfig(lr=1e-3, warmup=1, steps=10, grad_clip=None))


def measure_with(r: StepRunner):  # type: ignore[no-untyped-def]
    def measure(n: int) -> int | None:
        batch = step_batch(STREAM, 0, 0, n, 32)
        return pass_peak_bytes(lambda: r.backward_only([batch]), CPU)
    return measure


def test_the_cpu_meter_sees_activations_grow_with_the_batch_and_shrink_with_checkpointing() -> None:
    plain, ckpt = measure_with(runner()), measure_with(runner(checkpointing=True))
    p = {n: plain(n) for n in (1, 2, 4, 8)}
    c = {n: ckpt(n) for n in (1, 8)}
    assert all(v is not None and v > 0 for v in (*p.values(), *c.values()))
    per = [(p[b] - p[a]) / (b - a) for a, b in ((1, 2), (2, 4), (4, 8))]  # type: ignore[operator]
    assert max(per) < 1.1 * min(per)  # linear in the micro-batch
    assert (c[8] - c[1]) < 0.6 * (p[8] - p[1])  # type: ignore[operator]
    # gradients: at least the weights' size is allocated during the pass
    params = sum(q.numel() * 4 for q in runner().model.parameters())
    assert p[1] > params  # type: ignore[operator]


def test_the_probe_finds_the_largest_micro_batch_within_the_budget() -> None:
    r = runner()
    measure = measure_with(r)
    state = state_bytes(r.model, 2)
    one, two = measure(1), measure(2)
    assert one is not None and two is not None
    budget = state + one + int(6.5 * (two - one))  # room for about 7 sequences
    probe = probe_micro_batch(measure, state, budget, limit=64)
    assert 2 <= probe.micro < 64
    assert probe.peak_mb * MB <= budget
    over = measure(probe.micro + 1)
    assert over is not None and state + over > budget  # one more does not fit
    assert "micro-batches of" in probe.describe() and "\n" not in probe.describe()
    assert probe_micro_batch(measure, state, budget, limit=3).micro == 3  # capped by the step


def linear(base: int, per: int, oom_above: int | None = None):  # type: ignore[no-untyped-def]
    """A device whose pass costs base + per * n bytes and, past `oom_above`, runs out."""
    calls: list[int] = []

    def measure(n: int) -> int | None:
        calls.append(n)
        return None if oom_above is not None and n > oom_above else base + per * n
    return measure, calls


def test_probe_search_on_a_linear_device() -> None:
    measure, calls = linear(100, 10)
    probe = probe_micro_batch(measure, 1000, 1000 + 100 + 10 * 37, limit=1000)
    assert probe.micro == 37 and calls == [1, 2, 37]  # two measurements predict, a third checks
    assert probe.per_sequence_mb == pytest.approx(10 / MB)
    # a device that runs out of memory before the budget says so: the probe steps down
    measure, calls = linear(100, 10, oom_above=20)
    assert probe_micro_batch(measure, 1000, 1000 + 100 + 10 * 37, limit=1000).micro <= 20
    with pytest.raises(BudgetError, match="too small for a micro-batch of one sequence"):
        probe_micro_batch(linear(100, 10)[0], 1000, 1050, limit=8)
    with pytest.raises(BudgetError, match="ran out of memory"):
        probe_micro_batch(linear(100, 10, oom_above=0)[0], 0, 10**9, limit=8)


def test_out_of_memory_splits_the_step_finer_and_trains_on_the_same_tokens() -> None:
    """CUDA is not on this machine: a step that raises CUDA's out-of-memory error for
    micro-batches over 2 rows stands in for one. The retried step must match a run that used
    micro-batches of 2 from the start."""
    shrinking, fixed = runner(optimizer="sgd"), runner(optimizer="sgd")
    batcher = MicroBatcher(8, CPU)
    for step in range(3):
        batch = step_batch(STREAM, 1, step, 8, 32)

        def train(micro: list[tuple[torch.Tensor, torch.Tensor]], step: int = step) -> object:
            if any(x.size(0) > 2 for x, _ in micro):
                shrinking.model(micro[0][0])  # a real partial forward first, then the failure
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")
            return shrinking.step(micro, step)

        batcher.run(step, batch, train)
        fixed.step(split(batch, 2), step)
    assert batcher.shrinks == [(0, 8, 4), (0, 4, 2)] and batcher.micro == 2
    for a, b in zip(shrinking.model.parameters(), fixed.model.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_out_of_memory_at_one_sequence_is_raised() -> None:
    def train(micro: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")

    batcher = MicroBatcher(2, CPU)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        batcher.run(0, step_batch(STREAM, 1, 0, 2, 32), train)
    assert batcher.shrinks == [(0, 2, 1)]
