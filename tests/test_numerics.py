"""Portable numerics (apps/numerics.py): a seed replays whatever kernel path the environment asks.

The CLI runs as subprocesses, each under another `ATEN_CPU_CAPABILITY` / `MKL_CBWR`: pinned,
every run of a scenario ends on one hash; unpinned (`PHALANX_NUMERICS=native`), the same
settings give different hashes on this machine, so the pinned check can fail.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from phalanx.apps.numerics import (
    ENV,
    NumericsError,
    _cpu_flags,
    apply,
    plan_for,
    report,
    requested_mode,
)

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
AVX2 = frozenset({"sse2", "avx", "avx2", "fma"})
# every value the issue names, each at least once, against a neutral environment
HOSTILE = [{"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AUTO"},
           {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE"},
           {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AVX2"}]
NUMERIC_VARS = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", ENV)
HERE = plan_for(platform.machine(), _cpu_flags(), "2.4")  # this machine's pin


def run_cli(args: list[str], tmp: Path, extra_env: dict[str, str]) -> dict:
    """`python -m phalanx.apps.cli run ... -q` under `extra_env` (over a neutral environment);
    its summary.json."""
    env = {k: v for k, v in os.environ.items() if k not in NUMERIC_VARS} | extra_env
    tmp.mkdir(parents=True, exist_ok=True)
    out = tmp / f"run-{len(list(tmp.iterdir()))}"
    done = subprocess.run([sys.executable, "-m", "phalanx.apps.cli", "run", *args, "--out",
                           str(out), "-q"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary: dict = json.loads((out / "summary.json").read_text())
    summary["stderr"] = done.stderr
    return summary


def shortened(name: str, tmp: Path, rounds: int) -> Path:
    """A copy of a shipped scenario cut to `rounds` rounds (its round and quality expectations
    with it: a few rounds do not train a model)."""
    data = yaml.safe_load((SCENARIOS / name).read_text())
    data["training"]["rounds"] = rounds
    data["training"]["eval_every"] = rounds
    for key in ("rounds_committed_at_least", "final_accuracy_above", "final_loss_below"):
        data.get("expect", {}).pop(key, None)
    path = tmp / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("name,rounds", [("quickstart.yaml", None), ("partition.yaml", None),
                                         ("transformer_byzantine.yaml", 8)])
def test_pinned_runs_end_on_one_hash_whatever_the_environment(tmp_path: Path, name: str,
                                                              rounds: int | None) -> None:
    path = shortened(name, tmp_path, rounds) if rounds else SCENARIOS / name
    with ThreadPoolExecutor(2) as pool:  # two processes at a time: each waits on its own
        runs = list(pool.map(lambda i_env: run_cli([str(path)], tmp_path / str(i_env[0]),
                                                   i_env[1]), enumerate([{}, *HOSTILE])))
    hashes = {r["final_model_hash"] for r in runs}
    assert len(hashes) == 1 and None not in hashes, hashes
    for summary, env in zip(runs, [{}, *HOSTILE], strict=True):
        numerics = summary["numerics"]
        assert numerics["pinned"] and numerics["cpu_capability"] == HERE.capability, numerics
        assert numerics["mkl_cbwr"] == HERE.env.get("MKL_CBWR")
        assert numerics["torch_threads"] == 1
        # a setting the pin replaced is reported, in summary.json and on stderr
        replaced = {k: v for k, v in env.items() if v != HERE.env.get(k)}
        assert numerics["overridden"] == replaced
        assert ("overriding" in summary["stderr"]) == bool(replaced)


@pytest.mark.skipif(HERE.fallback is not None, reason="measured on x86-64 with AVX2")
def test_unpinned_runs_differ_so_the_pin_is_what_holds_them(tmp_path: Path) -> None:
    """Without the pin, the same settings give this machine three quickstart hashes: the test
    above could fail."""
    short = shortened("quickstart.yaml", tmp_path, 10)  # the paths differ from the first step
    native = [run_cli([str(short)], tmp_path, {ENV: "native", **env})
              for env in [{}, {"ATEN_CPU_CAPABILITY": "default"}, {"MKL_CBWR": "COMPATIBLE"}]]
    hashes = [r["final_model_hash"] for r in native]
    assert len(set(hashes)) == 3, hashes
    assert not any(r["numerics"]["pinned"] for r in native)
    assert native[1]["numerics"]["cpu_capability"] == "DEFAULT"


def test_a_real_cluster_with_pinned_numerics_ends_on_the_simulated_hash(tmp_path: Path) -> None:
    """`phalanx run --real` pins its nodes by default: under settings that unpinned give
    another hash, the four node processes end on the pinned simulation's hash."""
    quickstart = str(SCENARIOS / "quickstart.yaml")
    sim = run_cli([quickstart], tmp_path, {})
    real = run_cli([quickstart, "--real"], tmp_path, HOSTILE[0])
    assert real["mode"] == "real-tcp" and real["distinct_final_hashes"] == 1
    assert real["final_model_hash"] == sim["final_model_hash"]
    assert real["numerics"]["pinned"] and real["numerics"]["overridden"] == HOSTILE[0]
    # each node process says what it computed on: all alike, pinned
    assert real["node_numerics"] == [{"pinned": True, "cpu_capability": HERE.capability,
                                      "mkl_cbwr": HERE.env.get("MKL_CBWR"), "torch_threads": 1,
                                      "fallback": HERE.fallback}]


