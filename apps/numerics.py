"""Portable numerics: one kernel path for the libraries that compute gradients, on every machine.

Why: torch, MKL, oneDNN, OpenBLAS and numpy each pick their kernels by the CPU they run on
(torch's vectorised ops by the widest vector ISA, MKL's GEMM by vendor and ISA, OpenBLAS by core
type, numpy's ufuncs and sorts by its dispatched features), and each kernel rounds differently.
Honest nodes still agree on one model (they check each other's hashes), but the same scenario
and seed end on another hash on another machine, or under another `ATEN_CPU_CAPABILITY` or
`MKL_CBWR`: a seed found on one machine does not replay on CI's, and a simulation predicts a
real cluster only on identical CPUs. So the simulator pins every such path to one level that
every x86-64 machine with AVX2 has, whatever the environment says (an overridden setting is
reported on stderr). The libraries read these settings once, when they load or on their first
call, so the pin runs first in every entry point (`phalanx`, `python -m phalanx.apps.cli`,
`python -m phalanx.apps.node`, `phalanx.run`, the test suite), before torch or numpy load.

- `PHALANX_NUMERICS=portable` pins, `native` leaves the environment alone. Unset, the simulator's
  commands pin and a real node (`phalanx node`, `phalanx cluster`) does not; a node started by a
  pinned process (`phalanx run --real`) inherits the pin with the environment.
- MKL's only branch that computes the same on Intel and AMD is COMPATIBLE (SSE2 without the
  approximate rcpps/rsqrtps): a named branch such as AVX2 is honoured on Intel CPUs only, and
  an AMD CPU silently takes its AUTO branch. STRICT adds nothing at one thread.
- Threads change the order of reductions (ATen splits sums by thread, MKL's CNR holds for a fixed
  thread count only), so a pinned process computes on one thread.
- A machine without AVX2, or another architecture, cannot run the AVX2 path: it falls back to
  torch's default kernels (named in `summary.json` and on stderr); its hashes replay only on
  machines that fall back alike.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ENV = "PHALANX_NUMERICS"
MODES = ("portable", "native")
#: commands that pin only when asked: real nodes' gradients, and the one-machine trainer
#: (no consensus to replay; MKL's COMPATIBLE branch halves its matrix-multiply speed)
NATIVE_COMMANDS = frozenset({"node", "cluster", "train"})

# numpy's dispatched x86 features above AVX2, named as numpy >= 2.4 groups them and as before
_NPY_ABOVE_AVX2 = "X86_V4 AVX512_ICL AVX512_SPR"
_NPY_ABOVE_AVX2_OLD = ("AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL "
                       "AVX512_ICL AVX512_SPR")
# settings that would otherwise compete with the pinned ones
_UNSET = ("MKL_ENABLE_INSTRUCTIONS", "MKL_DEBUG_CPU_TYPE", "DNNL_MAX_CPU_ISA",
          "NPY_ENABLE_CPU_FEATURES")
_THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


class NumericsError(ValueError):
    """A bad `PHALANX_NUMERICS` value; the message is one line."""


@dataclass(frozen=True)
class Plan:
    """The settings a pin writes, the torch capability it expects, and why it is a fallback."""

    env: dict[str, str]
    capability: str  # what torch.backends.cpu.get_cpu_capability() must report
    fallback: str | None = None


@dataclass
class _State:
    plan: Plan | None = None
    overridden: dict[str, str] = field(default_factory=dict)
    late: bool = False  # torch was loaded before the pin: its first call may have come before
    warned: set[str] = field(default_factory=set)


_state = _State()


def plan_for(machine: str, cpu_flags: frozenset[str] | None, numpy_version: str) -> Plan:
    """The pin for this machine: AVX2 on x86-64 with AVX2 and FMA (`cpu_flags` None: unknown,
    assumed, and checked once torch loads), torch's default kernels elsewhere."""
    machine = machine.lower()
    x86 = machine in ("x86_64", "amd64")
    new_numpy = tuple(int(p) for p in numpy_version.split(".")[:2] if p.isdigit()) >= (2, 4)
    if x86 and (cpu_flags is None or {"avx2", "fma"} <= cpu_flags):
        return Plan({"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE",
                     "ONEDNN_MAX_CPU_ISA": "AVX2", "ONEDNN_DEFAULT_FPMATH_MODE": "STRICT",
                     "OPENBLAS_CORETYPE": "Haswell",
                     "NPY_DISABLE_CPU_FEATURES":
                         _NPY_ABOVE_AVX2 if new_numpy else _NPY_ABOVE_AVX2_OLD,
                     **_THREADS}, "AVX2")
    if x86:
        return Plan({"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE",
                     "ONEDNN_MAX_CPU_ISA": "SSE41", "ONEDNN_DEFAULT_FPMATH_MODE": "STRICT",
                     "OPENBLAS_CORETYPE": "Prescott",
                     "NPY_DISABLE_CPU_FEATURES": "X86_V3 " + _NPY_ABOVE_AVX2
                     if new_numpy else "AVX AVX2 FMA3 F16C " + _NPY_ABOVE_AVX2_OLD,
                     **_THREADS}, "DEFAULT",
                    "x86-64 without AVX2: torch's default kernels, MKL COMPATIBLE; hashes replay "
                    "only on machines that fall back alike")
    env = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_DEFAULT_FPMATH_MODE": "STRICT", **_THREADS}
    if machine in ("aarch64", "arm64"):
        env["OPENBLAS_CORETYPE"] = "ARMV8"
    return Plan(env, "DEFAULT",
                f"{machine or 'unknown'}: not x86-64, so torch's default kernels and numpy's own "
                "dispatch; hashes replay only on this architecture, never on x86-64")


