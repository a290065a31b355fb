"""RLHF as one staged workload trained in BFT rounds: a reward model, then PPO or DPO.

The flat vector is [reward model | policy with its value head]. The rounds go through stages:

    collect  (round < collect_rounds)  no group trains: the crowd labels preferences
    reward   (next reward_rounds)      Bradley–Terry on committed preference pairs
    ppo/dpo  (next policy_rounds)      the policy trains; the reward model is frozen
    done     (after that)              nothing trains

`parameter_groups()` tells the node's optimizer which slice steps in which rounds, so a frozen
slice never moves whatever the aggregate holds there. Every gradient is float32 of the full
vector's size with zeros outside its stage's slice. Everything a node draws comes from the
run's named streams, (seed, node, round) → the same bytes on every machine: the pairs of
("batch", node, round), the PPO prompts of ("prompts", node, round) and the sampling
generator of ("rollout", node, round).

Committed inputs arrive in `job.context`: "preferences" (a PreferenceSet) in reward and DPO
rounds (without one, e.g. in a run with no curation service, the toy's `synthetic_pairs`
pairs of the run's seed, labels right with probability 0.9; synthetic_pairs = 0 makes a
missing set an error), and optionally "kl_coef" in PPO rounds, the adaptive KL controller's value, which the
node's RLHF service advances at each commit from `kl_value(committed params)` — the same
number on every node, as the controller's state must be.

A label's confidence c weights its pair, in reward and DPO rounds alike: pairs are drawn with
probability proportional to c, so an unsure label trains less often but at full strength
(the losses take plain means). With `reward_margin` on, c also sets the reward model's margin
(Llama 2's margin loss): a gap of max(0, 2c − 1), none for a coin-flip label, 1 for a certain
one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch

from phalanx.engine.model.config import GPTConfig
from phalanx.engine.rlhf.data import Preference, PreferenceSet
from phalanx.engine.rlhf.kl import AdaptiveKL, FixedKL
from phalanx.engine.rlhf.losses import (
    bradley_terry_loss,
    dpo_loss,
    entropy,
    gae,
    ppo_policy_loss,
    ppo_value_loss,
    sequence_logprobs,
    token_rewards,
    whiten,
)
from phalanx.engine.rlhf.models import Policy, RewardModel, build
from phalanx.engine.rlhf.rollout import (
    CompletionFilter,
    Rollouts,
    completion_outputs,
    rollout,
    score,
    token_logprobs,
)
from phalanx.engine.rlhf.toy import ToyTask, preference_tasks
from phalanx.engine.rng import RngStreams
from phalanx.engine.workloads.base import GradientJob, GradientResult, ParameterGroup, Workload

__all__ = ["RlhfWorkload", "noisy_toy_preferences"]

Method = Literal["ppo", "dpo"]
DPO_VARIANTS = ("sigmoid", "ipo", "reference_free")
SYNTHETIC_ACCURACY = 0.9  # how often a synthetic preference's label is right


class RlhfWorkload(Workload):
    name = "rlhf"

    def __init__(self, *, n_nodes: int, rngs: RngStreams, batch: int = 32,
                 vocab: int = 8, prompt_length: int = 4, completion_length: int = 8,
                 target: int = 0, max_target_share: float = 0.6,
                 n_layer: int = 1, n_head: int = 2, n_embd: int = 32,
                 collect_rounds: int = 0, reward_rounds: int = 60, policy_rounds: int = 100,
                 method: Method = "ppo",
                 reward_lr: float | None = 3e-4, policy_lr: float | None = 1e-3,
                 reward_margin: bool = False, reward_center: float = 0.01,
                 kl_coef: float = 0.2, kl_target: float | None = None,
                 kl_horizon: int = 10_000, clip: float = 0.2, value_clip: float = 0.2,
                 value_coef: float = 0.1, entropy_coef: float = 0.0, gamma: float = 1.0,
                 lam: float = 0.95, ppo_epochs: int = 1, ppo_local_lr: float = 1e-3,
                 temperature: float = 1.0,
                 dpo_beta: float = 0.1, dpo_variant: str = "sigmoid",
                 label_smoothing: float = 0.0,
                 completion_filter: CompletionFilter | None = None, blocked_score: float = -2.0,
                 eval_pairs: int = 256, eval_rollouts: int = 64,
                 synthetic_pairs: int = 1000) -> None:
        _validate(locals())
        self.n_nodes, self.rngs, self.batch = n_nodes, rngs, batch
        self.toy = ToyTask(vocab, prompt_length, completion_length, target, max_target_share)
        self.collect_rounds, self.reward_rounds = collect_rounds, reward_rounds
        self.policy_rounds, self.method = policy_rounds, method
        self.reward_lr, self.policy_lr = reward_lr, policy_lr
        self.reward_margin, self.reward_center = reward_margin, reward_center
        self.kl_coef, self.kl_target, self.kl_horizon = kl_coef, kl_target, kl_horizon
        self.clip, self.value_clip = clip, value_clip
        self.value_coef, self.entropy_coef = value_coef, entropy_coef
        self.gamma, self.lam, self.temperature = gamma, lam, temperature
        self.ppo_epochs, self.ppo_local_lr = ppo_epochs, ppo_local_lr
        self.dpo_beta, self.dpo_variant = dpo_beta, dpo_variant
        self.label_smoothing = label_smoothing
        self.completion_filter, self.blocked_score = completion_filter, blocked_score
        self.synthetic_pairs = synthetic_pairs
        self._synthetic: PreferenceSet | None = None

        config = GPTConfig(vocab_size=vocab, block_size=prompt_length + completion_length,
                           n_layer=n_layer, n_head=n_head, n_embd=n_embd)
        self.reward = build(RewardModel, config, rngs.seed("init", "reward"))
        self.policy = build(Policy, config, rngs.seed("init", "policy"))
        # the reference policy is the initial one, fixed for the whole run
        self.reference = build(Policy, config, rngs.seed("init", "policy"))
        self.reference.module.requires_grad_(False)
        self._init = np.concatenate([self.reward.vector(), self.policy.vector()])
        self._split = self.reward.size

        rng = rngs.stream("eval")
        pairs = [self.toy.comparison(rng) for _ in range(eval_pairs)]
        self._eval_chosen = torch.from_numpy(np.stack([np.concatenate(p[:2]) for p in pairs]))
        self._eval_rejected = torch.from_numpy(
            np.stack([np.concatenate((p[0], p[2])) for p in pairs]))
        self._eval_prompts = torch.from_numpy(
            self.toy.prompts(rngs.stream("eval", "prompts"), eval_rollouts))
        self._eval_cache: tuple[bytes, dict[str, float]] | None = None

    # ---- the vector, its groups and stages --------------------------------------------------

    @property
    def size(self) -> int:
        return len(self._init)

    def init_params(self) -> np.ndarray:
        return self._init.copy()

    def parameter_groups(self) -> tuple[ParameterGroup, ...]:
        reward_start = self.collect_rounds
        policy_start = reward_start + self.reward_rounds
        return (ParameterGroup("reward", 0, self._split, self.reward_lr,
                               first_round=reward_start, last_round=policy_start - 1),
                ParameterGroup("policy", self._split, self.size, self.policy_lr,
                               first_round=policy_start,
                               last_round=policy_start + self.policy_rounds - 1))

    def stage(self, round: int) -> str:
        if round < self.collect_rounds:
            return "collect"
        if round < self.collect_rounds + self.reward_rounds:
            return "reward"
        if round < self.collect_rounds + self.reward_rounds + self.policy_rounds:
            return self.method
        return "done"

    # ---- gradients --------------------------------------------------------------------------

    def gradient(self, params: np.ndarray, node: int, round: int,
                 poisoned: bool = False) -> GradientResult:
        return self.compute(GradientJob(self, node, round, params, poisoned=poisoned))

    def compute(self, job: GradientJob) -> GradientResult:
        """The gradient of `job.round`'s stage. `job.poisoned` (a data-poisoning Byzantine)
        swaps chosen and rejected in reward and DPO rounds and negates the score in PPO."""
        params = np.asarray(job.params, np.float32)
        if params.shape != (self.size,):
            raise ValueError(f"params must hold {self.size} floats, got shape {params.shape}")
        stage = self.stage(job.round)
        if stage in ("collect", "done"):  # nothing trains: a zero gradient keeps rounds going
            return GradientResult(np.zeros(self.size, np.float32), 0.0, 1)
        step: Callable[[np.ndarray, GradientJob], GradientResult] = {
            "reward": self._reward_step, "ppo": self._ppo_step, "dpo": self._dpo_step}[stage]
        return step(params, job)

    def _full(self, policy_grad: np.ndarray | None = None,
              reward_grad: np.ndarray | None = None) -> np.ndarray:
        grad = np.zeros(self.size, np.float32)
        if reward_grad is not None:
            grad[:self._split] = reward_grad
        if policy_grad is not None:
            grad[self._split:] = policy_grad
        return grad

    def _pairs(self, job: GradientJob) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`batch` pairs of the committed preference set, drawn with replacement and with
        probability proportional to their label's confidence from the stream ("batch", node,
        round): chosen (B, P + C), rejected (B, P + C), confidence (B,) — chosen and rejected
        swapped for a poisoned job."""
        prefs = job.context.get("preferences")
        if prefs is None:
            prefs = self._synthetic_preferences()
        if not isinstance(prefs, PreferenceSet) or len(prefs) == 0:
            raise ValueError(f"{self.stage(job.round)} rounds need a non-empty PreferenceSet "
                             "in job.context['preferences'] (or synthetic_pairs > 0)")
        weights = np.array([p.confidence for p in prefs.pairs], np.float64)
        if not (np.isfinite(weights).all() and (weights >= 0).all() and (weights <= 1).all()
                and weights.sum() > 0):
            raise ValueError("preference confidences must be in [0, 1], not all 0")
        picks = self.rngs.stream("batch", job.node, job.round).choice(
            len(prefs), size=self.batch, p=weights / weights.sum())
        drawn = [prefs.pairs[int(i)] for i in picks]
        for pref in drawn:
            self._check_pair(pref)
        chosen = torch.tensor([p.prompt + p.chosen for p in drawn])
        rejected = torch.tensor([p.prompt + p.rejected for p in drawn])
        confidence = torch.tensor([p.confidence for p in drawn], dtype=torch.float32)
        if job.poisoned:
            chosen, rejected = rejected, chosen
        return chosen, rejected, confidence

    def _synthetic_preferences(self) -> PreferenceSet | None:
        """The fallback of a run without committed preferences (no curation service): the
        toy's pairs of the run's seed with labels right with probability 0.9."""
        if self.synthetic_pairs and self._synthetic is None:
            self._synthetic = noisy_toy_preferences(self.toy, self.synthetic_pairs,
                                                    self.rngs.root_seed, SYNTHETIC_ACCURACY)
        return self._synthetic

    def _check_pair(self, pref: Preference) -> None:
        toy = self.toy
        lengths = (len(pref.prompt), len(pref.chosen), len(pref.rejected))
        if lengths != (toy.prompt_length, toy.completion_length, toy.completion_length):
            raise ValueError(f"a preference has lengths {lengths}; this run needs prompts of "
                             f"{toy.prompt_length} and completions of {toy.completion_length}")
        if not all(0 <= t < toy.vocab for t in pref.prompt + pref.chosen + pref.rejected):
            raise ValueError(f"a preference holds a token outside 0..{toy.vocab - 1}")

    def _reward_step(self, params: np.ndarray, job: GradientJob) -> GradientResult:
        chosen, rejected, confidence = self._pairs(job)
        model = self.reward
        model.load(params[:self._split])
        model.zero_grad()
        scores = model.module(torch.cat([chosen, rejected]))
        good, bad = scores[:self.batch], scores[self.batch:]
        margin = (2 * confidence - 1).clamp(min=0) if self.reward_margin else None
        loss = bradley_terry_loss(good, bad, margin=margin, center=self.reward_center)
        loss.backward()
        accuracy = float((good > bad).float().mean())
        return GradientResult(self._full(reward_grad=model.gradient()), float(loss.detach()),
                              self.batch, {"pair_accuracy": accuracy})

    def _dpo_step(self, params: np.ndarray, job: GradientJob) -> GradientResult:
        chosen, rejected, _ = self._pairs(job)
        tokens = torch.cat([chosen, rejected])
        p = self.toy.prompt_length
        completions, mask = tokens[:, p:], torch.ones(tokens[:, p:].shape)
        policy = self.policy
        policy.load(params[self._split:])
        policy.zero_grad()
        logits, _ = completion_outputs(policy.module, tokens, p, 1.0)
        logps = sequence_logprobs(logits, completions, mask)
        with torch.no_grad():
            ref_logits, _ = completion_outputs(self.reference.module, tokens, p, 1.0)
            ref_logps = sequence_logprobs(ref_logits, completions, mask)
        b = self.batch
        loss, good, bad = dpo_loss(logps[:b], logps[b:], ref_logps[:b], ref_logps[b:],
                                   beta=self.dpo_beta, variant=self.dpo_variant,
                                   label_smoothing=self.label_smoothing)
        loss.backward()
        metrics = {"pair_accuracy": float((good > bad).float().mean()),
                   "margin": float((good - bad).mean())}
        return GradientResult(self._full(policy_grad=policy.gradient()), float(loss.detach()),
                              b, metrics)

    def _ppo_step(self, params: np.ndarray, job: GradientJob) -> GradientResult:
        """Rollouts from the committed policy, scored by the frozen reward model, with a KL
        penalty to the reference. With ppo_epochs = 1 the result is the plain gradient at the
        committed policy, where PPO's ratio is exactly 1 (nothing is clipped); with E > 1 the
        node runs E local Adam epochs over its rollouts on a copy — the ratio moves and the
        clip bites — and sends the pseudo-gradient (θ − θ′) / ppo_local_lr."""
        self.reward.load(params[:self._split])
        policy = self.policy
        theta = params[self._split:]
        policy.load(theta)
        prompts = torch.from_numpy(
            self.toy.prompts(self.rngs.stream("prompts", job.node, job.round), self.batch))
        generator = torch.Generator().manual_seed(self.rngs.seed("rollout", job.node, job.round))
        ro = rollout(policy.module, self.reference.module, prompts,
                     self.toy.completion_length, self.temperature, generator)
        scores, blocked = score(self.reward.module, ro, self.toy, self.completion_filter,
                                self.blocked_score)
        kl_coef = float(job.context.get("kl_coef", self.kl_coef))
        rewards, kl = token_rewards(-scores if job.poisoned else scores, ro.logprobs,
                                    ro.ref_logprobs, ro.mask, kl_coef)
        advantages, returns = gae(rewards, ro.values, ro.mask, self.gamma, self.lam)
        advantages = whiten(advantages, ro.mask)

        if self.ppo_epochs == 1:
            policy.zero_grad()
            loss, figures = self._ppo_loss(ro, advantages, returns)
            loss.backward()
            grad, first_loss, epochs = policy.gradient(), float(loss.detach()), [figures]
        else:
            optimizer = torch.optim.Adam(policy.module.parameters(), lr=self.ppo_local_lr,
                                         foreach=False)
            epochs, losses = [], []
            for _ in range(self.ppo_epochs):
                optimizer.zero_grad(set_to_none=False)
                loss, figures = self._ppo_loss(ro, advantages, returns)
                loss.backward()
                optimizer.step()
                epochs.append(figures)
                losses.append(float(loss.detach()))
            first_loss = losses[0]  # the loss at the committed policy, as E = 1 reports it
            grad = ((theta - policy.vector()) / np.float32(self.ppo_local_lr)).astype(np.float32)
        metrics = {name: float(np.mean([e[name] for e in epochs])) for name in epochs[0]}
        metrics.update(reward=float(scores.mean()), kl=float(kl.mean()), blocked=float(blocked),
                       true_score=_true_score(self.toy, ro.completions))
        return GradientResult(self._full(policy_grad=grad), first_loss, self.batch, metrics)

    def _ppo_loss(self, ro: Rollouts, advantages: torch.Tensor, returns: torch.Tensor
                  ) -> tuple[torch.Tensor, dict[str, float]]:
        logits, values = completion_outputs(self.policy.module, ro.tokens, ro.prompt_length,
                                            self.temperature)
        logprobs = token_logprobs(logits, ro.completions)
        policy_loss, clip_fraction, _ = ppo_policy_loss(logprobs, ro.logprobs, advantages,
                                                        ro.mask, self.clip)
        value_loss, _ = ppo_value_loss(values, ro.values, returns, ro.mask, self.value_clip)
        ent = entropy(logits, ro.mask)
        loss = policy_loss + self.value_coef * value_loss - self.entropy_coef * ent
        return loss, {"clip_fraction": float(clip_fraction),
                      "value_loss": float(value_loss.detach()),
                      "entropy": float(ent.detach())}

    # ---- held-out figures, and the KL the adaptive controller reads -------------------------

    def evaluate(self, params: np.ndarray) -> dict[str, float]:
        """"loss" and "reward_accuracy": the reward model's Bradley–Terry loss and accuracy on
        held-out toy comparisons ordered by the hidden preference (stream "eval");
        "true_score", "kl" and "reward": the policy's completions of fixed eval prompts,
        sampled with a fixed generator (see `_policy_figures`)."""
        params = np.asarray(params, np.float32)
        self.reward.load(params[:self._split])
        with torch.no_grad():
            scores = self.reward.module(torch.cat([self._eval_chosen, self._eval_rejected]))
        n = len(self._eval_chosen)
        good, bad = scores[:n], scores[n:]
        return {"loss": float(bradley_terry_loss(good, bad)),
                "reward_accuracy": float((good > bad).float().mean()),
                **self._policy_figures(params)}

    def kl_value(self, params: np.ndarray) -> float:
        """The policy's mean per-sequence KL to the reference on the eval rollouts: a pure
        function of the committed params, so every node feeds its adaptive KL controller
        the same value at each commit."""
        return self._policy_figures(np.asarray(params, np.float32))["kl"]

    def kl_controller(self) -> FixedKL | AdaptiveKL:
        """The run's KL coefficient controller: adaptive (Ziegler et al. 2019) when kl_target
        is set, else fixed at kl_coef. The RLHF service calls `.update(kl_value(params),
        batch * n_nodes)` after each committed PPO round and passes `.value` as
        job.context["kl_coef"]."""
        if self.kl_target is None:
            return FixedKL(self.kl_coef)
        return AdaptiveKL(self.kl_coef, self.kl_target, self.kl_horizon)

    def _policy_figures(self, params: np.ndarray) -> dict[str, float]:
        """true_score, kl and reward of the eval rollouts (cached for the latest params: the
        KL controller and evaluate ask for the same model)."""
        key = hashlib.sha256(params.tobytes()).digest()
        if self._eval_cache is not None and self._eval_cache[0] == key:
            return dict(self._eval_cache[1])
        self.reward.load(params[:self._split])
        self.policy.load(params[self._split:])
        generator = torch.Generator().manual_seed(self.rngs.seed("eval", "rollout"))
        ro = rollout(self.policy.module, self.reference.module, self._eval_prompts,
                     self.toy.completion_length, self.temperature, generator)
        with torch.no_grad():
            reward = float(self.reward.module(ro.tokens).mean())
        figures = {"true_score": _true_score(self.toy, ro.completions),
                   "kl": float((ro.logprobs - ro.ref_logprobs).sum(1).mean()),
                   "reward": reward}
        self._eval_cache = (key, figures)
        return dict(figures)


