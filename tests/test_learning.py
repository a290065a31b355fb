"""The trainer's learning claims, end to end with the shipped configs (about 1.5 min each on one
core): the synthetic corpus to within 0.10 nats of its entropy rate, and nanoGPT's CPU
Shakespeare config to its published 1.88 or lower."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tiny_shakespeare.txt"


def train(tmp_path: Path, *args: str) -> dict[str, object]:
    """`phalanx train` as a user runs it: in a process of its own with the trainer's native
    numerics (this test process is pinned by conftest.py, which would halve its speed)."""
    env = {**os.environ, "PHALANX_NUMERICS": "native"}
    done = subprocess.run([sys.executable, "-m", "phalanx.apps.cli", "train", *args, "--out",
                           str(tmp_path / "run")], capture_output=True, text=True, env=env,
                          timeout=1800)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary: dict[str, object] = json.loads((tmp_path / "run" / "summary.json").read_text())
    return summary


def test_synthetic_corpus_is_learned_to_within_a_tenth_of_a_nat_of_its_entropy_rate(
        tmp_path: Path) -> None:
    s = train(tmp_path, str(ROOT / "configs" / "synthetic.yaml"))
    assert 0.0 < s["val_minus_entropy_rate"] <= 0.10, s  # type: ignore[operator]
    assert 0.5e6 < s["parameters"] < 2e6  # type: ignore[operator]


@pytest.mark.skipif(not SHAKESPEARE.exists(), reason=f"{SHAKESPEARE} is not on this machine")
def test_shakespeare_reaches_nanogpts_published_cpu_loss(tmp_path: Path) -> None:
    s = train(tmp_path, str(ROOT / "configs" / "shakespeare_char.yaml"), "--data",
              str(SHAKESPEARE))
    reference = s["reference"]
    assert isinstance(reference, dict) and reference["val_loss"] == 1.88
    assert s["final_val_loss"] <= reference["val_loss"], s  # type: ignore[operator]
