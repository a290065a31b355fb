"""A synthetic corpus whose best achievable loss is known exactly.

On real text nobody knows the lowest loss a model could reach, so a training curve says how fast
the loss falls but not how far it still is from optimal. Here the text comes from a random
order-k Markov chain over V symbols, so the optimum is computable: no model, however large, can
score a lower expected cross-entropy than the chain's entropy rate

    H = Σ_c π(c) · H(P(·|c)) = −Σ_c π(c) Σ_x P(x|c) log P(x|c)      (nats per token),

where c ranges over the V**k contexts (the last k symbols), P(·|c) is the next-symbol
distribution and π is the stationary distribution of the chain on contexts. A trainer can
therefore assert "validation loss within 0.10 nats/token of H" (for the entropy rate of a
stationary Markov chain see Cover & Thomas, Elements of Information Theory, 2nd ed., §4.2,
Theorem 4.2.4).

Contexts are numbered in base V with the oldest symbol most significant: the context
(s_1, ..., s_k) is Σ_j s_j · V**(k−j), and after emitting x it becomes (c mod V**(k−1))·V + x.

Everything here is deterministic: a source is a pure function of its arguments, and sampling
draws only from the ``numpy.random.Generator`` it is given.
"""

from __future__ import annotations

import math
import numbers
import operator
import string
from bisect import bisect_right

import numpy as np

# a-z, A-Z, 0-9: printable, and one character per symbol so a char-level tokenizer sees the
# same stream.
ALPHABET = string.ascii_lowercase + string.ascii_uppercase + string.digits

# The transition table has V**(k+1) float64 entries; 2**24 of them is 128 MiB.
MAX_TABLE = 2**24
# Dirichlet draws with a small concentration can underflow to exactly 0. Flooring them keeps
# every transition possible (so the context chain is irreducible and aperiodic, and −log P is
# finite). H is computed from the floored table, so it stays exact for what is sampled.
PROB_FLOOR = 1e-9
# Up to this many contexts the stationary distribution is a dense linear solve (exact whatever
# the mixing time); above it, power iteration on the sparse context chain, which converges in
# tens of steps for typical sources. (Sparse LU fills in badly on this de Bruijn-like graph,
# and GMRES is no faster than power iteration on the slow-mixing ones.)
_DENSE_MAX = 2048
_POWER_TOL = 1e-12
_POWER_MAX_ITER = 10_000


