"""Differential privacy of node releases: the accountant's (eps, delta) against a published
figure and the RDP bound, the clipping and noise, and a run that reports its budget."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

import phalanx
from phalanx.engine.privacy import clip_and_noise, gaussian_delta, gaussian_epsilon
from phalanx.scenario.schema import ScenarioError, parse_scenario

QUICKSTART = Path(__file__).resolve().parent.parent / "scenarios" / "quickstart.yaml"


def test_one_release_matches_the_analytic_gaussian_mechanism() -> None:
    # Balle & Wang (2018): sigma = 3.73 gives (1, 1e-5)-DP for sensitivity 1; the classic
    # bound sqrt(2 ln(1.25/delta)) / eps would need 4.84
    assert gaussian_epsilon(3.73, 1, 1e-5) == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize(("sigma", "releases"), [(0.8, 1), (1.0, 100), (4.0, 60), (20.0, 1000)])
def test_the_accountant_is_exact_and_no_looser_than_rdp(sigma: float, releases: int) -> None:
    delta = 1e-5
    eps = gaussian_epsilon(sigma, releases, delta)
    assert gaussian_delta(eps, sigma, releases) == pytest.approx(delta, rel=1e-6)
    rdp = min(releases * a / (2 * sigma**2) + math.log(1 / delta) / (a - 1)
              for a in np.linspace(1.01, 500, 50_000))  # Mironov 2017, Proposition 3
    assert eps <= rdp
    assert gaussian_epsilon(sigma * 1.5, releases, delta) < eps  # more noise, less loss
    assert gaussian_epsilon(sigma, releases * 2, delta) > eps  # more releases, more loss
    assert gaussian_epsilon(sigma, 0, delta) == 0.0


def test_a_release_is_clipped_then_noised_unpredictably_but_reproducibly() -> None:
    x = np.full(10_000, 3.0, dtype=np.float32)
    quiet = clip_and_noise(x, 2.0, 1e-9, b"k" * 32, 5, b"m" * 32)
    assert np.linalg.norm(quiet) == pytest.approx(2.0, rel=1e-6)
    noisy = clip_and_noise(x, 2.0, 0.5, b"k" * 32, 5, b"m" * 32)
    assert noisy.dtype == np.float32 and np.std(noisy - quiet) == pytest.approx(1.0, rel=0.05)
    assert np.array_equal(noisy, clip_and_noise(x, 2.0, 0.5, b"k" * 32, 5, b"m" * 32))
    assert not np.array_equal(noisy, clip_and_noise(x, 2.0, 0.5, b"j" * 32, 5, b"m" * 32))
    assert not np.array_equal(noisy, clip_and_noise(x, 2.0, 0.5, b"k" * 32, 6, b"m" * 32))


def test_a_private_run_reports_its_budget_and_pays_in_accuracy() -> None:
    data = yaml.safe_load(QUICKSTART.read_text())
    data["expect"] = {"honest_hashes_equal": True, "rounds_committed_at_least": 60}
    accuracy = {}
    for noise in (None, 1.0, 4.0):
        run = phalanx.run(parse_scenario({**data, **({"privacy": {
            "clip": 1.0, "noise_multiplier": noise}} if noise else {})}))
        assert run.ok, run.failures
        accuracy[noise] = run.summary["final_eval_accuracy"]
        if noise:
            p = run.summary["privacy"]
            assert p["releases"] == 60 and p["delta"] == 1e-5
            assert p["epsilon"] == pytest.approx(gaussian_epsilon(noise, 60, 1e-5))
    assert accuracy[None] > accuracy[1.0] > accuracy[4.0]
    with pytest.raises(ScenarioError, match=r"privacy\.clip"):
        parse_scenario({**data, "privacy": {"clip": 0, "noise_multiplier": 1.0}})
