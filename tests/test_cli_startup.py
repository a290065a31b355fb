"""The CLI's import budget: `phalanx --help`, `validate` and a failing command load none of the
heavy libraries (torch, FastAPI, polars, matplotlib, scipy, ...), which take seconds to import;
each command imports its own heavy modules when it runs. A test of module sets, not of time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import phalanx

SCENARIOS = Path(phalanx.__file__).resolve().parent / "scenarios"

# seconds of CPU each: none of them belongs on a path that only parses options or a scenario
HEAVY = ("torch", "triton", "fastapi", "uvicorn", "polars", "matplotlib", "scipy", "sklearn",
         "simpy", "mpi4py")

# runs the CLI as its console script does, then reports its exit code and the modules it loaded
PROBE = """
import json, sys
sys.argv = ["phalanx", *json.loads(sys.argv[1])]
from phalanx.apps.cli import main
code = 0
try:
    main()
except SystemExit as exit:
    code = exit.code
print("MODULES " + json.dumps([code, sorted(sys.modules)]))
"""


def loaded_modules(*args: str, exit_code: int = 0) -> set[str]:
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(list(args))],
                          capture_output=True, text=True, timeout=120)
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("MODULES "), done.stdout + done.stderr
    code, modules = json.loads(last.removeprefix("MODULES "))
    assert code == exit_code, done.stderr  # it did what it was asked, and no more
    assert "Traceback" not in done.stderr, done.stderr
    return set(modules)


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(name for name in HEAVY if name in modules)


def test_entry_module_imports_no_command_and_no_scenario_schema() -> None:
    modules = loaded_modules("--help")
    assert heavy_in(modules) == []
    # --help builds no pydantic model and no numpy: the schema loads with the first scenario
    assert "phalanx.scenario.schema" not in modules
    assert "numpy" not in modules
    assert not {"phalanx.apps.node", "phalanx.apps.runner", "phalanx.sim.world"} & modules


@pytest.mark.parametrize(("args", "exit_code"), [
    (["validate", str(SCENARIOS / "quickstart.yaml")], 0),
    # Byzantine behaviours and a transformer workload are checked by name and parameters
    (["validate", str(SCENARIOS / "transformer_byzantine.yaml")], 0),
    (["validate", "no-such-scenario.yaml"], 2),
    (["run", "no-such-scenario.yaml"], 2),
    (["node"], 2),
    # a bad --out is refused before the command loads what does the work
    (["run", str(SCENARIOS / "quickstart.yaml"), "--out", "/proc/phalanx-test"], 2),
    (["sweep", str(SCENARIOS / "quickstart.yaml"), "--out", "/proc/phalanx-test"], 2),
    (["matrix", str(SCENARIOS / "byzantine" / "matrix.yaml"), "--out", "/proc/phalanx-test"], 2),
    (["bench", "sim", "--out", "/proc/phalanx-test/sim.json"], 2),
    (["bench", "--help"], 0),
    (["cluster", "up", "--help"], 0),
    (["--version"], 0),
], ids=lambda v: " ".join(a if "/" not in a else Path(a).name for a in v) if isinstance(
    v, list) else None)
def test_validate_help_and_error_paths_stay_light(args: list[str], exit_code: int) -> None:
    assert heavy_in(loaded_modules(*args, exit_code=exit_code)) == []
