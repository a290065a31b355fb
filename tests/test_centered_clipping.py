"""Centered clipping's adaptive radius (issue 17): the default needs no per-scenario τ.

The default ``tau="auto"`` takes, at every iteration, the median (the ⌈n/2⌉-th smallest) of
the distances to the current centre. Checked here through the public API: far outliers are
clipped whatever their size, f < n/2 adversarial vectors cannot push τ beyond the honest
distances (nor shrink it below them), identical inputs come back unchanged, sender order only
moves the last bits, and a fixed τ still computes the old results bit for bit.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from phalanx.engine.aggregate import (
    AggregationContext,
    Aggregator,
    CenteredClipping,
    Mean,
    _numeric,
    make_aggregator,
)
from phalanx.engine.aggregate.centered_clipping import radius_rank

F32 = np.float32


def honest_cloud(seed: int, n: int, d: int, spread: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(d) * 5 + rng.standard_normal((n, d)) * spread).astype(F32)


def radii(rule: CenteredClipping, x: np.ndarray,
          ctx: AggregationContext) -> list[tuple[list[float], float]]:
    """(the n distances to the centre, τ) at each iteration, recorded by a thin subclass."""
    seen: list[tuple[list[float], float]] = []

    class Spy(CenteredClipping):
        def radius(self, dists: list[float], f: int) -> float:
            tau = super().radius(dists, f)
            seen.append((list(dists), tau))
            return tau

    Spy(tau=rule.tau, iterations=rule.iterations)(list(x), ctx)
    return seen


def test_the_default_is_the_adaptive_radius() -> None:
    assert CenteredClipping().tau == "auto"
    assert make_aggregator("centered_clipping") == CenteredClipping()
    assert make_aggregator("centered_clipping", tau="auto", iterations=3) == CenteredClipping(
        iterations=3)


@pytest.mark.parametrize(("n", "k"), [(1, 1), (2, 1), (3, 2), (7, 4), (10, 5), (31, 16)])
def test_radius_rank_is_the_lower_median(n: int, k: int) -> None:
    assert radius_rank(n) == k
    for f in range(0, (n + 1) // 2):  # f < n/2: the bounds the robustness argument needs
        assert f < k <= n - f


@pytest.mark.parametrize("scale", [1.0, 1e3, 1e6])
def test_a_far_outlier_is_clipped_whatever_its_size(scale: float) -> None:
    honest = honest_cloud(0, 9, 16)
    center = honest.astype(np.float64).mean(0)
    radius = float(np.linalg.norm(honest - center, axis=1).max())
    outlier = (center + 50.0 * scale).astype(F32)
    x = np.vstack([honest[:4], outlier, honest[4:]])
    c = AggregationContext(f=1, previous=honest[0])
    out = CenteredClipping()(list(x), c).astype(np.float64)
    assert np.linalg.norm(out - center) <= radius  # near the honest mean ...
    assert np.linalg.norm(Mean()(list(x), c) - center) > 4 * radius  # ... the mean is dragged


def test_scaling_the_outlier_does_not_move_the_result() -> None:
    # once an outlier is clipped, only its direction matters: ×1e6 changes nothing but rounding
    honest = honest_cloud(1, 9, 16)
    direction = np.ones(16) / 4.0
    c = AggregationContext(f=2, previous=honest[3])
    outs = []
    for scale in (1e2, 1e5, 1e8):
        x = np.vstack([honest, (honest.mean(0) + scale * direction).astype(F32)])
        outs.append(CenteredClipping()(list(x), c).astype(np.float64))
    for out in outs[1:]:
        assert np.abs(out - outs[0]).max() <= 1e-5 * np.abs(outs[0]).max()


@pytest.mark.parametrize(("n", "f"), [(10, 3), (10, 4), (7, 3), (13, 6), (31, 10)])
@pytest.mark.parametrize("where", ["far", "at_centre", "mixed"])
def test_byzantine_inputs_keep_the_radius_within_the_honest_distances(
    n: int, f: int, where: str
) -> None:
    """With f < n/2 adversarial vectors, each iteration's τ (the k-th smallest distance,
    k = ⌈n/2⌉) lies between the (k − f)-th and the k-th smallest honest distance to that
    iteration's centre: far vectors cannot inflate it beyond the honest distances, vectors
    placed at the centre cannot shrink it to zero."""
    rng = np.random.default_rng(n * 100 + f)
    for trial in range(4):
        honest = honest_cloud(trial, n - f, 8)
        prev = (honest.mean(0) + rng.standard_normal(8)).astype(F32)
        if where == "far":
            byz = prev + 10.0 ** rng.uniform(3, 12, (f, 1)) * rng.standard_normal((f, 8))
        elif where == "at_centre":
            byz = np.broadcast_to(prev, (f, 8))
        else:
            byz = np.vstack([np.broadcast_to(prev, (f // 2, 8)),
                             prev + 1e9 * rng.standard_normal((f - f // 2, 8))])
        order = rng.permutation(n)  # Byzantine senders anywhere in the id order
        x = np.vstack([honest, byz.astype(F32)])[order]
        honest_rows = [i for i in range(n) if order[i] < n - f]
        k = radius_rank(n)
        seen = radii(CenteredClipping(iterations=4), x, AggregationContext(f=f, previous=prev))
        assert len(seen) == 4
        for dists, tau in seen:
            h = sorted(dists[i] for i in honest_rows)
            assert h[k - f - 1] <= tau <= h[k - 1] <= h[-1], (where, trial, tau, h)
            assert tau > 0


def test_identical_inputs_give_that_input() -> None:
    for seed in range(5):
        row = honest_cloud(seed, 1, 33)[0]
        for n, f in [(1, 0), (4, 1), (10, 3), (31, 10)]:
            for prev in (None, np.zeros(33, F32), (row * 3 - 1).astype(F32)):
                out = CenteredClipping()([row] * n, AggregationContext(f=f, previous=prev))
                assert out.tobytes() == row.tobytes(), (seed, n, f)


def test_sender_order_changes_only_the_last_bits() -> None:
    """τ is an order statistic (the same whatever the sender order); the clipped vectors are
    summed in sender order, so a permutation may change the last bit, as for the mean — the
    promise test_aggregate.py holds for every centered-clipping configuration."""
    for seed in range(6):
        x = np.vstack([honest_cloud(seed, 10, 7), (np.full((3, 7), 40.0) * (seed + 1))]).astype(F32)
        c = AggregationContext(f=3, previous=x[0] * F32(0.5))
        base = CenteredClipping()(list(x), c)
        for k in range(3):
            perm = np.random.default_rng(100 * seed + k).permutation(len(x))
            np.testing.assert_array_max_ulp(CenteredClipping()(list(x[perm]), c), base, maxulp=2)
            assert radii(CenteredClipping(), x[perm], c)[0][1] == radii(CenteredClipping(), x, c)[0][1]


def test_the_radius_needs_no_f() -> None:
    # the median distance does not depend on the declared tolerance (f only gates n > 2f)
    x = honest_cloud(4, 11, 12, spread=3.0)
    outs = {CenteredClipping()(list(x), AggregationContext(f=f, previous=x[2])).tobytes()
            for f in range(6)}
    assert len(outs) == 1


def _old_rule(x: np.ndarray, prev: np.ndarray | None, tau: float, iterations: int) -> np.ndarray:
    """The rule's arithmetic before issue 17 (fixed τ), step for step: the clipped differences
    summed left to right in sender order from zeros, divided by n, added to the centre."""
    v = np.zeros(x.shape[1]) if prev is None else prev.astype(np.float64)
    for _ in range(iterations):
        d = _numeric.dists_to(x, v)
        clipped = [x[i] - v if d[i] <= tau else (x[i] - v) * (tau / d[i]) for i in range(len(x))]
        v = v + _numeric.sum_rows(np.array(clipped)) / len(x)
    return v


def test_an_explicit_tau_reproduces_the_old_results_bit_for_bit() -> None:
    for seed in range(4):
        x = np.vstack([honest_cloud(seed, 10, 65, spread=4.0), np.full((3, 65), 1e4, F32)])
        prev = x[1] * F32(0.25)
        for tau, iterations in [(10.0, 5), (1.0, 1), (0.3, 3), (1e9, 2)]:
            rule = make_aggregator("centered_clipping", tau=tau, iterations=iterations)
            c = AggregationContext(f=3, previous=prev)
            got = rule.aggregate_rows(_numeric.stack_gradients(list(x)), c)
            want = _old_rule(x.astype(np.float64), prev, tau, iterations)
            assert got.tobytes() == want.tobytes()
    # the pinned digest of the old default (tau = 10, 5 iterations) on fixed inputs
    i, j = np.meshgrid(np.arange(13), np.arange(257), indexing="ij")
    g = (((i * 1103515245 + j * 12345 + i * j * 2654435761 + 7) % 65536 - 32768).astype(F32)
         / F32(4099))
    out = CenteredClipping(tau=10.0)(list(g), AggregationContext(f=3, previous=g[0] / 2))
    assert hashlib.sha256(out.tobytes()).hexdigest()[:16] == OLD_DEFAULT_DIGEST


OLD_DEFAULT_DIGEST = "84f05715242efc71"  # computed with the rule as it was before issue 17


def fixed_inputs() -> np.ndarray:
    """Integer-built float32 inputs (no RNG, no libm) with one far outlier (row 3)."""
    i, j = np.meshgrid(np.arange(13), np.arange(257), indexing="ij")
    g = (((i * 1103515245 + j * 12345 + i * j * 2654435761 + 7) % 65536 - 32768).astype(F32)
         / F32(4099))
    g[3] *= F32(2**20)
    return g


# SHA-256 (first 16 hex digits) of the float32 output and of the float64 result of the
# adaptive default on fixed_inputs() with f = 3, seed 7, previous = row 0 / 2: a committed
# aggregate must recompute bit for bit, so a change here is a change of every CC run's hashes
ADAPTIVE_DIGESTS = {
    "centered_clipping": ("084ee92d607ed379", "4e3c26999cd73ed2"),
    "nnm_centered_clipping": ("264552d4b97f5832", "bf00606564c6ad76"),
}


@pytest.mark.parametrize("rule", sorted(ADAPTIVE_DIGESTS))
def test_the_adaptive_default_is_pinned_bit_for_bit(rule: str) -> None:
    agg = make_aggregator("centered_clipping", pre=("nnm",) if rule.startswith("nnm") else ())
    g = fixed_inputs()
    c = AggregationContext(f=3, seed=7, previous=g[0] / 2)
    out = agg(list(g), c)
    exact = agg.aggregate_rows(_numeric.stack_gradients(list(g)), c)
    assert out.tobytes() == exact.astype(F32).tobytes()
    assert out.tobytes() == agg(list(np.asfortranarray(g).astype(np.float64)), c).tobytes()
    digests = (hashlib.sha256(out.tobytes()).hexdigest()[:16],
               hashlib.sha256(exact.tobytes()).hexdigest()[:16])
    assert digests == ADAPTIVE_DIGESTS[rule]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"tau": "adaptive"}, "centered_clipping: tau must be a finite number > 0 or 'auto'"),
        ({"tau": 0.0}, "centered_clipping: tau must be a finite number > 0 or 'auto'"),
        ({"tau": -1}, r"tau must be .*; got -1$"),
        ({"tau": float("nan")}, "tau must be a finite number"),
        ({"tau": None}, r"tau must be .*; got None$"),
        ({"tau": True}, r"tau must be .*; got True$"),
        ({"iterations": 0}, "centered_clipping: iterations must be an integer >= 1; got 0"),
        ({"iterations": 2.0}, "iterations must be an integer >= 1; got 2.0"),
    ],
)
def test_bad_parameters_give_one_line_errors(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        make_aggregator("centered_clipping", **params)  # type: ignore[arg-type]
    assert "\n" not in str(err.value)


def test_the_scenario_schema_accepts_auto_and_a_number() -> None:
    from phalanx.scenario.schema import AggregatorSpec

    for params in ({}, {"tau": "auto"}, {"tau": 10}, {"tau": 2.5, "iterations": 3}):
        spec = AggregatorSpec.model_validate({"kind": "centered_clipping", "params": params})
        rule: Aggregator = make_aggregator(spec.kind, 3, tuple(spec.pre), **spec.params)
        assert isinstance(rule, CenteredClipping)
