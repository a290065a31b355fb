"""phalanx: decentralized, Byzantine-fault-tolerant training with one sans-IO node core.

`phalanx.run(scenario)` runs a scenario (a path or a loaded `Scenario`) in the deterministic
simulator, or over real TCP with `real=True`, and returns the result tables.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from phalanx.apps.runner import RunResult

__version__ = "0.1.0"
__all__ = ["__version__", "run"]


def run(scenario: Any, *, seed: int | None = None, out: Any = None, real: bool = False,
        progress: bool = False) -> RunResult:
    """Run a scenario and return its `RunResult` (polars tables + summary); see apps.runner."""
    from phalanx.apps.numerics import pin, requested_mode

    pin(requested_mode(os.environ, "portable"))  # the simulator's kernel paths: apps/numerics.py
    from phalanx.apps.runner import run_scenario

    return run_scenario(scenario, seed=seed, out=out, real=real, progress=progress)