def _cpu_flags() -> frozenset[str] | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def _numpy_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("numpy")
    except PackageNotFoundError:
        return "0"


def requested_mode(environ: Mapping[str, str], default: str) -> str:
    mode = environ.get(ENV, "").strip().lower() or default
    if mode not in MODES:
        raise NumericsError(f"{ENV} must be portable or native, got {mode[:40]!r}")
    return mode


def apply(plan: Plan, environ: MutableMapping[str, str]) -> dict[str, str]:
    """Write `plan` into `environ`; the settings it replaced or removed, with their old values."""
    changed = {k: environ[k] for k in _UNSET if k in environ}
    changed |= {k: environ[k] for k, v in plan.env.items() if environ.get(k, v) != v}
    for k in _UNSET:
        environ.pop(k, None)
    environ.update(plan.env)
    environ[ENV] = "portable"
    return changed


def pin(mode: str = "portable") -> None:
    """Pin this process's kernel paths (mode `portable`) before the libraries load; `native`
    leaves the environment as it is (a pinned parent's pin included). What the pin overrides,
    a pin after torch loaded and a fallback are each said once on stderr."""
    if mode == "native":
        return
    plan = plan_for(platform.machine(), _cpu_flags(), _numpy_version())
    late = "torch" in sys.modules and any(os.environ.get(k) != v for k, v in plan.env.items())
    changed = apply(plan, os.environ)
    _state.plan = plan
    _state.overridden |= changed
    if late:  # torch reads these on its first call, which may have come already
        _state.late = True
        _warn("late", "phalanx numerics: torch was loaded before the pin; kernels it already "
              "chose stay (pin first, or set PHALANX_NUMERICS=portable before python starts)")
    if changed:
        shown = ", ".join(f"{k}={v[:40]}" for k, v in sorted(changed.items()))
        _warn("override", f"phalanx numerics: pinned for replay, overriding {shown} "
              f"(PHALANX_NUMERICS=native keeps them)")
    if plan.fallback:
        _warn("fallback", f"phalanx numerics: fallback: {plan.fallback}")


