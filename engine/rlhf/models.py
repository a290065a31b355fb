"""The RLHF models: a reward model and a policy with a value head, each phalanx's GPT plus a
scalar head on its final hidden state (`Output.hidden`).

Both are pure functions of a flat float32 vector, as the BFT round requires: `FlatModel`
loads a slice of the run's vector into the module before a forward pass and reads the
gradient back in the same order (torch's `vector_to_parameters` / `parameters_to_vector`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from phalanx.engine.model.config import GPTConfig
from phalanx.engine.model.gpt import GPT

__all__ = ["FlatModel", "Policy", "RewardModel", "build"]


class RewardModel(nn.Module):
    """r(prompt + completion): a linear head on the last token's hidden state."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.gpt = GPT(config)
        self.head = nn.Linear(config.n_embd, 1)
        # TRL's reward-head init: small, but not zero, so the body learns from the first step
        nn.init.normal_(self.head.weight, 0.0, 1.0 / (config.n_embd + 1) ** 0.5)
        nn.init.zeros_(self.head.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Scores (B,) of the sequences `tokens` (B, T)."""
        hidden = self.gpt(tokens, with_hidden=True).hidden
        return self.head(hidden[:, -1]).squeeze(-1)  # type: ignore[index]


class Policy(nn.Module):
    """The language model that generates completions, with a value head per position (the
    critic PPO's advantages need; DPO leaves it untouched)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.gpt = GPT(config)
        self.value_head = nn.Linear(config.n_embd, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-token logits (B, T, V) and values (B, T) at every position of `tokens`."""
        out = self.gpt(tokens, with_hidden=True)
        return out.logits, self.value_head(out.hidden).squeeze(-1)


class FlatModel:
    """A module whose parameters are a flat float32 vector."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.size = sum(p.numel() for p in module.parameters())

    def vector(self) -> np.ndarray:
        return parameters_to_vector(self.module.parameters()).detach().numpy().copy()

    def load(self, flat: np.ndarray) -> None:
        if flat.shape != (self.size,):
            raise ValueError(f"expected {self.size} parameters, got shape {flat.shape}")
        vector_to_parameters(torch.from_numpy(np.asarray(flat, np.float32).copy()),
                             self.module.parameters())

    def zero_grad(self) -> None:
        self.module.zero_grad(set_to_none=False)

    def gradient(self) -> np.ndarray:
        """The accumulated gradient, in the vector's order (zeros where none flowed)."""
        return torch.cat([p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel())
                          for p in self.module.parameters()]).numpy().astype(np.float32)


def build(kind: type[RewardModel] | type[Policy], config: GPTConfig, seed: int) -> FlatModel:
    """A fresh model whose initial weights come from `seed` alone (the global torch RNG is
    left as it was)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return FlatModel(kind(config))
