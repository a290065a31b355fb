"""Token streams and the batches drawn from them.

A step's batch is a pure function of (stream, seed, step, sequences): windows start at offsets
drawn from a generator seeded with exactly those numbers. So a run resumed at step s sees the
very batches an uninterrupted run would, with no loader state to save, and a prefetching
loader may build batches in any order. The micro-batches of gradient accumulation are slices
of the step's batch, so however memory forces a step to be split, it trains on the same
tokens. (Reading files and prefetching threads live in the app that
drives training; this module does no I/O.)

Sources:
- plain text, tokenized whole;
- the original system's `prompt|completion` lines (e.g. `I like to cook in the |kitchen`):
  each line becomes prompt + completion + end-of-line, and only the completion's tokens (and
  the end of line) carry loss;
- token arrays, e.g. the synthetic Markov corpus (`synthetic.py`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from phalanx.engine.model.tokenizer import Tokenizer

Batch = tuple[torch.Tensor, torch.Tensor]  # inputs and targets, (batch, block) each


class DataError(ValueError):
    """Input that cannot become training data; the message names where."""


@dataclass(frozen=True)
class TokenStream:
    tokens: np.ndarray  # int64 token ids
    loss: np.ndarray | None = None  # bool per position: predicting this token counts

    def __post_init__(self) -> None:
        if self.loss is not None and self.loss.shape != self.tokens.shape:
            raise DataError("loss mask and tokens differ in length")

    def __len__(self) -> int:
        return len(self.tokens)

    def split(self, val_fraction: float) -> tuple[TokenStream, TokenStream]:
        """The first (1 - val_fraction) for training, the rest for validation."""
        cut = int(len(self) * (1.0 - val_fraction))
        mask = self.loss
        return (TokenStream(self.tokens[:cut], None if mask is None else mask[:cut]),
                TokenStream(self.tokens[cut:], None if mask is None else mask[cut:]))


def text_stream(text: str, tokenizer: Tokenizer) -> TokenStream:
    return TokenStream(np.asarray(tokenizer.encode(text), dtype=np.int64))


def parse_prompt_completion(lines: Iterable[str], source: str = "input") -> list[tuple[str, str]]:
    """`prompt|completion` pairs; blank lines are skipped, anything else without exactly one
    `|` is refused with its line number."""
    pairs = []
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\n")
        if not line.strip():
            continue
        if line.count("|") != 1:
            raise DataError(f"{source}:{number}: expected 'prompt|completion' (one '|'), got "
                            f"{line[:60]!r}")
        prompt, completion = line.split("|")
        if not completion:
            raise DataError(f"{source}:{number}: empty completion")
        pairs.append((prompt, completion))
    if not pairs:
        raise DataError(f"{source}: no prompt|completion lines")
    return pairs


def prompt_completion_stream(pairs: list[tuple[str, str]], tokenizer: Tokenizer) -> TokenStream:
    tokens: list[int] = []
    loss: list[bool] = []
    for prompt, completion in pairs:
        p, c = tokenizer.encode(prompt), tokenizer.encode(completion + "\n")
        tokens += p + c
        loss += [False] * len(p) + [True] * len(c)
    return TokenStream(np.asarray(tokens, dtype=np.int64), np.asarray(loss, dtype=bool))


def _windows(stream: TokenStream, starts: np.ndarray, block: int) -> Batch:
    index = starts[:, None] + np.arange(block + 1)[None, :]
    chunk = stream.tokens[index]
    x, y = chunk[:, :-1].copy(), chunk[:, 1:].copy()
    if stream.loss is not None:
        y[~stream.loss[index][:, 1:]] = -1  # cross-entropy's ignore_index
    return torch.from_numpy(x), torch.from_numpy(y)


def step_batch(stream: TokenStream, seed: int, step: int, sequences: int, block: int) -> Batch:
    """Inputs and targets (sequences, block) of optimizer step `step`."""
    if len(stream) < block + 2:
        raise DataError(f"{len(stream)} tokens cannot fill a window of {block + 1}")
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, len(stream) - block - 1, size=sequences)
    return _windows(stream, starts, block)


def split(batch: Batch, micro: int) -> list[Batch]:
    """`batch` in consecutive micro-batches of at most `micro` rows, as even as they can be
    (10 rows by 4: 4, 3, 3)."""
    rows = batch[0].size(0)
    parts = -(-rows // max(micro, 1))
    sizes = [rows // parts + (i < rows % parts) for i in range(parts)]
    xs, ys = batch[0].split(sizes), batch[1].split(sizes)
    return list(zip(xs, ys, strict=True))


def eval_batches(stream: TokenStream, batch: int, block: int,
                 max_batches: int | None = None) -> list[Batch]:
    """Consecutive non-overlapping windows over a validation stream (every token predicted
    once), grouped in batches: a low-variance estimate of the loss on that stream."""
    count = (len(stream) - 1) // block
    if count < 1:
        raise DataError(f"{len(stream)} validation tokens cannot fill a window of {block + 1}")
    starts = np.arange(count) * block
    groups = [starts[i:i + batch] for i in range(0, count, batch)]
    return [_windows(stream, g, block) for g in groups[:max_batches]]
