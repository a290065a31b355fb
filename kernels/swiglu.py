"""The SwiGLU gate (Shazeer 2020): silu(a) * b, elementwise, fused with its backward.

a and b are the two up-projections of a SwiGLU MLP; fusing the gate saves writing silu(a) to
memory and reading it back. Arithmetic is fp32 whatever the input dtype (one rounding, at the
store); the reference does the same, so the two agree to the last bit or two.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from phalanx.kernels.dispatch import choose

BLOCK = 1024


def swiglu_reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (F.silu(a.float()) * b.float()).to(a.dtype)


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    # no broadcasting: both paths must accept exactly the same inputs
    if a.shape != b.shape or a.dtype != b.dtype:
        raise ValueError(f"swiglu needs a and b alike, got {tuple(a.shape)} {a.dtype} and "
                         f"{tuple(b.shape)} {b.dtype}")


@triton.jit
def _swiglu_fwd(a_ptr, b_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    a = tl.load(a_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    y = a * tl.sigmoid(a) * b
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _swiglu_bwd(g_ptr, a_ptr, b_ptr, da_ptr, db_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    a = tl.load(a_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    s = tl.sigmoid(a)
    # silu'(a) = s + a * s * (1 - s) = s * (1 + a * (1 - s))
    da = g * b * s * (1.0 + a * (1.0 - s))
    db = g * a * s
    tl.store(da_ptr + offs, da.to(da_ptr.dtype.element_ty), mask=mask)
    tl.store(db_ptr + offs, db.to(db_ptr.dtype.element_ty), mask=mask)


class SwiGLUFunction(torch.autograd.Function):
    """Triton silu(a) * b for a and b of one shape and dtype."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        _check(a, b)
        a, b = a.contiguous(), b.contiguous()
        y = torch.empty_like(a)
        n = a.numel()
        if n > 0:
            _swiglu_fwd[(triton.cdiv(n, BLOCK),)](a, b, y, n, BLOCK=BLOCK)
        ctx.save_for_backward(a, b)
        return y

    @staticmethod
    @once_differentiable  # no double backward: fail loudly, not with zeros
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = ctx.saved_tensors
        g = g.contiguous()
        da, db = torch.empty_like(a), torch.empty_like(b)
        n = a.numel()
        if n > 0:
            _swiglu_bwd[(triton.cdiv(n, BLOCK),)](g, a, b, da, db, n, BLOCK=BLOCK)
        return da, db


def swiglu(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """silu(a) * b; the path is chosen by dispatch."""
    _check(a, b)
    if choose("swiglu", a.device) == "reference":
        return swiglu_reference(a, b)
    return SwiGLUFunction.apply(a, b)