def _true_score(toy: ToyTask, completions: torch.Tensor) -> float:
    return float(np.mean([toy.score(c) for c in completions.numpy()]))


def noisy_toy_preferences(toy: ToyTask, count: int, seed: int,
                          label_accuracy: float = 0.9) -> PreferenceSet:
    """A preference set without a crowd, for in-process checks: `preference_tasks`' pairs,
    each labelled by its hidden truth with probability `label_accuracy` and inverted
    otherwise (stream ("rlhf", "label-noise")), at confidence `label_accuracy`."""
    if not 0.0 <= label_accuracy <= 1.0:
        raise ValueError(f"label_accuracy must be in [0, 1], got {label_accuracy}")
    synthetic = preference_tasks(toy, count, 0, seed)
    wrong = RngStreams(seed).stream("rlhf", "label-noise").random(count) >= label_accuracy
    pairs = []
    for i in range(count):
        task_id = f"t{i:04d}"
        task = synthetic.tasks.by_id[task_id]
        left, right = (toy.parse(text) for text in task.completions)
        better = synthetic.truth[task_id].choice[0] ^ int(wrong[i])
        chosen, rejected = (left, right) if better == 0 else (right, left)
        pairs.append(Preference(toy.parse(task.text), chosen, rejected, label_accuracy))
    return PreferenceSet(synthetic.tasks.root, 0, tuple(pairs))