def test_a_bad_mode_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, ENV: "fastest" * 20}
    done = subprocess.run([sys.executable, "-m", "phalanx.apps.cli", "validate",
                           str(SCENARIOS / "quickstart.yaml")], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()  # one line, the value cut short
    assert len(lines) == 1 and len(lines[0]) < 120, lines
    assert lines[0].startswith("error: PHALANX_NUMERICS must be portable or native, got 'fast")
    with pytest.raises(NumericsError):
        requested_mode({ENV: "avx2"}, "portable")
    assert requested_mode({}, "native") == "native"
    assert requested_mode({ENV: " Portable "}, "native") == "portable"


def test_the_plan_pins_avx2_and_names_each_fallback() -> None:
    x86 = plan_for("x86_64", AVX2, "2.4.6")
    assert x86.fallback is None and x86.capability == "AVX2"
    assert x86.env["ATEN_CPU_CAPABILITY"] == "avx2" and x86.env["MKL_CBWR"] == "COMPATIBLE"
    assert x86.env["NPY_DISABLE_CPU_FEATURES"] == "X86_V4 AVX512_ICL AVX512_SPR"
    assert "AVX512_SKX" in plan_for("x86_64", AVX2, "1.26.4").env["NPY_DISABLE_CPU_FEATURES"]
    assert plan_for("AMD64", None, "2.4.6") == x86  # flags unknown: checked once torch loads
    old = plan_for("x86_64", frozenset({"sse2", "avx"}), "2.4.6")
    assert old.capability == "DEFAULT" and "without AVX2" in (old.fallback or "")
    arm = plan_for("aarch64", frozenset({"asimd", "sve"}), "2.4.6")
    assert arm.capability == "DEFAULT" and arm.env["OPENBLAS_CORETYPE"] == "ARMV8"
    assert "aarch64: not x86-64" in (arm.fallback or "") and "MKL_CBWR" not in arm.env
    for plan in (x86, old, arm):
        assert plan.env["OMP_NUM_THREADS"] == plan.env["MKL_NUM_THREADS"] == "1"


def test_apply_overrides_and_removes_competing_settings() -> None:
    plan = plan_for("x86_64", AVX2, "2.4.6")
    environ = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT",
               "MKL_ENABLE_INSTRUCTIONS": "AVX512", "NPY_ENABLE_CPU_FEATURES": "X86_V4",
               "HOME": "/h"}
    changed = apply(plan, environ)
    assert changed == {"MKL_CBWR": "AVX2,STRICT", "MKL_ENABLE_INSTRUCTIONS": "AVX512",
                       "NPY_ENABLE_CPU_FEATURES": "X86_V4"}
    assert environ == {**plan.env, ENV: "portable", "HOME": "/h"}
    assert apply(plan, environ) == {}  # a pinned environment (a child's) needs nothing


def test_this_test_process_is_pinned_before_torch_loaded() -> None:
    """tests/conftest.py pins first, so in-process runs compute what the CLI computes."""
    numerics = report()
    assert numerics["pinned"] and not numerics["pinned_after_torch_loaded"], numerics
    assert numerics["cpu_capability"] == HERE.capability and numerics["fallback"] == HERE.fallback
    assert not any("512" in f or f == "X86_V4" for f in numerics["numpy_simd"])


def test_unpinned_undoes_the_pin_for_a_native_child() -> None:
    """A pinned process launching a native child (the trainer from this suite): the settings
    the pin wrote are gone, the one it overrode is back, everything else is kept."""
    code = ("import json, os; from phalanx.apps.numerics import pin, unpinned; pin(); "
            "print(json.dumps(unpinned(os.environ)))")
    start = {k: v for k, v in os.environ.items() if k not in HERE.env and k != ENV}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**start, "MKL_CBWR": "AVX2", "UNRELATED": "kept"}, timeout=60)
    child = json.loads(done.stdout)
    assert child[ENV] == "native" and child["UNRELATED"] == "kept"
    assert child["MKL_CBWR"] == "AVX2"  # the user's own, which the pin had overridden
    assert not (set(HERE.env) - {"MKL_CBWR"}) & set(child)


def test_a_node_pins_when_asked_and_only_then() -> None:
    """`python -m phalanx.apps.node` leaves the environment alone unless PHALANX_NUMERICS says
    portable (a node started by `phalanx run --real` inherits that from its pinned launcher)."""
    def node_help(extra: dict[str, str]) -> str:
        env = {k: v for k, v in os.environ.items() if k not in NUMERIC_VARS}
        done = subprocess.run([sys.executable, "-m", "phalanx.apps.node", "--help"],
                              env={**env, "ATEN_CPU_CAPABILITY": "default", **extra},
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stderr

    assert "overriding ATEN_CPU_CAPABILITY=default" in node_help({ENV: "portable"})
    assert node_help({}) == ""


def test_a_library_user_who_loaded_torch_first_is_told(tmp_path: Path) -> None:
    path = shortened("quickstart.yaml", tmp_path, 2)
    code = ("import torch; torch.ones(3).sum(); import phalanx; "
            f"print(phalanx.run({str(path)!r}).summary['numerics']['pinned_after_torch_loaded'])")
    env = {k: v for k, v in os.environ.items() if k not in NUMERIC_VARS}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "True"
    assert "torch was loaded before the pin" in done.stderr
