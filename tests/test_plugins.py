"""Bring your own rule: a package outside phalanx, installed into a scratch environment,
adds an aggregator and an attack by entry points; the matrix and `phalanx check` run them
beside the built-ins, and a deliberately weak user rule fails the check with its replay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from phalanx.engine.aggregate import AggregationContext, make_aggregator
from phalanx.engine.plugins import PluginError
from phalanx.scenario.schema import ScenarioError, parse_scenario

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "userlab"
version = "0.1"

[tool.setuptools]
packages = ["userlab"]

[project.entry-points."phalanx.aggregators"]
largest_norm = "userlab.rules:LargestNorm"
coord_median = "userlab.rules:CoordMedian"

[project.entry-points."phalanx.attacks"]
negate_mean = "userlab.attacks:NegateMean"
"""

RULES = '''\
from dataclasses import dataclass

import numpy as np

from phalanx.engine.aggregate import Aggregator


@dataclass(frozen=True)
class LargestNorm(Aggregator):
    """Deliberately weak: the input of the largest norm (an attacker's, if it is loud)."""

    name = "largest_norm"

    def aggregate_rows(self, x, ctx):
        norms = np.sqrt((x * x).sum(axis=1))
        return x[int(np.argmax(norms))].copy()


@dataclass(frozen=True)
class CoordMedian(Aggregator):
    """The coordinate-wise median, with a parameter checked like a built-in's."""

    name = "coord_median"
    scale: float = 1.0

    def validate(self):
        self.require(self.scale > 0, f"scale must be > 0; got {self.scale!r}")

    def aggregate_rows(self, x, ctx):
        return self.scale * np.median(x, axis=0)
'''

ATTACKS = '''\
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from phalanx.engine.byzantine.attacks import GradientAttack


@dataclass(frozen=True)
class NegateMean(GradientAttack):
    """Send -scale times the honest mean."""

    name: ClassVar[str] = "negate_mean"
    needs_honest: ClassVar[bool] = True
    scale: float = 10.0

    def __call__(self, own, honest, ctx):
        mean = np.mean(np.stack(honest), axis=0) if honest else own
        return (-self.scale * mean).astype(np.float32)
'''

BASE = """\
name: userlab-base
seed: 3
nodes: {count: 7}
links: {latency: 0.01, jitter: 0.002}
workload: {kind: mlp}
training: {rounds: 30, lr: 0.5, momentum: 0.0, worker_momentum: 0.9, step_time: 0.02,
           round_timeout: 0.3, view_timeout: 1.0}
record: none
node_logs: false
expect: {honest_hashes_equal: true, rounds_committed_at_least: 30, final_accuracy_above: 0.5}
"""

MATRIX = """\
name: userlab-matrix
attacks:
  sign_flip: {behaviour: sign_flip}
  negate_mean: {behaviour: negate_mean, params: {scale: 20}}
groups:
  - name: users
    base: base.yaml
    byzantine_nodes: [1, 4]
    attacks: [none, sign_flip, negate_mean]
    aggregators: [mean, median, coord_median, largest_norm]
"""