# ---- argument checks: (field, broken, what is allowed), the first broken one is the error ----

_Check = tuple[str, Callable[[dict[str, Any]], bool], str]
_CHECKS: tuple[_Check, ...] = (
    ("n_nodes", lambda a: a["n_nodes"] < 1, "an integer >= 1"),
    ("batch", lambda a: a["batch"] < 1, "an integer >= 1"),
    ("collect_rounds", lambda a: a["collect_rounds"] < 0, "an integer >= 0"),
    ("reward_rounds", lambda a: a["reward_rounds"] < 0, "an integer >= 0"),
    ("policy_rounds", lambda a: a["policy_rounds"] < 0, "an integer >= 0"),
    ("method", lambda a: a["method"] not in ("ppo", "dpo"), "'ppo' or 'dpo'"),
    ("reward_lr", lambda a: a["reward_lr"] is not None and not a["reward_lr"] > 0,
     "a number > 0, or null for the scenario's lr"),
    ("policy_lr", lambda a: a["policy_lr"] is not None and not a["policy_lr"] > 0,
     "a number > 0, or null for the scenario's lr"),
    ("reward_center", lambda a: not a["reward_center"] >= 0, "a number >= 0"),
    ("kl_coef", lambda a: not a["kl_coef"] >= 0, "a number >= 0"),
    ("kl_target", lambda a: a["kl_target"] is not None and not a["kl_target"] > 0,
     "a number > 0, or null for a fixed kl_coef"),
    ("kl_target", lambda a: a["kl_target"] is not None and not a["kl_coef"] > 0,
     "set only with kl_coef > 0 (the adaptive controller scales it)"),
    ("kl_horizon", lambda a: a["kl_horizon"] < 1, "an integer >= 1"),
    ("kl_horizon", lambda a: a["kl_target"] is not None
     and a["kl_horizon"] < a["batch"] * a["n_nodes"],
     "at least batch * n_nodes (the rollouts one update of the KL controller counts)"),
    ("clip", lambda a: not a["clip"] > 0, "a number > 0"),
    ("value_clip", lambda a: not a["value_clip"] > 0, "a number > 0"),
    ("value_coef", lambda a: not a["value_coef"] >= 0, "a number >= 0"),
    ("entropy_coef", lambda a: not a["entropy_coef"] >= 0, "a number >= 0"),
    ("gamma", lambda a: not 0 < a["gamma"] <= 1, "a number in (0, 1]"),
    ("lam", lambda a: not 0 <= a["lam"] <= 1, "a number in [0, 1]"),
    ("ppo_epochs", lambda a: a["ppo_epochs"] < 1, "an integer >= 1"),
    ("ppo_local_lr", lambda a: not a["ppo_local_lr"] > 0, "a number > 0"),
    ("temperature", lambda a: not a["temperature"] > 0, "a number > 0"),
    ("dpo_beta", lambda a: not a["dpo_beta"] > 0, "a number > 0"),
    ("dpo_variant", lambda a: a["dpo_variant"] not in DPO_VARIANTS, ", ".join(DPO_VARIANTS)),
    ("label_smoothing", lambda a: not 0 <= a["label_smoothing"] < 0.5, "a number in [0, 0.5)"),
    ("label_smoothing", lambda a: a["dpo_variant"] == "ipo" and a["label_smoothing"] != 0,
     "0 with dpo_variant ipo (it smooths the sigmoid variants only)"),
    ("completion_filter", lambda a: a["completion_filter"] is not None
     and not callable(getattr(a["completion_filter"], "allows", None)),
     "null or an object with allows(text) -> bool"),
    ("blocked_score", lambda a: not np.isfinite(a["blocked_score"]), "a finite number"),
    ("eval_pairs", lambda a: a["eval_pairs"] < 1, "an integer >= 1"),
    ("eval_rollouts", lambda a: a["eval_rollouts"] < 1, "an integer >= 1"),
    ("synthetic_pairs", lambda a: not 0 <= a["synthetic_pairs"] <= 9999,
     "an integer in 0..9999 (0: committed preferences only)"),
)

