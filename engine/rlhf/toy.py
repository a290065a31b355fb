"""The RLHF toy that runs on a CPU: short token sequences over a small vocabulary, and a
hidden preference with a checkable value, the share of one `target` token in a completion.

Simulated annotators compare two completions by that share (honest ones noisily, adversarial
ones inverted), a reward model learns it from their committed labels, and PPO or DPO moves the
policy towards it: the run reports the true score (the share) of the policy's completions
beside the reward model's. Token t is written as the t-th lower-case letter, space-separated,
so a comparison task reads "b a c" / "a a d ..." in the annotation UI.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np

from phalanx.engine.curation.synthetic import Synthetic
from phalanx.engine.curation.tasks import Answer, Task, TaskSet
from phalanx.engine.rng import RngStreams

__all__ = ["ToyTask", "preference_tasks"]

LETTERS = string.ascii_lowercase


@dataclass(frozen=True)
class ToyTask:
    vocab: int = 8
    prompt_length: int = 4
    completion_length: int = 8
    target: int = 0  # the token whose share the hidden preference rewards
    # a comparison's completions draw the target token with a probability uniform in
    # [0, max_target_share], so labelled pairs cover the range PPO will move the policy over
    max_target_share: float = 0.6

    def __post_init__(self) -> None:
        if not 2 <= self.vocab <= len(LETTERS):
            raise ValueError(f"vocab must be in 2..{len(LETTERS)}, got {self.vocab}")
        if not 0 <= self.target < self.vocab:
            raise ValueError(f"target must be a token below vocab {self.vocab}")
        if self.prompt_length < 1 or self.completion_length < 2:
            raise ValueError("prompt_length must be >= 1 and completion_length >= 2")
        if not 0 < self.max_target_share <= 1:
            raise ValueError("max_target_share must be in (0, 1]")

    def score(self, completion: tuple[int, ...] | np.ndarray) -> float:
        """The hidden preference: the share of the target token."""
        tokens = np.asarray(completion)
        return float((tokens == self.target).mean()) if tokens.size else 0.0

    def render(self, tokens: tuple[int, ...] | np.ndarray) -> str:
        return " ".join(LETTERS[int(t)] for t in tokens)

    def parse(self, text: str) -> tuple[int, ...]:
        """The tokens of `render`'s text; ValueError for anything else."""
        letters = text.split(" ")
        tokens = tuple(LETTERS.find(x) if len(x) == 1 else -1 for x in letters)
        if not text or any(not 0 <= t < self.vocab for t in tokens):
            raise ValueError(f"not a sequence of tokens a..{LETTERS[self.vocab - 1]}")
        return tokens

    def prompts(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """`count` prompts (count, prompt_length), uniform tokens."""
        return rng.integers(0, self.vocab, size=(count, self.prompt_length))

    def completion(self, rng: np.random.Generator) -> np.ndarray:
        share = rng.uniform(0.0, self.max_target_share)
        others = rng.integers(0, self.vocab - 1, size=self.completion_length)
        others = others + (others >= self.target)  # uniform over the other tokens
        return np.where(rng.random(self.completion_length) < share, self.target, others)

    def comparison(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A prompt and two completions with different true scores, the better one first."""
        prompt = self.prompts(rng, 1)[0]
        while True:
            a, b = self.completion(rng), self.completion(rng)
            if self.score(a) != self.score(b):
                return (prompt, a, b) if self.score(a) > self.score(b) else (prompt, b, a)


def preference_tasks(toy: ToyTask, count: int, gold: int, seed: int) -> Synthetic:
    """`count` pairwise tasks on the toy, ids `t0000`...; the true answer of each (0: left is
    better, 1: right) comes from the stream "truth" exactly as `synthetic_tasks` draws it, so
    a simulated crowd built with the same seed labels them against their hidden preference;
    the first `gold` carry it as gold answer."""
    if not (count >= 1 and 0 <= gold <= count):
        raise ValueError("preference tasks need count >= 1 and 0 <= gold <= count")
    streams = RngStreams(seed)
    truth_draws = streams.stream("truth").integers(0, 2, size=count).tolist()
    rng = streams.stream("rlhf", "tasks")
    tasks, truth = [], {}
    for i, better in enumerate(truth_draws):
        prompt, good, bad = toy.comparison(rng)
        pair = (good, bad) if better == 0 else (bad, good)
        task_id = f"t{i:04d}"
        tasks.append(Task.make(id=task_id, kind="pairwise", text=toy.render(prompt),
                               completions=(toy.render(pair[0]), toy.render(pair[1]))))
        truth[task_id] = Answer((int(better),))
    gold_answers = {f"t{i:04d}": truth[f"t{i:04d}"] for i in range(gold)}
    return Synthetic(TaskSet(tasks, gold_answers), truth)