def unpinned(environ: Mapping[str, str]) -> dict[str, str]:
    """A copy of `environ` with this process's pin undone (the settings it wrote removed, the
    ones it overrode restored) and PHALANX_NUMERICS=native: the environment for a child that
    should compute natively, e.g. the trainer launched from the pinned test suite (an inherited
    MKL_CBWR=COMPATIBLE alone halves its matrix multiplies)."""
    env = dict(environ)
    if _state.plan is not None:
        for key in _state.plan.env:
            env.pop(key, None)
        env.update(_state.overridden)
    env[ENV] = "native"
    return env


def pin_at_entry(argv: Sequence[str]) -> None:
    """An entry point's first call: the mode from PHALANX_NUMERICS, else by command (`argv[1]`;
    a real node pins only when asked). A bad value is a one-line error, exit code 2."""
    command = next((a for a in argv[1:] if not a.startswith("-")), "")
    default = "native" if command in NATIVE_COMMANDS else "portable"
    try:
        pin(requested_mode(os.environ, default))
    except NumericsError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def pinned() -> bool:
    """Whether this process computes on the pinned path (pinned here or inherited)."""
    return os.environ.get(ENV) == "portable"


def threads(requested: int | None) -> int:
    """torch's thread count for a node asked for `requested` (None: 1): one when pinned."""
    if pinned() and requested and requested > 1:
        _warn("threads", f"phalanx numerics: pinned, so 1 thread instead of {requested} "
              "(threads change the order of reductions)")
        return 1
    return requested or 1


def report() -> dict[str, Any]:
    """The numeric settings in force, checked against the loaded libraries (for summary.json);
    a pinned capability torch does not run is stated as a fallback and warned about."""
    import numpy as np
    import torch

    if _state.plan is None:  # not pinned here (a parent's pin, or none): the plan it would be
        _state.plan = plan_for(platform.machine(), _cpu_flags(), np.__version__)
    # pinned: asked for, and every setting of the plan in force (not only the mode's variable)
    portable = pinned() and all(os.environ.get(k) == v for k, v in _state.plan.env.items())
    plan = _state.plan if portable else None
    capability = torch.backends.cpu.get_cpu_capability()
    fallback = plan.fallback if plan else None
    if plan and capability != plan.capability:
        fallback = f"torch runs {capability} kernels where the pin asked {plan.capability}"
        _warn("capability", f"phalanx numerics: {fallback}")
    env = os.environ
    return {"mode": os.environ.get(ENV, "native"), "pinned": portable,
            "pinned_after_torch_loaded": _state.late, "fallback": fallback,
            "overridden": dict(sorted(_state.overridden.items())),
            "machine": platform.machine(), "cpu_capability": capability,
            "mkl_cbwr": env.get("MKL_CBWR"), "onednn_max_cpu_isa": env.get("ONEDNN_MAX_CPU_ISA"),
            "openblas_coretype": env.get("OPENBLAS_CORETYPE"),
            "numpy_simd": _numpy_simd(np), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "numpy": np.__version__}


def node_numerics(reports: Iterable[dict[str, Any] | None]) -> list[dict[str, Any]]:
    """The distinct kernel settings the nodes of a real run computed on (one entry when alike)."""
    keys = ("pinned", "cpu_capability", "mkl_cbwr", "torch_threads", "fallback")
    seen = {json.dumps({k: (r or {}).get(k) for k in keys}, sort_keys=True) for r in reports}
    return [json.loads(s) for s in sorted(seen)]


def _numpy_simd(np: Any) -> list[str]:
    """numpy's dispatched features in use (its SIMD level for ufuncs and sorts)."""
    try:
        from numpy._core import _multiarray_umath as umath
    except ImportError:  # numpy < 2
        from numpy.core import _multiarray_umath as umath  # type: ignore[no-redef]
    return [f for f in umath.__cpu_dispatch__ if umath.__cpu_features__.get(f)]


def _warn(key: str, line: str) -> None:
    if key not in _state.warned:
        _state.warned.add(key)
        print(line, file=sys.stderr)
