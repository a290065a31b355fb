"""Optimizers: AdamW with weight decay on matrices only, and sharpness-aware minimization.

SAM (Foret et al. 2021, "Sharpness-Aware Minimization for Efficiently Improving
Generalization") takes the gradient at w + rho * g / ||g||, the worst point of a small ball
around w, and applies it at w with the base optimizer: two forward-backward passes per step.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """Decay weight matrices and embeddings; leave norms' gains and biases alone (1-D)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def adamw(model: nn.Module, lr: float, weight_decay: float,
          betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.AdamW:
    # foreach: one fused loop over the parameters; fp32 states whatever the compute dtype
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas,
                             foreach=True)


class SAM:
    """Wraps a base optimizer. Per step: backward at w, `ascend()`, backward again at the
    perturbed point, then `step()` restores w and applies the base optimizer with that
    second gradient."""

    def __init__(self, base: torch.optim.Optimizer, rho: float = 0.05) -> None:
        if rho <= 0:
            raise ValueError(f"rho must be > 0, got {rho}")
        self.base, self.rho = base, rho
        self._moved: list[tuple[torch.Tensor, torch.Tensor]] = []

    @property
    def param_groups(self) -> list[dict[str, object]]:
        return self.base.param_groups

    def _params(self) -> Iterable[torch.Tensor]:
        for group in self.base.param_groups:
            yield from (p for p in group["params"] if p.grad is not None)  # type: ignore[attr-defined]

    @torch.no_grad()
    def ascend(self) -> None:
        params = list(self._params())
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
        scale = self.rho / (norm + 1e-12)
        self._moved = []
        for p in params:
            e = p.grad * scale
            p.add_(e)
            self._moved.append((p, e))

    @torch.no_grad()
    def step(self) -> None:
        for p, e in self._moved:
            p.sub_(e)
        self._moved = []
        self.base.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, object]:
        return {"base": self.base.state_dict(), "rho": self.rho}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.base.load_state_dict(state["base"])  # type: ignore[arg-type]
        self.rho = float(state["rho"])  # type: ignore[arg-type]
