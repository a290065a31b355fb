"""Rollouts: completions sampled from the policy after toy prompts, with what PPO needs of
them — the sampling policy's per-token log-probabilities (the "old" ones its ratio compares
with), its values, the reference policy's log-probabilities, and a score per completion.

Sampling decodes through the KV cache with a `torch.Generator` the caller seeds from a named
stream, and the log-probabilities come from full forward passes, so the same (generator seed,
prompts, parameters) give bit-identical rollouts on every node that recomputes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from phalanx.engine.model.generate import Sampling, generate
from phalanx.engine.rlhf.models import Policy, RewardModel
from phalanx.engine.rlhf.toy import ToyTask

__all__ = ["CompletionFilter", "Rollouts", "completion_outputs", "rollout", "score",
           "token_logprobs"]


class CompletionFilter(Protocol):
    """Decides whether a completion, as the annotation UI renders it, may be rewarded."""

    def allows(self, text: str) -> bool: ...


@dataclass(frozen=True)
class Rollouts:
    tokens: torch.Tensor  # (B, P + C): prompt, then completion
    prompt_length: int
    logprobs: torch.Tensor  # (B, C) of each completion token under the sampling policy
    values: torch.Tensor  # (B, C) the value head before each completion token
    ref_logprobs: torch.Tensor  # (B, C) under the reference policy
    mask: torch.Tensor  # (B, C) 1.0 on completion tokens (all of them: fixed length, no EOS)

    @property
    def completions(self) -> torch.Tensor:
        return self.tokens[:, self.prompt_length:]


def completion_outputs(policy: Policy, tokens: torch.Tensor, prompt_length: int,
                       temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits (B, C, V) at the sampling temperature that predict each completion token
    of `tokens`, and the values (B, C) at the same positions: position P − 1 + t predicts
    completion token t, and the last token predicts nothing, so it is not fed."""
    logits, values = policy(tokens[:, :-1])
    start = prompt_length - 1
    return logits[:, start:].float() / temperature, values[:, start:]


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(tokens[:, t]) under logits[:, t]: (B, T)."""
    return logits.log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def rollout(policy: Policy, reference: Policy, prompts: torch.Tensor, completion_length: int,
            temperature: float, generator: torch.Generator) -> Rollouts:
    """Sample one completion per prompt (B, P) from `policy` and measure it."""
    tokens = generate(policy.gpt, prompts, completion_length,
                      Sampling(temperature=temperature), generator)
    p = prompts.size(1)
    completions = tokens[:, p:]
    logits, values = completion_outputs(policy, tokens, p, temperature)
    ref_logits, _ = completion_outputs(reference, tokens, p, temperature)
    return Rollouts(tokens, p, token_logprobs(logits, completions), values.float(),
                    token_logprobs(ref_logits, completions), torch.ones(completions.shape))


@torch.no_grad()
def score(reward_model: RewardModel, rollouts: Rollouts, toy: ToyTask,
          completion_filter: CompletionFilter | None, blocked_score: float
          ) -> tuple[torch.Tensor, int]:
    """The score (B,) of each rollout, and how many the filter refused. The filter runs
    first: a refused completion never reaches the reward model and gets `blocked_score`."""
    tokens = rollouts.tokens
    blocked = torch.zeros(len(tokens), dtype=torch.bool)
    if completion_filter is not None:
        blocked = torch.tensor([not completion_filter.allows(toy.render(c.tolist()))
                                for c in rollouts.completions], dtype=torch.bool)
    scores = torch.full((len(tokens),), float(blocked_score))
    if not blocked.all():
        scores[~blocked] = reward_model(tokens[~blocked]).float()
    return scores, int(blocked.sum())
