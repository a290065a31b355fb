"""The RLHF workload's part of a scenario: `workload: {kind: rlhf, ...}`.

An RLHF run is staged by round (engine/rlhf/workload.py): `collect_rounds` in which the
simulated or real annotators label the preference tasks of the `curation:` section (whose
`tasks: {kind: preferences}` also define the toy: vocabulary, lengths, target token), then
`reward_rounds` training the reward model on the preferences committed by the end of the
collection, then `policy_rounds` of PPO (or DPO) against the frozen reward model (or the
preferences). `training.rounds` is their sum.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from phalanx.scenario.section import Section

Rounds = Annotated[int, Field(ge=0, le=1_000_000, strict=True)]
Positive = Annotated[float, Field(gt=0)]
Unit = Annotated[float, Field(ge=0, le=1)]

DPO_VARIANTS = ("sigmoid", "ipo", "reference_free")


class RlhfWorkload(Section):
    """A reward model, then a policy, trained in BFT rounds on committed preferences
    (docs/rlhf.md)."""

    kind: Annotated[Literal["rlhf"], Field(description="`rlhf`.")]
    collect_rounds: Annotated[Rounds, Field(ge=1, description=(
        "Rounds in which annotators label the preference tasks; the preferences committed "
        "when the last of them commits are the data set."))] = 20
    reward_rounds: Annotated[Rounds, Field(description=(
        "Rounds training the reward model (Bradley–Terry)."))] = 60
    policy_rounds: Annotated[Rounds, Field(description=(
        "Rounds training the policy, by `method`."))] = 100
    method: Annotated[Literal["ppo", "dpo"], Field(description=(
        "ppo: rollouts scored by the frozen reward model; dpo: the preferences directly."
        ))] = "ppo"
    n_layer: Annotated[int, Field(ge=1, le=12, strict=True, description=(
        "Transformer blocks of the reward model and of the policy."))] = 1
    n_head: Annotated[int, Field(ge=1, le=16, strict=True, description="Attention heads.")] = 2
    n_embd: Annotated[int, Field(ge=2, le=1024, strict=True, description=(
        "Embedding width; a multiple of n_head."))] = 32
    reward_lr: Annotated[Positive | None, Field(description=(
        "The reward model's learning rate (null: training.lr)."))] = 3e-4
    policy_lr: Annotated[Positive | None, Field(description=(
        "The policy's learning rate (null: training.lr)."))] = 1e-3
    reward_margin: Annotated[bool, Field(description=(
        "Bradley–Terry with a margin from each label's confidence (Llama 2)."))] = False
    reward_center: Annotated[Annotated[float, Field(ge=0)], Field(description=(
        "Weight of the penalty on the mean reward's square (reward centering)."))] = 0.01
    kl_coef: Annotated[Annotated[float, Field(ge=0)], Field(description=(
        "PPO's per-token KL penalty against the reference policy (the initial one)."))] = 0.2
    kl_target: Annotated[Positive | None, Field(description=(
        "A KL per sequence for the adaptive controller to hold (Ziegler et al. 2019); null: "
        "the coefficient stays fixed."))] = None
    kl_horizon: Annotated[int, Field(ge=1, strict=True, description=(
        "The adaptive controller's horizon, in rollouts (each PPO round counts the "
        "training.batch rollouts of every member); at least that many."))] = 10_000
    clip: Annotated[Positive, Field(description="PPO's ratio clip ε.")] = 0.2
    value_clip: Annotated[Positive, Field(description="PPO's value clip.")] = 0.2
    value_coef: Annotated[Annotated[float, Field(ge=0)], Field(description=(
        "Weight of the value loss."))] = 0.1
    entropy_coef: Annotated[Annotated[float, Field(ge=0)], Field(description=(
        "Weight of the entropy bonus."))] = 0.0
    gamma: Annotated[Unit, Field(description="GAE's discount γ.")] = 1.0
    lam: Annotated[Unit, Field(description="GAE's λ.")] = 0.95
    ppo_epochs: Annotated[int, Field(ge=1, le=16, strict=True, description=(
        "Local epochs over a round's rollouts (1: the plain gradient at the committed "
        "policy, ratio 1; more: that many local epochs and the step sent as a "
        "pseudo-gradient, so the ratio and its clipping are real)."))] = 1
    ppo_local_lr: Annotated[Positive, Field(description=(
        "The local Adam's learning rate of ppo_epochs > 1."))] = 1e-3
    temperature: Annotated[Positive, Field(description="Sampling temperature of rollouts.")] = 1.0
    dpo_beta: Annotated[Positive, Field(description="DPO's β.")] = 0.1
    dpo_variant: Annotated[Literal[DPO_VARIANTS], Field(description=(  # type: ignore[valid-type]
        "sigmoid (DPO), ipo or reference_free."))] = "sigmoid"
    label_smoothing: Annotated[Annotated[float, Field(ge=0, lt=0.5)], Field(description=(
        "Conservative DPO's ε: the share of labels assumed flipped."))] = 0.0
    blocked_score: Annotated[float, Field(description=(
        "The score a completion the safety filter refuses gets instead of the reward "
        "model's."))] = -2.0
    eval_pairs: Annotated[int, Field(ge=1, le=100_000, strict=True, description=(
        "Held-out comparisons that score the reward model's accuracy."))] = 256
    eval_rollouts: Annotated[int, Field(ge=1, le=100_000, strict=True, description=(
        "Completions of fixed prompts that score the policy (true score, KL, reward)."
        ))] = 64

    @model_validator(mode="after")
    def _heads_divide(self) -> RlhfWorkload:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not a multiple of n_head {self.n_head}")
        if self.method == "ppo" and self.reward_rounds == 0:
            raise ValueError("reward_rounds: PPO needs a reward model (at least 1 round); "
                             "DPO needs none")
        return self

    def stage(self, round: int) -> str:
        """What `round` trains: collect, reward, then the method (as the workload says)."""
        if round < self.collect_rounds:
            return "collect"
        return "reward" if round < self.collect_rounds + self.reward_rounds else self.method

    @property
    def total_rounds(self) -> int:
        return self.collect_rounds + self.reward_rounds + self.policy_rounds
