"""`phalanx bench crowd` on one seed: the report holds the must-show figures, says when
crowd-kit was not compared, and a bad --crowdkit-python is one clear line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from phalanx.apps.bench_crowd import BenchError, run_bench
from phalanx.apps.cli import app

CROWDKIT_PYTHON = Path(os.environ.get("PHALANX_CROWDKIT_PYTHON", "/tmp/ckvenv/bin/python"))


def test_report_has_each_level_and_the_verdicts(tmp_path: Path) -> None:
    out = tmp_path / "crowd.json"
    report = run_bench(1, out, Console(quiet=True))
    assert json.loads(out.read_text())["verdicts"] == report["verdicts"]
    assert [r["labels_per_task"] for r in report["levels"]] == [3, 5, 15]
    assert report["verdicts"]["dawid_skene_beats_majority_vote_at_each_level"]
    assert report["verdicts"]["error_reduction_at_5_vs_mean_single_annotator_at_least_40pct"]
    assert report["crowdkit"].startswith("not compared")
    assert "posterior for the chosen label is >= 0.95" in report["high_quality_rule"]
    five = report["levels"][1]
    assert five["accuracy"]["dawid_skene"] > 0.85 > five["accuracy"]["majority_vote"]
    # adversaries drag alpha over everyone towards 0; honest annotators alone agree more
    assert abs(five["alpha"]["all"]) < 0.1 < five["alpha"]["honest"]
    run = report["runs"][1]
    assert len(run["single_annotator_error"]["by_annotator"]) == 15


def test_a_python_without_crowd_kit_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="crowd-kit failed: ModuleNotFoundError"):
        run_bench(1, tmp_path / "c.json", Console(quiet=True), Path(sys.executable))
    result = CliRunner().invoke(app, ["bench", "crowd", "--seeds", "1", "--out",
                                      str(tmp_path / "c.json"), "--crowdkit-python",
                                      str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: --crowdkit-python {tmp_path / 'missing'}: no such file"


@pytest.mark.skipif(not CROWDKIT_PYTHON.is_file(),
                    reason="no scratch venv with crowd-kit (PHALANX_CROWDKIT_PYTHON)")
def test_majority_vote_and_dawid_skene_agree_with_crowd_kit(tmp_path: Path) -> None:
    report = run_bench(1, tmp_path / "c.json", Console(quiet=True), CROWDKIT_PYTHON)
    for run in report["runs"]:
        for method in ("majority_vote", "dawid_skene"):
            assert run["crowdkit"]["accuracy"][method] == run["accuracy"][method]
        assert run["crowdkit"]["alpha_all"] == pytest.approx(run["alpha"]["all"])
