"""The synthetic Markov corpus: its exact entropy rate, stationary distribution and sampler.

Reference values are computed here independently of the module (contexts as tuples of
symbols, transition matrices built entry by entry), so a wrong context encoding or formula
shows up as a mismatch rather than agreeing with itself.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import entropy

from phalanx.engine.train.synthetic import ALPHABET, MarkovSource, _stationary, corpus


def context_chain(probs: np.ndarray, order: int) -> sp.csr_matrix:
    """T[c, c'] for the chain on k-grams, from the tuple definition: (s_1..s_k) --x--> (s_2..s_k, x),
    with contexts numbered in base V, oldest symbol most significant."""
    n, vocab = probs.shape
    shape = (vocab,) * order
    rows, cols, vals = [], [], []
    for ctx in itertools.product(range(vocab), repeat=order):
        c = np.ravel_multi_index(ctx, shape)
        for x in range(vocab):
            rows.append(c)
            cols.append(np.ravel_multi_index((*ctx[1:], x), shape))
            vals.append(probs[c, x])
    return sp.csr_matrix((vals, (rows, cols)), shape=(n, n))


def true_nll(source: MarkovSource, ids: np.ndarray) -> np.ndarray:
    """−log P(x_t | previous k symbols) for t >= k, by a plain loop over the stream."""
    k, vocab = source.order, source.vocab
    out = []
    for t in range(k, len(ids)):
        c = 0
        for s in ids[t - k : t]:
            c = c * vocab + int(s)
        out.append(-math.log(source.probs[c, ids[t]]))
    return np.array(out)


def binary_entropy(p: float) -> float:
    return -p * math.log(p) - (1 - p) * math.log(1 - p)


def test_order_zero_is_iid_with_shannon_entropy() -> None:
    s = MarkovSource(vocab=5, order=0, concentration=0.7, seed=3)
    assert s.probs.shape == (1, 5)
    assert np.array_equal(s.stationary(), [1.0])
    assert s.entropy_rate() == pytest.approx(entropy(s.probs[0]), abs=1e-12)
    freq = np.bincount(s.sample(200_000, np.random.default_rng(0)), minlength=5) / 200_000
    assert np.abs(freq - s.probs[0]).max() < 0.005


def test_two_state_chain_has_the_textbook_stationary_law_and_entropy_rate() -> None:
    a, b = 0.2, 0.05
    s = MarkovSource.from_probs(np.array([[1 - a, a], [b, 1 - b]]), order=1)
    assert np.allclose(s.stationary(), np.array([b, a]) / (a + b), atol=1e-14)
    expected = (b * binary_entropy(a) + a * binary_entropy(b)) / (a + b)
    assert s.entropy_rate() == pytest.approx(expected, abs=1e-14)
    for method in ("dense", "power"):
        assert np.allclose(_stationary(s.probs, 1, method), [0.2, 0.8], atol=1e-12)


@pytest.mark.parametrize(("vocab", "order"), [(5, 2), (3, 3), (8, 4)])  # (8, 4): power iteration
def test_stationary_is_invariant_under_the_context_chain(vocab: int, order: int) -> None:
    s = MarkovSource(vocab=vocab, order=order, concentration=0.4, seed=order)
    pi = s.stationary()
    assert pi.shape == (vocab**order,)
    assert pi.sum() == pytest.approx(1.0, abs=1e-12) and pi.min() > 0
    assert np.abs(context_chain(s.probs, order).T @ pi - pi).max() < 1e-10


def test_dense_and_power_iteration_agree() -> None:
    s = MarkovSource(vocab=6, order=2, concentration=0.2, seed=5)
    dense = _stationary(s.probs, 2, "dense")
    power = _stationary(s.probs, 2, "power")
    assert np.abs(dense - power).max() < 1e-11


def test_samples_have_the_stated_statistics() -> None:
    vocab, order, n = 4, 2, 500_000
    s = MarkovSource(vocab=vocab, order=order, concentration=0.5, seed=1)
    h = s.entropy_rate()
    assert 0.3 < h < math.log(vocab) - 0.1  # a non-trivial source
    ids = s.sample(n, np.random.default_rng(2))
    assert ids.dtype == np.int64 and ids.shape == (n,)
    assert ids.min() >= 0 and ids.max() < vocab

    # plug-in conditional entropy H(X_t | context) from counts, first 2·10^5 tokens
    m = 200_000
    ctx = ids[: m - 2] * vocab + ids[1 : m - 1]
    counts = np.zeros((vocab**order, vocab))
    np.add.at(counts, (ctx, ids[2:m]), 1)
    row_totals = counts.sum(axis=1)
    plug_in = sum(row_totals[c] / row_totals.sum() * entropy(counts[c]) for c in range(len(counts)))
    assert abs(plug_in - h) < 0.02
    # contexts are visited with their stationary frequencies
    assert np.abs(row_totals / row_totals.sum() - s.stationary()).max() < 0.01

    # cross-entropy of the true probabilities on a long sample
    nll = true_nll(s, ids)
    assert abs(nll.mean() - h) < 0.01
    assert s.cross_entropy(ids) == pytest.approx(nll.mean(), abs=1e-12)


def test_same_seed_same_source_and_samples() -> None:
    a = MarkovSource(vocab=7, order=2, concentration=0.3, seed=42)
    b = MarkovSource(vocab=7, order=2, concentration=0.3, seed=42)
    assert np.array_equal(a.probs, b.probs)
    assert a.entropy_rate() == b.entropy_rate()
    x = a.sample(5_000, np.random.default_rng(9))
    assert np.array_equal(x, b.sample(5_000, np.random.default_rng(9)))
    assert not np.array_equal(x, a.sample(5_000, np.random.default_rng(10)))
    c = MarkovSource(vocab=7, order=2, concentration=0.3, seed=43)
    assert not np.allclose(a.probs, c.probs)
    with pytest.raises(ValueError):
        a.probs[0, 0] = 0.5  # the table is read-only


def test_concentration_controls_entropy() -> None:
    rates = [MarkovSource(10, 1, alpha, seed=0).entropy_rate() for alpha in (0.05, 0.5, 50.0)]
    assert rates[0] < rates[1] < rates[2] < math.log(10)
    assert rates[2] > math.log(10) - 0.05


def test_short_samples() -> None:
    s = MarkovSource(vocab=3, order=2, concentration=1.0, seed=0)
    rng = np.random.default_rng(0)
    for n in (0, 1, 2, 3):
        x = s.sample(n, rng)
        assert x.shape == (n,) and x.dtype == np.int64
    with pytest.raises(ValueError, match="n_tokens"):
        s.sample(-1, rng)


def test_first_tokens_are_a_stationary_context() -> None:
    # every window is stationary, including the first k tokens of a fresh sample
    s = MarkovSource(vocab=3, order=2, concentration=0.5, seed=4)
    rng = np.random.default_rng(0)
    heads = np.array([s.sample(2, rng) for _ in range(10_000)])
    freq = np.bincount(heads[:, 0] * 3 + heads[:, 1], minlength=9) / len(heads)
    assert np.abs(freq - s.stationary()).max() < 0.02


def test_text_round_trip() -> None:
    assert ALPHABET[:3] == "abc" and ALPHABET[26] == "A" and ALPHABET[-1] == "9"
    assert len(ALPHABET) == len(set(ALPHABET)) == 62
    s = MarkovSource(vocab=62, order=1, concentration=0.5, seed=0)
    ids = s.sample(3_000, np.random.default_rng(1))
    text = s.to_text(ids)
    assert isinstance(text, str) and len(text) == 3_000 and set(text) <= set(ALPHABET)
    assert np.array_equal(s.from_text(text), ids)
    small = MarkovSource(vocab=3, order=1, concentration=0.5, seed=0)
    assert small.alphabet == "abc"
    assert small.to_text(np.array([2, 0, 1])) == "cab"
    assert np.array_equal(small.from_text("cab"), [2, 0, 1])
    with pytest.raises(ValueError, match="alphabet"):
        small.from_text("abd")
    with pytest.raises(ValueError):
        small.to_text(np.array([3]))
    with pytest.raises(ValueError, match="vocab"):
        MarkovSource(vocab=63, order=0, concentration=1.0, seed=0).to_text(np.array([0]))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"vocab": 1}, "vocab"),
        ({"order": -1}, "order"),
        ({"vocab": 2, "order": 40}, "order"),  # over the table-size cap
        ({"vocab": 10**6, "order": 1}, "vocab"),
        ({"concentration": 0.0}, "concentration"),
        ({"concentration": -1.0}, "concentration"),
        ({"concentration": float("nan")}, "concentration"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict, name: str) -> None:
    args = {"vocab": 4, "order": 1, "concentration": 0.5, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=name):
        MarkovSource(**args)


def test_from_probs_validation() -> None:
    with pytest.raises(ValueError, match="rows"):
        MarkovSource.from_probs(np.full((3, 2), 0.5), order=1)
    with pytest.raises(ValueError, match="sum to 1"):
        MarkovSource.from_probs(np.array([[0.5, 0.6], [0.5, 0.5]]), order=1)
    with pytest.raises(ValueError, match="non-negative"):
        MarkovSource.from_probs(np.array([[1.5, -0.5], [0.5, 0.5]]), order=1)
    # two absorbing states: no unique stationary distribution
    with pytest.raises(ValueError, match="irreducible"):
        MarkovSource.from_probs(np.eye(2), order=1).stationary()


def test_corpus_gives_independent_reproducible_streams() -> None:
    s = MarkovSource(vocab=8, order=2, concentration=0.3, seed=0)
    train, val = corpus(s, train_tokens=5_000, val_tokens=2_000, seed=11)
    assert train.shape == (5_000,) and val.shape == (2_000,)
    assert not np.array_equal(train[:2_000], val)
    again = corpus(s, train_tokens=5_000, val_tokens=2_000, seed=11)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], val)
    # the validation stream does not depend on the training length
    assert np.array_equal(corpus(s, train_tokens=10, val_tokens=2_000, seed=11)[1], val)
    other = corpus(s, train_tokens=5_000, val_tokens=2_000, seed=12)
    assert not np.array_equal(other[0], train) and not np.array_equal(other[1], val)
