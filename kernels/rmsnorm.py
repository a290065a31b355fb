"""RMSNorm (Zhang & Sennrich 2019): y = x / sqrt(mean(x², -1) + eps) * weight.

The statistics and the product are taken in fp32 whatever the input dtype; the result has x's
dtype. The Triton forward runs one program per row and keeps each row's 1/rms for the backward.
The backward gives dx row by row and the weight's gradient as one fp32 partial sum per program,
added up in torch afterwards: a fixed reduction order, so the gradient is deterministic (no
atomics).
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from phalanx.kernels.dispatch import choose


def rmsnorm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x32 = x.float()
    rstd = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return (x32 * rstd * weight.float()).to(x.dtype)


@triton.jit
def _rmsnorm_fwd(x_ptr, w_ptr, y_ptr, rstd_ptr, n_cols, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)  # rows * n_cols can pass 2**31
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    # upcast at once: fp32 arithmetic everywhere (and the interpreter's bf16 arithmetic is wrong)
    x = tl.load(x_ptr + row * n_cols + cols, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x * x, axis=0) / n_cols + eps)
    tl.store(rstd_ptr + row, rstd)
    y = x * rstd * w
    tl.store(y_ptr + row * n_cols + cols, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _rmsnorm_bwd(g_ptr, x_ptr, w_ptr, rstd_ptr, dx_ptr, dw_ptr, n_rows, n_cols, rows_per_program,
                 BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    col_mask = cols < n_cols
    w = tl.load(w_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK], dtype=tl.float32)
    # a fixed trip count with the rows past the end masked off: the last program may run short
    for i in range(0, rows_per_program):
        row = pid.to(tl.int64) * rows_per_program + i
        live = row < n_rows
        # not `col_mask & live`: the interpreter turns a vector & scalar of booleans into int32
        mask = cols < tl.where(live, n_cols, 0)
        offs = row * n_cols + cols
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(rstd_ptr + row, mask=live, other=0.0)
        xhat = x * rstd
        gw = g * w
        # d/dx of x * rstd: rstd * (gw - xhat * mean(gw * xhat))
        dx = (gw - xhat * (tl.sum(gw * xhat, axis=0) / n_cols)) * rstd
        tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        dw += g * xhat
    tl.store(dw_ptr + pid.to(tl.int64) * n_cols + cols, dw, mask=col_mask)


def _block(n_cols: int) -> int:
    # at least 16 lanes: a comfortable minimum for Triton's layouts, free for tiny rows
    return max(16, triton.next_power_of_2(n_cols))


def _num_warps(block: int) -> int:
    return min(max(block // 256, 1), 8)


def _split(n_rows: int, device: torch.device) -> tuple[int, int]:
    """(rows per program, programs) for the backward: a few programs per SM on a GPU."""
    if device.type == "cuda":
        target = 4 * torch.cuda.get_device_properties(device).multi_processor_count
    else:
        target = 8  # the interpreter: a few programs, so the partial sums are exercised
    n = max(n_rows, 1)
    per_program = triton.cdiv(n, min(n, target))
    return per_program, triton.cdiv(n, per_program)


class RMSNormFunction(torch.autograd.Function):
    """Triton RMSNorm over the last dimension; any leading shape."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        n_cols = x.shape[-1]
        if weight.shape != (n_cols,):
            raise ValueError(f"weight has shape {tuple(weight.shape)}, expected ({n_cols},)")
        rows = x.reshape(-1, n_cols).contiguous()
        weight = weight.contiguous()
        n_rows = rows.shape[0]
        y = torch.empty_like(rows)
        rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
        block = _block(n_cols)
        if n_rows > 0:
            _rmsnorm_fwd[(n_rows,)](rows, weight, y, rstd, n_cols, eps, BLOCK=block,
                                    num_warps=_num_warps(block))
        ctx.save_for_backward(rows, weight, rstd)
        ctx.x_shape = x.shape
        return y.view(x.shape)

    @staticmethod
    @once_differentiable  # no double backward: fail loudly, not with zeros
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        rows, weight, rstd = ctx.saved_tensors
        n_rows, n_cols = rows.shape
        g_rows = g.reshape(-1, n_cols).contiguous()
        dx = torch.empty_like(rows)
        rows_per_program, programs = _split(n_rows, rows.device)
        partial = torch.zeros(programs, n_cols, dtype=torch.float32, device=rows.device)
        block = _block(n_cols)
        if n_rows > 0:
            _rmsnorm_bwd[(programs,)](g_rows, rows, weight, rstd, dx, partial, n_rows, n_cols,
                                      rows_per_program, BLOCK=block, num_warps=_num_warps(block))
        return dx.view(ctx.x_shape), partial.sum(0).to(weight.dtype), None


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """RMSNorm of x over its last dimension, scaled by weight; the path is chosen by dispatch."""
    if choose("rmsnorm", x.device) == "reference":
        return rmsnorm_reference(x, weight, eps)
    return RMSNormFunction.apply(x, weight, eps)
