"""Gradient attacks of Byzantine nodes: formulas, determinism, finiteness, registry errors."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from phalanx.engine.byzantine.attacks import (
    ALIE,
    GRADIENT_ATTACKS,
    IPM,
    AttackContext,
    ColludingSignFlip,
    Gaussian,
    GradientAttack,
    Mimic,
    Scaled,
    SignFlip,
    alie_z,
    make_attack,
)


def ctx(n: int = 10, f: int = 3, round: int = 0, seed: int = 0) -> AttackContext:
    return AttackContext(n=n, f=f, round=round, rng=np.random.default_rng(seed))


def f32(*xs: float) -> np.ndarray:
    return np.array(xs, dtype=np.float32)


OWN = f32(1.0, -2.0, 0.5)
HONEST = [f32(1.0, 2.0, 3.0), f32(3.0, 2.0, 1.0), f32(2.0, 5.0, 2.0)]
HONEST_MEAN = np.array([2.0, 3.0, 2.0])
HONEST_STD = np.array([1.0, math.sqrt(3.0), 1.0])  # sample std, ddof = 1


# ------------------------------------------------------------------ formulas


def test_sign_flip_negates_own_and_ignores_honest() -> None:
    out = SignFlip()(OWN, HONEST, ctx())
    np.testing.assert_array_equal(out, -OWN)
    np.testing.assert_array_equal(SignFlip(scale=3.0)(OWN, [], ctx()), -3.0 * OWN)
    assert not SignFlip.needs_honest


def test_colluding_sign_flip_negates_honest_mean_and_falls_back_to_own() -> None:
    out = ColludingSignFlip(scale=2.0)(OWN, HONEST, ctx())
    np.testing.assert_allclose(out, -2.0 * HONEST_MEAN, rtol=1e-6)
    np.testing.assert_array_equal(ColludingSignFlip()(OWN, [], ctx()), -OWN)
    assert ColludingSignFlip.needs_honest
    assert make_attack("sign_flip_colluding", scale=2.0) == ColludingSignFlip(scale=2.0)


def test_scaled_multiplies_own() -> None:
    np.testing.assert_allclose(Scaled()(OWN, HONEST, ctx()), 100.0 * OWN)
    np.testing.assert_allclose(Scaled(scale=-7.5)(OWN, [], ctx()), -7.5 * OWN)


def test_gaussian_is_noise_from_ctx_rng_only() -> None:
    own = np.zeros(20_000, dtype=np.float32)
    out = Gaussian()(own, [], ctx(seed=5))
    expected = np.random.default_rng(5).normal(0.0, 200.0, size=own.shape).astype(np.float32)
    np.testing.assert_array_equal(out, expected)
    assert abs(float(out.std()) - 200.0) < 5.0 and abs(float(out.mean())) < 5.0
    # the own gradient only gives the shape
    np.testing.assert_array_equal(Gaussian()(own + 1e3, [], ctx(seed=5)), expected)
    np.testing.assert_array_equal(Gaussian(sigma=0.0)(OWN, [], ctx()), np.zeros(3, np.float32))


def test_alie_formula_on_hand_made_inputs() -> None:
    c = ctx(n=10, f=3)
    z = alie_z(10, 3)
    out = ALIE()(OWN, HONEST, c)
    np.testing.assert_allclose(out, HONEST_MEAN - z * HONEST_STD, rtol=1e-6)
    # a fixed z overrides the paper's rule (ByzFL-style tau); z = 0 is the honest mean
    np.testing.assert_allclose(
        ALIE(z=1.5)(OWN, HONEST, c), HONEST_MEAN - 1.5 * HONEST_STD, rtol=1e-6
    )
    np.testing.assert_allclose(ALIE(z=0.0)(OWN, HONEST, c), HONEST_MEAN, rtol=1e-6)
    # the Karimireddy et al. rule gives another z for the same (n, f)
    zk = alie_z(10, 3, rule="karimireddy")
    np.testing.assert_allclose(
        ALIE(z_rule="karimireddy")(OWN, HONEST, c), HONEST_MEAN - zk * HONEST_STD, rtol=1e-6
    )


def test_alie_without_honest_falls_back_to_own() -> None:
    np.testing.assert_array_equal(ALIE()(OWN, [], ctx()), OWN)


def test_alie_stays_within_z_std_of_the_honest_mean() -> None:
    rng = np.random.default_rng(1)
    honest = [rng.normal(0.5, 2.0, size=200).astype(np.float32) for _ in range(7)]
    c = ctx(n=10, f=3)
    out = ALIE()(honest[0], honest, c).astype(np.float64)
    stack = np.stack(honest).astype(np.float64)
    mu, sd = stack.mean(axis=0), stack.std(axis=0, ddof=1)
    z = alie_z(10, 3)
    assert np.all(np.abs(out - mu) <= z * sd + 1e-5)
    assert np.all(out <= mu + 1e-6)  # shifted by −z·std, z > 0
    # and well inside the honest range on every coordinate (that is the point of the attack)
    assert np.all(out >= stack.min(axis=0) - 1e-6)


@pytest.mark.parametrize(
    ("n", "f", "rule", "expected"),
    [
        # s = ⌊n/2+1⌋ − f; z = Φ⁻¹((n − s)/n) (paper) or Φ⁻¹((n − f − s)/(n − f))
        (10, 3, "paper", NormalDist().inv_cdf(7 / 10)),  # s = 3
        (31, 10, "paper", NormalDist().inv_cdf(25 / 31)),  # s = 6
        (25, 5, "paper", NormalDist().inv_cdf(17 / 25)),  # s = 8
        (4, 1, "paper", 0.0),  # s = 2: half the members, z = 0
        (25, 5, "karimireddy", NormalDist().inv_cdf(12 / 20)),  # the "about 0.25" of the logs
        (10, 3, "karimireddy", NormalDist().inv_cdf(4 / 7)),
    ],
)
def test_alie_z_values(n: int, f: int, rule: str, expected: float) -> None:
    assert alie_z(n, f, rule) == pytest.approx(expected, abs=1e-12)  # type: ignore[arg-type]


def test_alie_z_known_quantiles_and_sign() -> None:
    assert alie_z(10, 3) == pytest.approx(0.5244005, abs=1e-6)  # Φ⁻¹(0.7)
    assert alie_z(31, 10) == pytest.approx(0.8648944, abs=1e-6)  # Φ⁻¹(25/31)
    assert alie_z(25, 5, rule="karimireddy") == pytest.approx(0.2533471, abs=1e-6)  # Φ⁻¹(0.6)
    for n, f in [(10, 3), (31, 10), (25, 5), (100, 33), (7, 2)]:
        for rule in ("paper", "karimireddy"):
            z = alie_z(n, f, rule)
            assert math.isfinite(z) and z > 0


def test_alie_z_rejects_undefined_cases() -> None:
    with pytest.raises(ValueError, match="f=6"):
        alie_z(10, 6)  # s = 0: Byzantine majority, z would be +inf
    with pytest.raises(ValueError, match="f must be"):
        alie_z(10, 10)
    with pytest.raises(ValueError, match="n must be"):
        alie_z(0, 0)
    with pytest.raises(ValueError, match="rule"):
        alie_z(10, 3, rule="nope")  # type: ignore[arg-type]


def test_ipm_formula_and_negative_inner_product() -> None:
    out = IPM()(OWN, HONEST, ctx())
    np.testing.assert_allclose(out, -0.1 * HONEST_MEAN, rtol=1e-6)
    np.testing.assert_allclose(IPM(epsilon=100.0)(OWN, HONEST, ctx()), -100.0 * HONEST_MEAN)
    rng = np.random.default_rng(2)
    honest = [rng.normal(1.0, 3.0, size=500).astype(np.float32) for _ in range(9)]
    mean = np.mean(np.stack(honest).astype(np.float64), axis=0)
    for eps in (0.1, 100.0):
        assert float(np.dot(IPM(epsilon=eps)(honest[0], honest, ctx()), mean)) < 0
    np.testing.assert_allclose(IPM()(OWN, [], ctx()), -0.1 * OWN.astype(np.float64), rtol=1e-6)


def test_mimic_copies_the_most_extreme_honest_node_along_the_top_direction() -> None:
    # honest gradients spread along axis 0; node 3 sits furthest out on it
    honest = [f32(0.0, 1.0), f32(1.0, 1.1), f32(-1.0, 0.9), f32(4.0, 1.0), f32(0.5, 1.0)]
    m = Mimic()
    out = m(f32(9.0, 9.0), honest, ctx(round=0))
    np.testing.assert_array_equal(out, honest[3])
    assert m.chosen == 3
    # after the warm-up the target is frozen, whatever the later gradients look like
    later = [f32(-9.0, 0.0), f32(1.0, 1.0), f32(0.0, 0.0), f32(2.0, 2.0), f32(0.0, 7.0)]
    np.testing.assert_array_equal(m(f32(0.0, 0.0), later, ctx(round=1)), later[3])
    np.testing.assert_array_equal(m(f32(0.0, 0.0), later, ctx(round=7)), later[3])


def test_mimic_colluders_agree_and_fixed_target_and_fallback() -> None:
    rng = np.random.default_rng(3)
    honest = [rng.normal(size=50).astype(np.float32) for _ in range(6)]
    a, b = Mimic(), Mimic()  # two colluding nodes, different rngs: same target
    out_a = a(honest[0], honest, ctx(round=4, seed=1))
    out_b = b(honest[1], honest, ctx(round=4, seed=2))
    np.testing.assert_array_equal(out_a, out_b)
    assert a.chosen == b.chosen and any(np.array_equal(out_a, h) for h in honest)
    np.testing.assert_array_equal(Mimic(target=2)(OWN, HONEST, ctx()), HONEST[2])
    np.testing.assert_array_equal(Mimic(target=4)(OWN, HONEST, ctx()), HONEST[1])  # 4 % 3
    fresh = Mimic()
    np.testing.assert_array_equal(fresh(OWN, [], ctx()), OWN)
    assert fresh.chosen is None


def test_mimic_warmup_tracks_direction_over_rounds() -> None:
    honest = [f32(0.0, 0.0), f32(3.0, 0.0), f32(-1.0, 0.0), f32(0.0, 1.0)]
    m = Mimic(warmup=3)
    for r in range(5):
        out = m(OWN[:2], honest, ctx(round=r))
    np.testing.assert_array_equal(out, honest[1])
    assert m.chosen == 1
    # all-equal honest gradients: no direction, picks index 0
    same = [f32(1.0, 1.0)] * 3
    np.testing.assert_array_equal(Mimic()(f32(0.0, 0.0), same, ctx()), same[0])


# ------------------------------------------------------------------ common properties


ALL = sorted(GRADIENT_ATTACKS)


@pytest.mark.parametrize("name", ALL)
def test_output_shape_dtype_finite_and_deterministic(name: str) -> None:
    rng = np.random.default_rng(4)
    own = rng.normal(size=64).astype(np.float32)
    honest = [rng.normal(size=64).astype(np.float32) for _ in range(7)]
    outs = [make_attack(name)(own, honest, ctx(n=10, f=3, round=2, seed=9)) for _ in range(2)]
    for out in outs:
        assert out.shape == own.shape and out.dtype == np.float32
        assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(outs[0], outs[1])
    attack = make_attack(name)
    assert isinstance(attack, GradientAttack) and attack.name == name
    # inputs are never modified
    assert np.array_equal(own, np.random.default_rng(4).normal(size=64).astype(np.float32))


@pytest.mark.parametrize("name", ALL)
def test_output_finite_even_on_huge_or_nonfinite_inputs(name: str) -> None:
    big = np.full(8, 3e38, dtype=np.float32)
    bad = f32(np.nan, np.inf, -np.inf, 1.0, 0.0, -3e38, 3e38, 2.0)
    for own, honest in [(big, [big, -big, big]), (bad, [bad, big]), (big, [])]:
        out = make_attack(name, **({"scale": 1e30} if name == "scaled" else {}))(own, honest, ctx())
        assert out.dtype == np.float32 and out.shape == own.shape
        assert np.all(np.isfinite(out))


def test_shape_mismatch_and_non_1d_are_errors() -> None:
    with pytest.raises(ValueError, match="honest gradient 1 has shape"):
        IPM()(OWN, [HONEST[0], f32(1.0, 2.0)], ctx())
    with pytest.raises(ValueError, match="1-D"):
        SignFlip()(np.zeros((2, 2), np.float32), [], ctx())


# ------------------------------------------------------------------ registry and errors


def test_registry_lists_the_attacks() -> None:
    assert set(GRADIENT_ATTACKS) == {
        "sign_flip",
        "sign_flip_colluding",
        "scaled",
        "gaussian",
        "alie",
        "ipm",
        "mimic",
    }
    needs = {name for name, cls in GRADIENT_ATTACKS.items() if cls.needs_honest}
    assert needs == {"sign_flip_colluding", "alie", "ipm", "mimic"}
    assert make_attack("ipm", epsilon=100.0) == IPM(epsilon=100.0)
    assert make_attack("alie", z_rule="karimireddy").z_rule == "karimireddy"  # type: ignore[attr-defined]


def test_make_attack_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match=r"unknown gradient attack 'nope'; known: alie, gaussian"):
        make_attack("nope")
    with pytest.raises(ValueError, match=r"unknown parameter 'eps' .*'ipm'; known: epsilon"):
        make_attack("ipm", eps=0.1)
    with pytest.raises(ValueError, match=r"known: target, warmup"):
        make_attack("mimic", seed=1)
    with pytest.raises(ValueError, match=r"Gaussian.sigma must be >= 0"):
        make_attack("gaussian", sigma=-1.0)
    with pytest.raises(ValueError, match=r"SignFlip.scale must be a finite number"):
        make_attack("sign_flip", scale=float("nan"))
    with pytest.raises(ValueError, match=r"ALIE.z_rule must be one of paper, karimireddy"):
        make_attack("alie", z_rule="fixed")
    with pytest.raises(ValueError, match=r"Mimic.warmup must be an integer >= 1"):
        make_attack("mimic", warmup=0)
    with pytest.raises(ValueError, match=r"IPM.epsilon must be a finite number"):
        make_attack("ipm", epsilon="big")


def test_attack_context_validation() -> None:
    with pytest.raises(ValueError, match="f must be"):
        AttackContext(n=4, f=5, round=0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="rng"):
        AttackContext(n=4, f=1, round=0, rng=0)  # type: ignore[arg-type]
