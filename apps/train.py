"""`phalanx train CONFIG`: the standalone trainer (one process, the original `./transformer`
job): data, model, the optimizer step of `engine/train`, evaluation, samples, checkpoints.

Outputs in the run folder: `model/` (safetensors weights, config, tokenizer), `checkpoint.pt`
(optimizer, loss scale and random state, for `--resume`), `metrics.json` (one row per
evaluation) and `summary.json`. Batches are pure functions of (seed, step), built ahead by a
small thread pool while the model trains, so resuming needs no loader state.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from phalanx.apps.runner import peak_memory_mb
from phalanx.apps.train_config import DataSection, TrainFile
from phalanx.engine.model.generate import Sampling, generate
from phalanx.engine.model.gpt import GPT
from phalanx.engine.model.io import load_model, save_model
from phalanx.engine.model.tokenizer import Tokenizer, train_tokenizer
from phalanx.engine.train.data import (
    Batch,
    DataError,
    TokenStream,
    eval_batches,
    parse_prompt_completion,
    prompt_completion_stream,
    step_batch,
    text_stream,
)
from phalanx.engine.train.micro_batch import (
    MB,
    MicroBatcher,
    Probe,
    pass_peak_bytes,
    probe_micro_batch,
    state_bytes,
)
from phalanx.engine.train.optim import SAM, adamw
from phalanx.engine.train.step import StepConfig, StepRunner
from phalanx.engine.train.synthetic import MarkovSource, corpus
from phalanx.kernels import dispatch


@dataclass(frozen=True)
class Data:
    train: TokenStream
    val: TokenStream
    tokenizer: Tokenizer
    entropy_rate: float | None  # nats/token: the best achievable loss, when known
    describe: str


def read_text(path: Path) -> str:
    """A text file, or every .txt file of a folder in name order."""
    try:
        if path.is_dir():
            files = sorted(path.glob("*.txt"))
            if not files:
                raise DataError(f"{path}: no .txt files in this folder")
            return "\n".join(f.read_text(encoding="utf-8") for f in files)
        return path.read_text(encoding="utf-8")
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start})") from None


def prepare_data(section: DataSection) -> Data:
    if section.kind == "synthetic":
        s = section.synthetic
        source = MarkovSource(s.vocab, s.order, s.concentration, s.seed)
        train, val = corpus(source, s.train_tokens, s.val_tokens, s.seed)
        return Data(TokenStream(train), TokenStream(val),
                    train_tokenizer("char", source.alphabet), source.entropy_rate(),
                    f"synthetic order-{s.order} Markov source over {s.vocab} symbols")
    assert section.path is not None  # the config checks it
    text = read_text(section.path)
    vocab = section.vocab_size if section.tokenizer == "bpe" else None
    if section.kind == "text":
        tokenizer = train_tokenizer(section.tokenizer, text, vocab)
        stream = text_stream(text, tokenizer)
    else:
        pairs = parse_prompt_completion(text.splitlines(), str(section.path))
        tokenizer = train_tokenizer(section.tokenizer, text + "\n", vocab)
        stream = prompt_completion_stream(pairs, tokenizer)
    train, val = stream.split(section.val_fraction)
    return Data(train, val, tokenizer, None,
                f"{section.path} ({len(text):,} characters, {section.tokenizer} tokens)")


def prefetched(make: Callable[[int], Batch], steps: range, depth: int,
               workers: int) -> Iterator[Batch]:
    """make(step) for each step in order, computed up to `depth` steps ahead in threads."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="loader") as pool:
        ahead: dict[int, Future[Batch]] = {}
        for step in steps:
            for s in range(step, min(step + depth, steps.stop)):
                if s not in ahead:
                    ahead[s] = pool.submit(make, s)
            yield ahead.pop(step).result()


