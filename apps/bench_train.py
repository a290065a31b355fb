"""`phalanx bench train`: tokens per second of phalanx's training step against a plain PyTorch
loop, and peak memory with and without gradient checkpointing and accumulation.

The baseline is the loop anyone would write for a nanoGPT-style model of the same size
(learned positions, LayerNorm, GELU MLP of width 4d): forward, cross-entropy, backward,
clipping at 1 (nanoGPT's default), AdamW step. phalanx trains its own GPT through `StepRunner`
(schedule, clipping, statistics) twice over:
- built with the baseline's architecture (`positions: learned, ffn: gelu, norm: layer`,
  biases): the same model, so the ratio is what phalanx's engine costs;
- built with its default architecture (rotary positions, RMSNorm, SwiGLU of width 8d/3, the
  parameters of the 4d GELU MLP): the ratio adds what that architecture costs on this device.
All three use one thread and the same batches and take turns step by step in repeated timed
windows, so machine noise hits them alike.

Peak memory is a process's maximum resident set, which only grows, so each memory
configuration runs in a fresh process.
"""

from __future__ import annotations

import multiprocessing
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

from phalanx.apps.bench_report import results_table, save_report, stamp
from phalanx.engine.model.config import GPTConfig
from phalanx.engine.model.gpt import GPT
from phalanx.engine.train.data import Batch, TokenStream, split, step_batch
from phalanx.engine.train.optim import adamw
from phalanx.engine.train.step import StepConfig, StepRunner


@dataclass(frozen=True)
class Size:
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block: int = 64
    batch: int = 12
    vocab: int = 65  # tiny Shakespeare's characters


class PlainBlock(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class PlainGPT(nn.Module):
    def __init__(self, s: Size) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(s.vocab, s.n_embd), nn.Embedding(s.block, s.n_embd)
        self.blocks = nn.Sequential(*(PlainBlock(s.n_embd, s.n_head) for _ in range(s.n_layer)))
        self.ln = nn.LayerNorm(s.n_embd)
        self.head = nn.Linear(s.n_embd, s.vocab, bias=False)
        self.head.weight = self.tok.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.size(1)))
        return self.head(self.ln(self.blocks(x)))


def _batches(s: Size, count: int, micro: int = 1) -> list[list[Batch]]:
    stream = TokenStream(np.random.default_rng(0).integers(0, s.vocab, 200_000))
    return [split(step_batch(stream, 0, i, s.batch * micro, s.block), s.batch)
            for i in range(count)]


# GPTConfig fields that give phalanx's GPT the baseline's architecture
GPT2_ARCH: dict[str, Any] = {"positions": "learned", "ffn": "gelu", "norm": "layer", "bias": True}


def _phalanx(s: Size, checkpointing: bool = False,
             arch: dict[str, Any] | None = None) -> tuple[nn.Module, Any]:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=s.vocab, block_size=s.block, n_layer=s.n_layer,
                          n_head=s.n_head, n_embd=s.n_embd, **(arch or {}))).train()
    model.checkpointing = checkpointing
    runner = StepRunner(model, adamw(model, 1e-3, 0.1), StepConfig(lr=1e-3, warmup=10))
    step = iter(range(1 << 30))
    return model, lambda batches: runner.step(batches, next(step))


def _plain(s: Size) -> tuple[nn.Module, Any]:
    torch.manual_seed(0)
    model = PlainGPT(s).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)

    def step(batches: list[Batch]) -> None:
        for x, y in batches:
            loss = F.cross_entropy(model(x).view(-1, s.vocab), y.view(-1))
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # nanoGPT's default
        opt.step()
        opt.zero_grad(set_to_none=True)
    return model, step


