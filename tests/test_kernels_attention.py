"""The fused attention kernels, run by Triton's interpreter on the CPU, against the torch
reference: outputs and all three gradients, over odd lengths, GQA ratios, sliding windows and
decode-style calls (queries at the end of a longer key sequence)."""

import os

os.environ["TRITON_INTERPRET"] = "1"  # before triton (and the kernels) are imported

import subprocess
import sys
import warnings

import pytest
import torch

from phalanx.kernels import dispatch
from phalanx.kernels.attention import attention, attention_reference

# If triton was imported earlier in this process (by another test module) without
# TRITON_INTERPRET, the kernels cannot be interpreted; attention() then falls back to the
# reference and records why, and assert_interpreted() fails with that reason.

TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2}


@pytest.fixture(autouse=True)
def _triton_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHALANX_KERNELS", "triton")  # the CPU default is the reference


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max|a - b| / max|b|; absolute where b is identically zero (window 1: each query sees only
    itself, so dq and dk vanish)."""
    diff, size = (a.float() - b.float()).abs().max(), b.float().abs().max()
    return (diff / size if size > 0 else diff).item()


def inputs(B: int, H: int, KVH: int, T: int, S: int, D: int,
           dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Views of (B, length, heads, D) tensors, laid out as the model makes them."""
    gen = torch.Generator().manual_seed(B * 1000 + H * 100 + T * 10 + S + D)
    leaves = [torch.randn(shape, generator=gen).to(dtype).requires_grad_()
              for shape in ((B, T, H, D), (B, S, KVH, D), (B, S, KVH, D))]
    return tuple(t.transpose(1, 2) for t in leaves)  # type: ignore[return-value]


def compare(B: int, H: int, KVH: int, T: int, S: int, D: int, window: int | None,
            dtype: torch.dtype) -> dict[str, float]:
    """Relative errors of the output and dq, dk, dv under a random upstream gradient."""
    q, k, v = inputs(B, H, KVH, T, S, D, dtype)
    out = attention(q, k, v, window)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)).to(dtype)
    grads = torch.autograd.grad(out, (q, k, v), upstream)
    ref = attention_reference(q, k, v, window)
    ref_grads = torch.autograd.grad(ref, (q, k, v), upstream)
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
    names = ("out", "dq", "dk", "dv")
    return {n: relative_error(a, b) for n, a, b in zip(names, (out, *grads), (ref, *ref_grads),
                                                        strict=True)}


def assert_interpreted() -> None:
    assert dispatch.report()["attention"].startswith("triton-interpreted"), dispatch.report()


@pytest.mark.parametrize(
    ("B", "H", "KVH", "T", "S", "D", "window", "dtype"),
    [
        (1, 2, 2, 17, 17, 16, None, torch.float32),
        (2, 4, 2, 33, 33, 32, 5, torch.float32),
        (1, 4, 1, 17, 17, 16, 1, torch.float32),
        (1, 2, 1, 1, 9, 16, None, torch.float32),  # one decoded token
        (1, 4, 2, 3, 21, 16, 5, torch.float32),  # decode: 3 queries after 18 cached keys
        (1, 4, 1, 33, 33, 16, 16, torch.float16),
        (1, 2, 1, 17, 17, 64, None, torch.float16),
        (1, 2, 2, 3, 21, 16, None, torch.float16),
        (1, 2, 1, 5, 50, 16, 5, torch.float16),  # whole key blocks outside every window
    ],
)
def test_matches_reference(B: int, H: int, KVH: int, T: int, S: int, D: int,
                           window: int | None, dtype: torch.dtype) -> None:
    errors = compare(B, H, KVH, T, S, D, window, dtype)
    assert_interpreted()
    assert max(errors.values()) < TOLERANCE[dtype], errors


def test_padded_head_dim() -> None:
    # 24 is not a power of two: zero-padded to 32, which changes no score.
    errors = compare(1, 2, 1, 17, 17, 24, 5, torch.float32)
    assert_interpreted()
    assert max(errors.values()) < TOLERANCE[torch.float32], errors


def test_backward_is_deterministic() -> None:
    q, k, v = inputs(1, 4, 1, 17, 17, 16, torch.float32)
    upstream = torch.randn(q.shape)
    first, second = (torch.autograd.grad(attention(q, k, v, 5), (q, k, v), upstream)
                     for _ in range(2))
    assert_interpreted()
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_large_head_dim_is_refused_when_triton_is_required(
        monkeypatch: pytest.MonkeyPatch) -> None:
    q, k, v = inputs(1, 1, 1, 5, 5, 192, torch.float32)
    with pytest.raises(dispatch.KernelUnavailable, match="head dim 192 > 128"):
        attention(q, k, v)
    # in the default mode the CPU runs the reference anyway, and says so
    monkeypatch.setenv("PHALANX_KERNELS", "auto")
    assert torch.equal(attention(q, k, v), attention_reference(q, k, v))
    assert dispatch.report()["attention"] == "reference (no GPU (cpu tensors))"


def test_forced_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHALANX_KERNELS", "reference")
    q, k, v = inputs(1, 2, 1, 5, 5, 16, torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a forced path is chosen, not a fallback to warn of
        out = attention(q, k, v, 3)
    assert dispatch.report()["attention"] == "reference (PHALANX_KERNELS=reference)"
    assert torch.equal(out, attention_reference(q, k, v, 3))


BF16_ON_CUDA = """
import torch
from phalanx.kernels import dispatch
from phalanx.kernels.attention import attention, attention_reference
gen = torch.Generator().manual_seed(0)
q, k, v = (torch.randn(s, generator=gen).cuda().bfloat16().requires_grad_()
           for s in ((2, 4, 33, 64), (2, 2, 33, 64), (2, 2, 33, 64)))
up = torch.randn(q.shape, generator=gen).cuda().bfloat16()
out = attention(q, k, v, 16)
assert dispatch.report()["attention"].startswith("triton (CUDA"), dispatch.report()
ref = attention_reference(q, k, v, 16)
for a, b in zip((out, *torch.autograd.grad(out, (q, k, v), up)),
                (ref, *torch.autograd.grad(ref, (q, k, v), up))):
    err = ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()
    assert err < 2e-2, err
"""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bfloat16 is tested compiled, on CUDA")
def test_bfloat16_on_cuda() -> None:
    # This process builds the kernels for the interpreter; a fresh one compiles them.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", BF16_ON_CUDA], env=env, capture_output=True,
                         text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-4000:]
