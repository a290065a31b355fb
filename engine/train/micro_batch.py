"""Adaptive micro-batch size: the largest micro-batch whose training pass fits a memory budget,
and recovery from CUDA out-of-memory by splitting steps finer.

A step trains on a fixed set of sequences (data.step_batch); only how they are cut into
micro-batches for gradient accumulation adapts, so the optimizer sees the same tokens and, up
to floating-point summation order, the same gradient whatever the memory allows.

Peak memory of a step = weights + optimizer state (counted from their sizes) + the peak of one
micro-batch's forward and backward (activations, gradients, temporaries), measured: on CUDA
with the caching allocator's peak statistic, on the CPU from the allocation events that
torch's profiler records. The pass grows linearly with the micro-batch, so two small
measurements predict the largest size; that size is then measured too, and lowered until it
fits.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import torch
from torch import nn

from phalanx.engine.train.data import Batch, split

MB = 2**20
T = TypeVar("T")


class BudgetError(ValueError):
    """A memory budget that not even a one-sequence micro-batch fits."""


def pass_peak_bytes(run: Callable[[], None], device: torch.device) -> int | None:
    """Peak bytes allocated while `run()` executes, above what was allocated before it; None
    when the device ran out of memory."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        try:
            run()
        except torch.cuda.OutOfMemoryError:
            return None
        finally:
            release_memory(device)
        return torch.cuda.max_memory_allocated(device) - before
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True) as prof:
        run()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    now = peak = 0
    for event in events:  # an allocation (+) or a free (-), in order
        now += event.nbytes()
        peak = max(peak, now)
    return peak


def release_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def state_bytes(model: nn.Module, state_copies: int) -> int:
    """Weights plus `state_copies` fp32 tensors the size of the weights (AdamW keeps 2
    moments; SAM one more for its perturbation)."""
    params = list(model.parameters())
    return sum(p.numel() * p.element_size() for p in params) + state_copies * sum(
        p.numel() * 4 for p in params)


@dataclass(frozen=True)
class Probe:
    budget_mb: float
    micro: int  # the largest micro-batch found to fit, at most `limit`
    limit: int  # sequences per step: no micro-batch is larger
    state_mb: float  # weights and optimizer state
    per_sequence_mb: float  # what each sequence of a micro-batch adds to the pass
    peak_mb: float  # state plus the measured pass at `micro`
    measured_mb: dict[int, float]  # micro-batch size -> measured pass peak (None: out of memory)

    def describe(self) -> str:
        return (f"memory budget {self.budget_mb:,.0f} MB: micro-batches of {self.micro} "
                f"sequences (of {self.limit} per step) peak at {self.peak_mb:,.1f} MB "
                f"(weights and optimizer {self.state_mb:,.1f} MB, "
                f"{self.per_sequence_mb:,.2f} MB per sequence)")


def probe_micro_batch(measure: Callable[[int], int | None], state: int, budget: int,
                      limit: int) -> Probe:
    """The largest micro-batch n <= limit with state + measure(n) <= budget (bytes).
    `measure(n)` is the peak of one forward and backward at n sequences, None when the device
    ran out of memory."""
    seen: dict[int, int | None] = {}

    def fits(n: int) -> bool:
        if n not in seen:
            seen[n] = measure(n)
        got = seen[n]
        return got is not None and state + got <= budget

    def result(micro: int) -> Probe:
        one, two = seen.get(1), seen.get(2)
        per = (two - one) if one is not None and two is not None else 0
        peak = seen[micro]
        assert peak is not None
        return Probe(budget / MB, micro, limit, state / MB, per / MB, (state + peak) / MB,
                     {n: (b / MB if b is not None else None)  # type: ignore[misc]
                      for n, b in sorted(seen.items())})

    if not fits(1):
        need = (state + seen[1]) / MB if seen[1] is not None else None
        raise BudgetError(f"memory budget {budget / MB:,.0f} MB is too small for a micro-batch "
                          f"of one sequence" + (f" ({need:,.1f} MB)" if need else
                                                " (the device ran out of memory)"))
    if limit == 1 or not fits(2):
        return result(1)
    one, two = seen[1], seen[2]
    assert one is not None and two is not None
    per = max(two - one, 1)
    guess = min(limit, max(2, (budget - state - (one - per)) // per))
    # the fit is linear; allocator rounding can bend it, so measure and step down until it fits
    while not fits(guess):
        guess = max(2, min(guess - 1, int(guess * 0.9)))
    return result(guess)


@dataclass
class MicroBatcher:
    """Splits each step's batch into micro-batches of `micro` sequences; when CUDA runs out of
    memory inside a step, halves `micro` and runs the step again from the start (the step
    zeroes its gradients first, and the optimizer has not moved)."""

    micro: int
    device: torch.device
    shrinks: list[tuple[int, int, int]] = field(default_factory=list)  # (step, from, to)

    def run(self, step: int, batch: Batch, train: Callable[[list[Batch]], T]) -> T:
        while True:
            try:
                return train(split(batch, self.micro))
            except torch.cuda.OutOfMemoryError:
                if self.micro == 1:
                    raise
            # outside the except clause: the error's frames, holding the failed pass's
            # tensors, are gone before memory is released and the step retried
            self.shrinks.append((step, self.micro, self.micro // 2))
            self.micro //= 2
            release_memory(self.device)
