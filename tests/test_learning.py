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

from phalanx.apps.numerics import unpinned

ROOT = Path(__file__).resolve().parents[1]


def shakespeare_text() -> Path | None:
    """Where the Shakespeare test looks for nanoGPT's tiny_shakespeare.txt (1.1 MB, not shipped):
    $PHALANX_SHAKESPEARE, then data/tiny_shakespeare.txt in the repository, then a workspace
    copy beside the repository (../shared/data/)."""
    places = [os.environ.get("PHALANX_SHAKESPEARE", ""), ROOT / "data" / "tiny_shakespeare.txt",
              ROOT.parent / "shared" / "data" / "tiny_shakespeare.txt"]
    return next((Path(p) for p in places if p and Path(p).is_file()), None)


SHAKESPEARE = shakespeare_text()


def train(tmp_path: Path, *args: str) -> dict[str, object]:
    """`phalanx train` as a user runs it: in a process of its own with the trainer's native
    numerics (this test process is pinned by conftest.py, and the pin, inherited, would halve
    its speed)."""
    env = unpinned(os.environ)
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


@pytest.mark.skipif(SHAKESPEARE is None, reason="tiny_shakespeare.txt not found: set "
                    "PHALANX_SHAKESPEARE=<path> or put it at data/tiny_shakespeare.txt")
def test_shakespeare_reaches_nanogpts_published_cpu_loss(tmp_path: Path) -> None:
    s = train(tmp_path, str(ROOT / "configs" / "shakespeare_char.yaml"), "--data",
              str(SHAKESPEARE))
    reference = s["reference"]
    assert isinstance(reference, dict) and reference["val_loss"] == 1.88
    assert s["final_val_loss"] <= reference["val_loss"], s  # type: ignore[operator]
