"""Which implementation of a kernel runs, and a record of every choice made.

- `triton`: compiled Triton on a CUDA device;
- `triton-interpreted`: the same Triton code run by Triton's interpreter on the CPU (slow:
  for tests of the kernels themselves);
- `reference`: the plain-torch definition.

PHALANX_KERNELS chooses: `auto` (the default) runs Triton on CUDA and the reference on the
CPU; `triton` insists on the Triton code, interpreted on the CPU (which needs
TRITON_INTERPRET=1 before triton is first imported), and is an error where it cannot run;
`reference` runs the reference everywhere (e.g. to compare numerics).
"""

from __future__ import annotations

import importlib.util
import os
from typing import Literal

import torch

Path = Literal["triton", "triton-interpreted", "reference"]

_used: dict[str, tuple[Path, str]] = {}  # kernel -> (path, why), the latest choice


class KernelUnavailable(RuntimeError):
    """PHALANX_KERNELS=triton, but Triton cannot run here."""


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def choose(kernel: str, device: torch.device) -> Path:
    """The path `kernel` takes for tensors on `device`; recorded for `report()`."""
    mode = os.environ.get("PHALANX_KERNELS", "auto") or "auto"
    if mode not in ("auto", "triton", "reference"):
        raise KernelUnavailable(f"PHALANX_KERNELS={mode!r}: expected auto, triton or reference")
    path: Path
    if mode == "reference":
        path, why = "reference", "PHALANX_KERNELS=reference"
    elif not triton_available():
        path, why = "reference", "triton is not installed"
    elif device.type == "cuda":
        path, why = "triton", f"CUDA device {torch.cuda.get_device_name(device)}"
    elif mode == "triton" and interpreted():
        path, why = "triton-interpreted", "PHALANX_KERNELS=triton, TRITON_INTERPRET=1, no GPU"
    elif mode == "triton":
        path, why = "reference", "no GPU, and TRITON_INTERPRET=1 was not set"
    else:
        path, why = "reference", f"no GPU ({device.type} tensors)"
    if mode == "triton" and path == "reference":
        raise KernelUnavailable(f"{kernel}: PHALANX_KERNELS=triton, but {why}")
    _used[kernel] = (path, why)
    return path


def report() -> dict[str, str]:
    """Every kernel used so far in this process: "path (why)"."""
    return {k: f"{path} ({why})" for k, (path, why) in sorted(_used.items())}