def _window(steps: list[Any], batches: list[list[Batch]]) -> list[float]:
    """Seconds each side spends on the window's batches. The sides take turns step by step, in
    an order that rotates, so that a burst of machine noise lands on all of them alike."""
    spent = [0.0] * len(steps)
    for i, batch in enumerate(batches):
        for j in range(len(steps)):
            side = (i + j) % len(steps)
            start = time.perf_counter()
            steps[side](batch)
            spent[side] += time.perf_counter() - start
    return spent


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def throughput(s: Size, steps: int, repeats: int) -> dict[str, Any]:
    """Tokens per second of each side (median of the windows) and, per phalanx model, the
    median over windows of its rate divided by the baseline's in the same window."""
    torch.set_num_threads(1)
    batches = _batches(s, steps)
    sides = {"phalanx_gpt2_arch": _phalanx(s, arch=GPT2_ARCH), "phalanx_default": _phalanx(s),
             "plain": _plain(s)}
    step_fns = [step for _, step in sides.values()]
    _window(step_fns, batches[:3])  # warm up (allocator, kernels' first calls)
    tokens = steps * s.batch * s.block
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, seconds in zip(sides, _window(step_fns, batches), strict=True):
            rates[name].append(tokens / seconds)
    result: dict[str, Any] = {}
    for name, (model, _) in sides.items():
        result[name] = {"parameters": _params(model),
                        "tokens_per_second": statistics.median(rates[name])}
        if name != "plain":
            ratios = [a / b for a, b in zip(rates[name], rates["plain"], strict=True)]
            result[name] |= {"ratio": statistics.median(ratios), "ratios": ratios}
    return result


def _peak_rss(s: Size, checkpointing: bool, micro: int, queue: Any) -> None:
    torch.set_num_threads(1)
    _, step = _phalanx(s, checkpointing)
    for b in _batches(s, 3, micro):
        step(b)
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put(kib / 1024 if sys.platform != "darwin" else kib / 2**20)


def peak_memory(s: Size, checkpointing: bool, micro: int) -> float:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peak_rss, args=(s, checkpointing, micro, queue))
    proc.start()
    peak = float(queue.get(timeout=600))
    proc.join()
    return peak


def run_bench(s: Size, steps: int, repeats: int, out_file: Path,
              console: Console) -> dict[str, Any]:
    console.print(f"bench train: {s.n_layer} layers, {s.n_head} heads, {s.n_embd} wide, block "
                  f"{s.block}, batch {s.batch}, one thread; {repeats} x {steps} steps each ...")
    speed = throughput(s, steps, repeats)
    big = Size(s.n_layer, s.n_head, s.n_embd, 4 * s.block, 4 * s.batch, s.vocab)
    # the same tokens per step, in one pass or in 4 accumulated micro-batches
    memory = [{"block": big.block, "batch": big.batch, "checkpointing": c, "micro_batches": m,
               "peak_rss_mb": peak_memory(
                   Size(big.n_layer, big.n_head, big.n_embd, big.block, big.batch // m,
                        big.vocab), c, m)}
              for c, m in ((False, 1), (True, 1), (False, 4), (True, 4))]
    report = {"benchmark": "train", **stamp(), "torch": torch.__version__, "size": vars(s),
              "steps": steps, "repeats": repeats, **speed, "memory": memory}
    save_report(report, out_file)
    plain = speed["plain"]
    console.print(results_table(
        "training step, tokens per second (one thread, same size and batches)",
        ("phalanx model", "phalanx tok/s", "plain PyTorch tok/s", "phalanx/plain",
         "params (phalanx / plain)"),
        [(label, f"{speed[key]['tokens_per_second']:,.0f}",
          f"{plain['tokens_per_second']:,.0f}", f"{speed[key]['ratio']:.3f}",
          f"{speed[key]['parameters']:,} / {plain['parameters']:,}")
         for key, label in (("phalanx_gpt2_arch", "baseline's architecture (engine cost)"),
                            ("phalanx_default", "default: rotary, RMSNorm, SwiGLU"))]))
    console.print(results_table(
        f"peak memory of a phalanx training process (block {big.block}, batch {big.batch})",
        ("gradient checkpointing", "micro-batches (same tokens per step)", "peak RSS MB"),
        [(str(m["checkpointing"]), str(m["micro_batches"]), f"{m['peak_rss_mb']:,.0f}")
         for m in memory]))
    console.print(f"written to {out_file}")
    return report