@torch.no_grad()
def evaluate(model: GPT, batches: list[Batch]) -> float:
    """Mean next-token cross-entropy (nats) over every scored target of `batches`."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        logits = model(x).logits.float()
        scored = y != -1
        total += float(torch.nn.functional.cross_entropy(
            logits[scored], y[scored], reduction="sum"))
        count += int(scored.sum())
    model.train(was_training)
    return total / max(count, 1)


def sample_text(model: GPT, data: Data, tokens: int, seed: int) -> str:
    device = next(model.parameters()).device
    prompt = torch.from_numpy(data.val.tokens[:8].copy())[None].to(device)
    out = generate(model, prompt, tokens, Sampling(temperature=0.8, top_k=40),
                   torch.Generator(device).manual_seed(seed))
    return data.tokenizer.decode(out[0].tolist())


@dataclass
class TrainResult:
    summary: dict[str, Any]
    rows: list[dict[str, float]]


def run_training(file: TrainFile, out: Path, console: Console, resume: bool = False,
                 until: int | None = None) -> TrainResult:
    """Train per `file` into `out`; with `until`, stop (checkpointed) after that many steps of
    the full schedule, as if interrupted there."""
    t, m = file.train, file.model
    torch.set_num_threads(t.threads)
    torch.manual_seed(t.seed)
    device = pick_device(t.device)
    data = prepare_data(file.data)
    model = GPT(m.gpt(data.tokenizer.vocab_size)).to(device).train()
    model.checkpointing = t.checkpointing
    base = adamw(model, t.lr, t.weight_decay, betas=(0.9, t.beta2))
    optimizer = SAM(base, t.sam_rho) if t.optimizer == "sam" else base
    runner = StepRunner(model, optimizer, StepConfig(
        lr=t.lr, min_lr=t.min_lr, warmup=t.warmup, steps=t.steps, grad_clip=t.grad_clip,
        precision=t.precision, sam_rho=t.sam_rho if t.optimizer == "sam" else None))
    start, rows = 0, []
    if resume and (out / "checkpoint.pt").exists():
        start, rows = _restore(out, model, runner)
        console.print(f"resumed at step {start}")
    block, sequences = m.block_size, t.batch * t.accumulate
    tokens_per_step = sequences * block
    val_batches = eval_batches(data.val, t.batch, block, t.eval_batches)
    h = data.entropy_rate
    console.print(f"{file.name}: {model.num_params():,} parameters, {data.describe}; "
                  f"{len(data.train):,} train / {len(data.val):,} validation tokens; "
                  f"{tokens_per_step:,} tokens per step on {device}" + (f"; entropy rate H = {h:.4f} "
                                                             f"nats/token" if h else ""),
                  soft_wrap=True)
    probe = None
    if t.memory_budget_mb is not None:
        probe = probe_memory(runner, data.train, sequences, block, t.memory_budget_mb,
                             state_copies=3 if t.optimizer == "sam" else 2)
        console.print(probe.describe())
    batcher = MicroBatcher(probe.micro if probe else t.batch, device)

    def make(step: int) -> Batch:
        x, y = step_batch(data.train, t.seed, step, sequences, block)
        return x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    stop = min(t.steps, until) if until is not None else t.steps
    wall = time.perf_counter()
    train_seconds, trained = 0.0, 0
    tic = time.perf_counter()
    for step, batch in zip(range(start, stop),
                           prefetched(make, range(start, stop), t.prefetch, t.workers),
                           strict=True):
        shrinks = len(batcher.shrinks)
        stats = batcher.run(step, batch, lambda micro: runner.step(micro, step))  # noqa: B023
        if len(batcher.shrinks) > shrinks:
            _, was, now = batcher.shrinks[-1]
            console.print(f"step {step + 1}: out of memory with micro-batches of {was}; "
                          f"split finer, into micro-batches of {now}, and ran again")
        trained += tokens_per_step
        last = step + 1 == stop
        if (step + 1) % t.eval_every == 0 or last:
            train_seconds += time.perf_counter() - tic
            val = evaluate(model, val_batches)
            row = {"step": step + 1, "train_loss": stats.lm_loss, "val_loss": val,
                   "lr": stats.lr, "grad_norm": stats.grad_norm,
                   "tokens_per_second": trained / max(train_seconds, 1e-9),
                   "dropped_fraction": stats.dropped_fraction}
            rows.append(row)
            gap = f" | H {h:.4f} | val - H {val - h:+.4f}" if h else ""
            console.print(f"step {step + 1:>6} | train {stats.lm_loss:.4f} | val {val:.4f}{gap}"
                          f" | {row['tokens_per_second']:,.0f} tok/s", soft_wrap=True)
            if t.sample_every and (step + 1) % t.sample_every == 0 and not last:
                console.print(f"  sample: {sample_text(model, data, t.sample_tokens, step)!r}")
            tic = time.perf_counter()
        if last or (t.checkpoint_every and (step + 1) % t.checkpoint_every == 0):
            _save(out, model, data.tokenizer, runner, step + 1, rows)
    sample = sample_text(model.eval(), data, t.sample_tokens, t.seed)
    console.print(f"sample: {sample!r}")
    final = rows[-1] if rows else {}
    summary = {
        "name": file.name, "parameters": model.num_params(), "steps": t.steps,
        "final_val_loss": final.get("val_loss"), "entropy_rate": h,
        "reference": file.reference.model_dump() if file.reference else None,
        "val_minus_entropy_rate": (final["val_loss"] - h) if h and final else None,
        "tokens_per_second": final.get("tokens_per_second"),
        "wall_seconds": time.perf_counter() - wall, "peak_memory_mb": peak_memory_mb(),
        "kernels": dispatch.report(), "sample": sample, "data": data.describe,
        "device": str(device), "sequences_per_step": sequences, "micro_batch": batcher.micro,
        "out_of_memory_shrinks": batcher.shrinks,
        "memory_probe": dataclasses.asdict(probe) if probe else None,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return TrainResult(summary, rows)


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device is 'cuda' but torch sees no CUDA device")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def probe_memory(runner: StepRunner, train: TokenStream, sequences: int, block: int,
                 budget_mb: float, state_copies: int) -> Probe:
    """The largest micro-batch whose step fits `budget_mb`, measured with real passes on
    training windows; the random state is left as it was, so probing changes no result."""
    device = next(runner.model.parameters()).device

    def measure(n: int) -> int | None:
        x, y = step_batch(train, 0, 0, n, block)
        pair = (x.to(device), y.to(device))
        try:
            return pass_peak_bytes(lambda: runner.backward_only([pair]), device)
        finally:
            runner.optimizer.zero_grad(set_to_none=True)

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        return probe_micro_batch(measure, state_bytes(runner.model, state_copies),
                                 int(budget_mb * MB), sequences)


def _save(out: Path, model: GPT, tokenizer: Tokenizer, runner: StepRunner, step: int,
          rows: list[dict[str, float]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    save_model(out / "model", model, tokenizer)
    torch.save({"step": step, "runner": runner.state_dict()}, out / "checkpoint.tmp")
    (out / "checkpoint.tmp").replace(out / "checkpoint.pt")  # never a half-written checkpoint
    (out / "metrics.json").write_text(json.dumps(rows, indent=1) + "\n")


def _restore(out: Path, model: GPT, runner: StepRunner) -> tuple[int, list[dict[str, float]]]:
    saved, _ = load_model(out / "model")
    model.load_state_dict(saved.state_dict())
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    runner.load_state_dict(state["runner"])
    rows = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() \
        else []
    return int(state["step"]), rows
