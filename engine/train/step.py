"""One optimizer step over micro-batches: gradient accumulation, mixed precision, clipping,
the learning-rate schedule, and SAM's second pass.

Precision: "fp32"; "bf16" autocast (CPU or GPU; bf16 has fp32's range, so no loss scaling);
"fp16" autocast with dynamic loss scaling (CUDA only): the loss is multiplied by a scale
before backward, gradients are unscaled before clipping, and a step whose gradients hold an
inf or NaN is skipped while the scale halves (it grows again after a run of good steps).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch

from phalanx.engine.model.gpt import GPT
from phalanx.engine.train.data import Batch
from phalanx.engine.train.optim import SAM
from phalanx.engine.train.schedule import lr_at

Precision = Literal["fp32", "bf16", "fp16"]


@dataclass(frozen=True)
class StepConfig:
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: int = 100
    steps: int = 1000  # the schedule's length
    grad_clip: float | None = 1.0
    precision: Precision = "fp32"
    sam_rho: float | None = None  # SAM when set

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be fp32, bf16 or fp16, got {self.precision!r}")
        if self.precision == "fp16" and self.sam_rho is not None:
            raise ValueError("SAM with fp16 loss scaling is not supported: use bf16 or fp32")


@dataclass(frozen=True)
class StepStats:
    loss: float  # mean training loss over the micro-batches (lm + aux)
    lm_loss: float
    aux_loss: float
    grad_norm: float  # before clipping
    lr: float
    skipped: bool  # fp16: the step was skipped for an overflow
    dropped_fraction: float  # MoE assignments over capacity


class StepRunner:
    def __init__(self, model: GPT, optimizer: torch.optim.Optimizer | SAM,
                 config: StepConfig) -> None:
        self.model, self.optimizer, self.config = model, optimizer, config
        device = next(model.parameters()).device
        if config.precision == "fp16" and device.type != "cuda":
            raise ValueError("fp16 training needs a CUDA device (use bf16 on the CPU)")
        self.device_type = device.type
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.config.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.config.precision == "bf16" else torch.float16
        return torch.autocast(self.device_type, dtype=dtype)

    def _accumulate(self, batches: list[Batch]) -> Iterator[tuple[float, float, float, float]]:
        """Forward and backward of each micro-batch, gradients summing to those of the mean
        loss over all rows; yields each micro-batch's statistics times its weight."""
        rows = sum(x.size(0) for x, _ in batches)
        for x, y in batches:
            with self._autocast():
                out = self.model(x, targets=y)
            # each micro-batch weighs by its rows, so that uneven splits average like one batch
            weight = x.size(0) / rows
            self.scaler.scale(out.loss * weight).backward()  # type: ignore[operator]
            yield (weight * float(out.loss.detach()),  # type: ignore[union-attr]
                   weight * float(out.lm_loss.detach()),  # type: ignore[union-attr]
                   weight * float(out.aux_loss.detach()), weight * out.dropped_fraction)

    def step(self, batches: list[Batch], step: int) -> StepStats:
        c = self.config
        lr = lr_at(step, c.lr, c.warmup, c.steps, c.min_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        per_micro = list(self._accumulate(batches))
        self.scaler.unscale_(self._base())
        norm = self._clip()
        if isinstance(self.optimizer, SAM):
            self.optimizer.ascend()
            self.optimizer.zero_grad(set_to_none=True)
            for _ in self._accumulate(batches):
                pass
            self._clip()
            self.optimizer.step()
            skipped = False
        else:
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            skipped = self.scaler.is_enabled() and self.scaler.get_scale() < scale
        mean = [sum(v[i] for v in per_micro) for i in range(4)]  # weighted by rows
        return StepStats(mean[0], mean[1], mean[2], norm, lr, skipped, mean[3])

    def backward_only(self, batches: list[Batch]) -> None:
        """A step's forward and backward passes without the update, gradients dropped after:
        what memory probes measure."""
        self.optimizer.zero_grad(set_to_none=True)
        for _ in self._accumulate(batches):
            pass
        self.optimizer.zero_grad(set_to_none=True)

    def _base(self) -> torch.optim.Optimizer:
        return self.optimizer.base if isinstance(self.optimizer, SAM) else self.optimizer

    def _clip(self) -> float:
        params = [p for p in self.model.parameters() if p.grad is not None]
        clip = self.config.grad_clip if self.config.grad_clip is not None else math.inf
        return float(torch.nn.utils.clip_grad_norm_(params, clip))

    # ---- exact resume --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, object]:
        """What resuming needs besides the weights and the step number: optimizer moments,
        the loss scale, and the random state dropout draws from."""
        return {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])  # type: ignore[arg-type]
        self.scaler.load_state_dict(state["scaler"])  # type: ignore[arg-type]
        torch.set_rng_state(state["torch_rng"])  # type: ignore[arg-type]