_INTEGERS = ("n_nodes", "batch", "collect_rounds", "reward_rounds", "policy_rounds",
             "ppo_epochs", "kl_horizon", "eval_pairs", "eval_rollouts", "synthetic_pairs", "vocab", "prompt_length",
             "completion_length", "target", "n_layer", "n_head", "n_embd")
_NUMBERS = ("reward_lr", "policy_lr", "reward_center", "kl_coef", "kl_target",
            "clip", "value_clip", "value_coef", "entropy_coef", "gamma", "lam", "ppo_local_lr",
            "temperature", "dpo_beta", "label_smoothing", "blocked_score", "max_target_share")


def _validate(args: dict[str, Any]) -> None:
    """One-line ValueErrors naming the field and what it allows (never echoing the value)."""
    for name in _INTEGERS:
        if isinstance(args[name], bool) or not isinstance(args[name], int):
            raise ValueError(f"rlhf workload: {name} must be an integer")
    for name in _NUMBERS:
        value = args[name]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError(f"rlhf workload: {name} must be a number")
    if not isinstance(args["reward_margin"], bool):
        raise ValueError("rlhf workload: reward_margin must be true or false")
    for name, broken, allowed in _CHECKS:
        if broken(args):
            raise ValueError(f"rlhf workload: {name} must be {allowed}")
    try:  # the toy's and the model's own checks, which name their field
        ToyTask(args["vocab"], args["prompt_length"], args["completion_length"], args["target"],
                args["max_target_share"])
        GPTConfig(vocab_size=args["vocab"], block_size=1, n_layer=args["n_layer"],
                  n_head=args["n_head"], n_embd=args["n_embd"])
    except ValueError as err:
        raise ValueError(f"rlhf workload: {err}") from None
