"""Every scenario in scenarios/regressions/ is a bug found once (its header says which and how
it was fixed): each must meet its `expect:` section and every invariant the sweeps check."""

from __future__ import annotations

from pathlib import Path

import pytest

import phalanx
from phalanx.apps.invariants import check_run

REGRESSIONS = sorted((Path(__file__).resolve().parent.parent / "scenarios" / "regressions")
                     .glob("*.yaml"))


def test_there_are_regressions() -> None:
    assert REGRESSIONS


@pytest.mark.parametrize("path", REGRESSIONS, ids=[p.stem for p in REGRESSIONS])
def test_regression_stays_fixed(path: Path) -> None:
    result = phalanx.run(path)
    assert result.ok, result.failures
    assert check_run(result) == []
