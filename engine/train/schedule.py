"""Learning-rate schedule: linear warmup, then cosine decay to a floor (as in GPT-3 and
nanoGPT)."""

from __future__ import annotations

import math


def lr_at(step: int, base_lr: float, warmup: int, total: int, min_lr: float) -> float:
    """The learning rate of optimizer step `step` (0-based) out of `total`."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    if step >= total:
        return min_lr
    progress = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (base_lr - min_lr)