class MarkovSource:
    """A random order-``order`` Markov chain over ``vocab`` symbols.

    Each of the ``vocab**order`` contexts gets its own next-symbol distribution, drawn from a
    symmetric Dirichlet(``concentration``): a small concentration makes the distributions
    peaky (low entropy), a large one makes them near uniform (entropy near log V). The table is
    drawn from ``numpy.random.default_rng(seed)``, so equal arguments give equal sources.
    """

    __slots__ = ("_pi", "_rows", "order", "probs", "vocab")

    vocab: int
    order: int
    probs: np.ndarray  # (vocab**order, vocab), read-only; row c is P(·|c)

    def __init__(self, vocab: int, order: int, concentration: float, seed: int) -> None:
        vocab, order = _check_shape(vocab, order)
        if not (isinstance(concentration, numbers.Real) and 0 < concentration < math.inf):
            raise ValueError(
                f"concentration must be a positive finite number, got {concentration!r}"
            )
        rng = np.random.default_rng(seed)
        probs = rng.dirichlet(np.full(vocab, float(concentration)), size=vocab**order)
        probs = np.maximum(probs, PROB_FLOOR)
        self._setup(probs / probs.sum(axis=1, keepdims=True), order)

    @classmethod
    def from_probs(cls, probs: np.ndarray, order: int) -> MarkovSource:
        """A source with a given transition table of shape (V**order, V) (rows are P(·|c), in
        the context numbering of the module docstring). Zeros are allowed, but the chain on
        contexts must be irreducible, otherwise ``stationary()`` raises ValueError."""
        p = np.array(probs, dtype=np.float64)
        if p.ndim != 2:
            raise ValueError(f"probs must be a 2-d array, got shape {p.shape}")
        vocab, order = _check_shape(p.shape[1], order)
        if p.shape[0] != vocab**order:
            raise ValueError(
                f"probs must have vocab**order = {vocab**order} rows for order={order}, "
                f"got {p.shape[0]}"
            )
        if not np.all(np.isfinite(p)) or np.any(p < 0):
            raise ValueError("probs must be finite and non-negative")
        if not np.allclose(p.sum(axis=1), 1.0, rtol=0.0, atol=1e-9):
            raise ValueError("each row of probs must sum to 1")
        source = cls.__new__(cls)
        source._setup(p / p.sum(axis=1, keepdims=True), order)
        return source

    def _setup(self, probs: np.ndarray, order: int) -> None:
        probs.setflags(write=False)
        self.probs = probs
        self.vocab = probs.shape[1]
        self.order = order
        self._pi: np.ndarray | None = None
        # Per-context cumulative boundaries as Python lists, built when a context is first
        # visited: bisect on a list is the cheapest exact sampler a Python loop can call.
        self._rows = _CumulativeRows(probs)

    @property
    def n_contexts(self) -> int:
        return self.probs.shape[0]

    def __repr__(self) -> str:
        return f"MarkovSource(vocab={self.vocab}, order={self.order})"

    # ---- exact quantities ----------------------------------------------------------------

    def stationary(self) -> np.ndarray:
        """π over contexts: the stationary distribution of the chain on k-grams (shape (V**k,))."""
        if self._pi is None:
            pi = _stationary(self.probs, self.order)
            pi.setflags(write=False)
            self._pi = pi
        return self._pi.copy()

    def entropy_rate(self) -> float:
        """H = Σ_c π(c) · H(P(·|c)) in nats per token: the lowest expected cross-entropy any
        predictor of this process can reach."""
        p = self.probs
        row_entropy = -np.sum(p * np.log(np.where(p > 0, p, 1.0)), axis=1)  # 0·log 0 = 0
        return float(self.stationary() @ row_entropy)

    def cross_entropy(self, ids: np.ndarray) -> float:
        """Mean −log P(x_t | x_{t−k}, ..., x_{t−1}) over t >= k of a stream under the true
        probabilities: what a perfect model scores on this exact stream (H plus sampling
        noise)."""
        x = self._check_ids(ids)
        k = self.order
        if len(x) <= k:
            raise ValueError(f"need more than order={k} tokens, got {len(x)}")
        ctx = np.zeros(len(x) - k, dtype=np.int64)
        for j in range(k):
            ctx = ctx * self.vocab + x[j : len(x) - k + j]
        return float(-np.mean(np.log(self.probs[ctx, x[k:]])))

    # ---- sampling --------------------------------------------------------------------------

    def sample(self, n_tokens: int, rng: np.random.Generator) -> np.ndarray:
        """``n_tokens`` symbol ids (int64) of the stationary process.

        The first k tokens are a context drawn from π, the rest are generated from it, so every
        window of the stream has its stationary distribution.
        """
        n = operator.index(n_tokens)
        if n < 0:
            raise ValueError(f"n_tokens must be >= 0, got {n}")
        vocab, k = self.vocab, self.order
        if k == 0:  # i.i.d. symbols: one vectorised inverse-CDF lookup
            return np.searchsorted(self._rows[0], rng.random(n), side="right").astype(np.int64)

        cdf = np.cumsum(self.stationary())
        c = min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), len(cdf) - 1)
        out = [(c // vocab ** (k - 1 - j)) % vocab for j in range(k)][:n]
        # The chain is sequential, so this is a Python loop; kept to a list lookup, one C-level
        # bisect and integer arithmetic per token (~0.2 µs).
        rows, keep, append = self._rows, vocab ** (k - 1), out.append
        for u in rng.random(max(n - k, 0)).tolist():
            x = bisect_right(rows[c], u)
            append(x)
            c = (c % keep) * vocab + x
        return np.array(out, dtype=np.int64)

    # ---- text view -------------------------------------------------------------------------

    @property
    def alphabet(self) -> str:
        """The printable characters for symbols 0..V−1 (a-z, A-Z, 0-9 in that order)."""
        if self.vocab > len(ALPHABET):
            raise ValueError(f"vocab={self.vocab} has no text form (at most {len(ALPHABET)})")
        return ALPHABET[: self.vocab]

    def to_text(self, ids: np.ndarray) -> str:
        table = np.frombuffer(self.alphabet.encode("ascii"), dtype=np.uint8)
        return table[self._check_ids(ids)].tobytes().decode("ascii")

    def from_text(self, text: str) -> np.ndarray:
        lookup = {ch: i for i, ch in enumerate(self.alphabet)}
        bad = set(text) - lookup.keys()
        if bad:
            raise ValueError(f"characters outside the alphabet {self.alphabet!r}: {sorted(bad)}")
        table = np.full(128, -1, dtype=np.int64)
        for ch, i in lookup.items():
            table[ord(ch)] = i
        return table[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]

    def _check_ids(self, ids: np.ndarray) -> np.ndarray:
        x = np.asarray(ids)
        if x.ndim != 1 or (x.size and not np.issubdtype(x.dtype, np.integer)):
            raise ValueError(f"ids must be a 1-d integer array, got {x.dtype} {x.shape}")
        x = x.astype(np.int64)
        if x.size and (x.min() < 0 or x.max() >= self.vocab):
            raise ValueError(f"ids must lie in [0, {self.vocab})")
        return x


def corpus(
    source: MarkovSource, train_tokens: int, val_tokens: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Independent train and validation streams from ``source``.

    ``numpy.random.SeedSequence(seed).spawn(2)`` gives the two streams' generators: they are
    statistically independent of each other, and each is reproducible from ``seed`` alone (the
    validation stream does not depend on how many training tokens were asked for).
    """
    train_seq, val_seq = np.random.SeedSequence(seed).spawn(2)
    train = source.sample(train_tokens, np.random.default_rng(train_seq))
    val = source.sample(val_tokens, np.random.default_rng(val_seq))
    return train, val


# ---- helpers -------------------------------------------------------------------------------


class _CumulativeRows(dict[int, list[float]]):
    """context -> the V−1 inner boundaries of its cumulative distribution, built on first use
    (a full table of Python floats would cost ~30x the numpy table)."""

    def __init__(self, probs: np.ndarray) -> None:
        super().__init__()
        self._probs = probs

    def __missing__(self, c: int) -> list[float]:
        row = np.cumsum(self._probs[c, :-1]).tolist()
        self[c] = row
        return row


def _check_shape(vocab: int, order: int) -> tuple[int, int]:
    vocab, order = operator.index(vocab), operator.index(order)
    if vocab < 2:
        raise ValueError(f"vocab must be >= 2, got {vocab}")
    if order < 0:
        raise ValueError(f"order must be >= 0, got {order}")
    # order > 64 is over the cap for any vocab >= 2; checking first avoids a huge power.
    if order > 64 or vocab ** (order + 1) > MAX_TABLE:
        raise ValueError(
            f"vocab={vocab}, order={order} needs vocab**(order + 1) transition probabilities, "
            f"more than the cap of {MAX_TABLE}; lower vocab or order"
        )
    return vocab, order


def _step(pi: np.ndarray, probs: np.ndarray, order: int) -> np.ndarray:
    """One step of the context chain: π ↦ π·T without building T.

    Context c = a·V**(k−1) + b (a the oldest symbol) moves to b·V + x with probability
    P(x|c), so the mass arriving at (b, x) is Σ_a π(a, b)·P(x | a, b).
    """
    vocab = probs.shape[1]
    flow = (pi[:, None] * probs).reshape(vocab, vocab ** (order - 1), vocab)
    return flow.sum(axis=0).reshape(-1)


def _stationary(probs: np.ndarray, order: int, method: str = "auto") -> np.ndarray:
    """π with π·T = π, Σπ = 1 for the chain on contexts. ``method``: dense, power or auto."""
    n = probs.shape[0]
    if order == 0:
        return np.ones(1)
    if method == "dense" or (method == "auto" and n <= _DENSE_MAX):
        vocab = probs.shape[1]
        nxt = (np.arange(n) % vocab ** (order - 1) * vocab)[:, None] + np.arange(vocab)
        t = np.zeros((n, n))
        np.add.at(t, (np.repeat(np.arange(n), vocab), nxt.reshape(-1)), probs.reshape(-1))
        # (Tᵀ − I)π = 0 has rank n−1 for an irreducible chain; swap one equation for Σπ = 1.
        a = t.T - np.eye(n)
        a[-1] = 1.0
        b = np.zeros(n)
        b[-1] = 1.0
        try:
            pi = np.linalg.solve(a, b)
        except np.linalg.LinAlgError:
            raise ValueError("the context chain is not irreducible: no unique π") from None
    elif method in ("power", "auto"):
        # Converges geometrically because every transition is possible (PROB_FLOOR), but at the
        # chain's mixing rate: very peaky sources with long contexts (e.g. vocab=2, order=16,
        # concentration=0.05) mix too slowly and end in the error below.
        pi = np.full(n, 1.0 / n)
        for _ in range(_POWER_MAX_ITER):
            new = _step(pi, probs, order)
            new /= new.sum()
            done = np.abs(new - pi).sum() <= _POWER_TOL
            pi = new
            if done:
                break
        else:
            raise RuntimeError(
                f"the stationary distribution did not converge in {_POWER_MAX_ITER} power "
                "iterations: the chain mixes too slowly (raise concentration or lower order)"
            )
    else:
        raise ValueError(f"method must be 'auto', 'dense' or 'power', got {method!r}")
    if not np.all(np.isfinite(pi)) or pi.min() < -1e-9:
        raise ValueError("the context chain is not irreducible: no unique π")
    pi = np.clip(pi, 0.0, None)
    pi /= pi.sum()
    if np.abs(_step(pi, probs, order) - pi).sum() > 1e-9:
        raise ValueError("the context chain is not irreducible: no unique π")
    return pi