@pytest.fixture(scope="module")
def userlab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's package, built and installed into a folder of its own (the scratch
    environment: it is on the path only of the processes given it)."""
    root = tmp_path_factory.mktemp("userlab")
    src = root / "src"
    (src / "userlab").mkdir(parents=True)
    (src / "pyproject.toml").write_text(PYPROJECT)
    (src / "userlab" / "__init__.py").write_text("")
    (src / "userlab" / "rules.py").write_text(RULES)
    (src / "userlab" / "attacks.py").write_text(ATTACKS)
    site = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--target", str(site), str(src)],
                   check=True, capture_output=True, timeout=300)
    return site


def _env(site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(site), *filter(None, [os.environ.get("PYTHONPATH")])])}


def test_check_runs_user_rules_beside_the_builtins_and_fails_the_weak_one(
        userlab: Path, tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "base.yaml").write_text(BASE)
    (suite / "matrix.yaml").write_text(MATRIX)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "phalanx.apps.cli", "check", str(suite),
                           "--out", str(out), "--workers", "2"],
                          capture_output=True, text=True, env=_env(userlab), timeout=600)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    report = (out / "report.md").read_text()
    # the weak user rule fails under the loud user attack, named with its replay command
    weak = "matrix.yaml::users/complete/negate_mean/largest_norm"
    assert weak in report
    assert "phalanx run " in report and "final_accuracy_above" in report
    # the built-in robust rule and the user's median pass beside it
    for fine in ("users/complete/negate_mean/median", "users/complete/negate_mean/coord_median",
                 "users/complete/none/largest_norm"):
        assert fine not in report
    # the replay file fails on its own, in the user's environment
    replay = next((out / "failing").glob("*negate_mean*largest_norm*.yaml"))
    again = subprocess.run([sys.executable, "-m", "phalanx.apps.cli", "run", str(replay),
                            "-q", "--out", str(tmp_path / "replay")],
                           capture_output=True, text=True, env=_env(userlab), timeout=300)
    assert again.returncode == 1 and "final_accuracy_above" in again.stdout + again.stderr
    # JUnit XML a parser reads: one testcase per cell, failures with messages
    root = ET.parse(out / "junit.xml").getroot()
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == 12 and int(root.get("tests", "0")) == 12
    failed = {c.get("name") for c in cases if c.find("failure") is not None}
    assert weak in failed and int(root.get("failures", "0")) == len(failed)
    assert all("coord_median" not in name for name in failed)


def test_a_module_path_names_a_rule_without_packaging(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "lab_rules.py").write_text(RULES)
    monkeypatch.syspath_prepend(str(tmp_path))
    rule = make_aggregator("lab_rules:CoordMedian", f=1, scale=2.0)
    x = [np.array([1.0, 5.0], np.float32), np.array([3.0, -1.0], np.float32),
         np.array([2.0, 2.0], np.float32)]
    np.testing.assert_array_equal(rule(x, AggregationContext(1)), [4.0, 4.0])
    # parameters are checked like a built-in's, in one line
    with pytest.raises(ValueError, match="coord_median: scale must be > 0"):
        make_aggregator("lab_rules:CoordMedian", scale=-1.0)
    with pytest.raises(ValueError, match="has no parameter 'tau'"):
        make_aggregator("lab_rules:CoordMedian", tau=1.0)


@pytest.mark.parametrize(("name", "message"), [
    ("no_such_module_xyz:Rule", "cannot import no_such_module_xyz"),
    ("numpy:NoSuchRule", "numpy has no NoSuchRule"),
    ("numpy:ndarray", "is not a subclass of"),
    ("not_registered_anywhere", "unknown aggregator 'not_registered_anywhere'"),
])
def test_bad_user_names_get_one_line(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        make_aggregator(name)
    assert "\n" not in str(err.value)
    data = {"name": "x", "nodes": {"count": 4}, "workload": {"kind": "linear"},
            "training": {"rounds": 2, "aggregator": name}}
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(data)


def test_plugin_errors_are_value_errors() -> None:
    assert issubclass(PluginError, ValueError)


WORKLOAD = '''\
from phalanx.engine.workloads.linear import LinearRegression


class NoisyLinear(LinearRegression):
    """The built-in least squares with a user parameter of its own."""

    name = "noisy_linear"

    def __init__(self, *, n_nodes, rngs, batch=32, loudness=1.0):
        super().__init__(n_nodes=n_nodes, rngs=rngs, batch=batch, noise=0.1 * loudness)
'''


def test_a_user_workload_runs_and_its_parameters_are_checked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from phalanx.apps.runner import run_scenario

    (tmp_path / "lab_workloads.py").write_text(WORKLOAD)
    monkeypatch.syspath_prepend(str(tmp_path))
    data = {"name": "user-workload", "nodes": {"count": 4},
            "workload": {"kind": "lab_workloads:NoisyLinear", "loudness": 2.0},
            "training": {"rounds": 5}, "record": "none", "node_logs": False}
    result = run_scenario(parse_scenario(data))
    assert result.summary["min_rounds_committed"] == 5
    assert "loudness: 2.0" in result.scenario.resolved_yaml()
    bad = {**data, "workload": {"kind": "lab_workloads:NoisyLinear", "volume": 2}}
    with pytest.raises(ScenarioError, match="has no parameter 'volume'; its parameters: "
                                            "loudness"):
        parse_scenario(bad)


def test_a_user_rule_runs_in_real_tcp_nodes_and_ends_on_the_simulated_model(
        tmp_path: Path) -> None:
    """Every real node process resolves the user's `module:Class` again (it is on their
    path through the environment) and the cluster ends on the simulator's hash."""
    (tmp_path / "lab_rules.py").write_text(RULES)
    (tmp_path / "s.yaml").write_text("""\
name: user-rule-real
seed: 3
nodes: {count: 4}
workload: {kind: mlp}
training: {rounds: 6, step_time: 0.02, aggregator: {kind: "lab_rules:CoordMedian"}}
""")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])])}
    hashes = []
    for mode in ([], ["--real"]):
        out = tmp_path / ("real" if mode else "sim")
        done = subprocess.run([sys.executable, "-m", "phalanx.apps.cli", "run",
                               str(tmp_path / "s.yaml"), *mode, "-q", "--out", str(out)],
                              capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["min_rounds_committed"] == 6
        hashes.append(summary["final_model_hash"])
    assert hashes[0] == hashes[1]
