"""Fused causal attention, FlashAttention-2 style (Dao 2023), multi-head or grouped-query, with an
optional sliding window and queries that sit at the end of a longer key sequence (decoding).

Shapes: q (B, H, T, D), k and v (B, KVH, S, D) with H % KVH == 0 and S >= T. Query row i sits at
absolute position i + S - T and sees the keys j with i + S - T - window < j <= i + S - T.

The forward pass keeps a running max and sum per query row (online softmax), never materialising
the T x S scores, and saves the row's log-sum-exp for the backward pass. The backward pass is
FA2's: delta = rowsum(dO * O); dK and dV per key block looping over query blocks; dQ per query
block looping over key blocks. No atomics, so gradients are deterministic. Query head h reads
key/value head h // (H // KVH) in place; dK and dV are computed per query head and summed over
each group in torch.

Head dims 16, 32, 64 and 128 run natively; smaller or non-power-of-two ones up to 128 are
zero-padded (which changes neither scores nor outputs), larger ones fall back to the reference
with the reason recorded in `dispatch.report()`. Loads are upcast to float32 at once (the
interpreter gets bf16 arithmetic wrong, and the softmax wants float32); the matmuls then run in
float32: full IEEE precision for float32 inputs, TF32 for float16/bfloat16 ones, which holds
their values exactly.
"""

from __future__ import annotations

import contextlib
import os
import warnings

import torch
import triton
import triton.language as tl

from phalanx.kernels import dispatch

_LOG2E = 1.4426950408889634  # the kernels work in base 2: exp2/log2 are the cheap instructions
_MAX_HEAD_DIM = 128  # 16, 32, 64, 128 run as they are; the rest up to 128 are padded
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def attention_mask(T: int, S: int, window: int | None, device: torch.device) -> torch.Tensor:
    """(T, S) booleans, True where query row i (at absolute position i + S - T) sees key j."""
    pos = torch.arange(S - T, S, device=device)[:, None]
    key = torch.arange(S, device=device)[None, :]
    allowed = key <= pos
    if window is not None:
        allowed &= pos - key < window
    return allowed


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        window: int | None = None, scale: float | None = None) -> torch.Tensor:
    """The definition: softmax(scale * q kᵀ + mask) v, computed in float32, returned in q's
    dtype."""
    T, D, S = q.shape[2], q.shape[3], k.shape[2]
    group = q.shape[1] // k.shape[1]
    scale = D ** -0.5 if scale is None else scale
    kf = k.float().repeat_interleave(group, dim=1)
    vf = v.float().repeat_interleave(group, dim=1)
    scores = torch.matmul(q.float(), kf.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~attention_mask(T, S, window, q.device), float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1), vf).to(q.dtype)


# ---- Triton kernels ---------------------------------------------------------------------------
# Strides are passed for the batch, head and sequence dims; the head dim is contiguous (the
# wrapper makes it so). WINDOW is a runtime int (S when there is none, which excludes nothing).


@triton.jit
def _fwd_kernel(Q, K, V, Out, LSE,
                sqb, sqh, sqt, skb, skh, sks, svb, svh, svs, sob, soh, sot,
                H, GROUP, T, S, WINDOW,
                SCALE_LOG2: tl.constexpr, D: tl.constexpr, PRECISION: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = pid_bh % H
    kvh = (h // GROUP).to(tl.int64)
    h = h.to(tl.int64)
    offset = S - T  # absolute position of query row 0
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    pos = offs_m + offset

    q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_d[None, :],
                mask=offs_m[:, None] < T, other=0.0).to(tl.float32)
    k_base = K + b * skb + kvh * skh
    v_base = V + b * svb + kvh * svh

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D], tl.float32)

    # Only key blocks that some row of this block may see: none above the diagonal, none wholly
    # before the window of the block's first row.
    last_pos = tl.minimum(start_m + BLOCK_M, T) - 1 + offset
    lo = tl.maximum(start_m + offset - WINDOW + 1, 0)
    lo = (lo // BLOCK_N) * BLOCK_N
    for start_n in tl.range(lo, last_pos + 1, BLOCK_N):
        keys = start_n + offs_n
        k = tl.load(k_base + keys[:, None] * sks + offs_d[None, :],
                    mask=keys[:, None] < S, other=0.0).to(tl.float32)
        v = tl.load(v_base + keys[:, None] * svs + offs_d[None, :],
                    mask=keys[:, None] < S, other=0.0).to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * SCALE_LOG2
        allowed = ((keys[None, :] <= pos[:, None]) & (pos[:, None] - keys[None, :] < WINDOW)
                   & (keys[None, :] < S))
        s = tl.where(allowed, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        # A row may see nothing in its first block (the window starts later for later rows):
        # shift by 0 there so exp2 gives 0, not exp2(-inf + inf) = nan.
        m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(s - m_shift[:, None])
        alpha = tl.exp2(m_i - m_shift)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p, v, input_precision=PRECISION)
        m_i = m_new

    # Every real row sees at least its own key, so l_i > 0 there; padding rows are not stored.
    l_safe = tl.where(l_i > 0.0, l_i, 1.0)
    out = acc / l_safe[:, None]
    tl.store(Out + b * sob + h * soh + offs_m[:, None] * sot + offs_d[None, :],
             out.to(Out.dtype.element_ty), mask=offs_m[:, None] < T)
    # Log-sum-exp of the base-2 scaled scores: the backward pass recomputes P as exp2(s - lse).
    tl.store(LSE + pid_bh.to(tl.int64) * T + offs_m, m_i + tl.log2(l_safe), mask=offs_m < T)


@triton.jit
def _bwd_delta_kernel(Out, DO, DELTA, T, D: tl.constexpr, BLOCK_M: tl.constexpr):
    # delta_i = Σ_d dO_id O_id = Σ_j P_ij dP_ij, the softmax Jacobian's row term.
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    rows = pid_bh * T * D + offs_m[:, None] * D + offs_d[None, :]
    o = tl.load(Out + rows, mask=offs_m[:, None] < T, other=0.0).to(tl.float32)
    do = tl.load(DO + rows, mask=offs_m[:, None] < T, other=0.0).to(tl.float32)
    tl.store(DELTA + pid_bh * T + offs_m, tl.sum(o * do, axis=1), mask=offs_m < T)


@triton.jit
def _bwd_dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV,
                     skb, skh, sks, svb, svh, svs,
                     H, GROUP, T, S, WINDOW,
                     SCALE: tl.constexpr, SCALE_LOG2: tl.constexpr, D: tl.constexpr,
                     PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    # Q, DO: contiguous (B, H, T, D); DK, DV: contiguous float32 (B, H, S, D), one slice per
    # query head, so no two programs write the same place.
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    kvh = (pid_bh % H // GROUP).to(tl.int64)
    bh = pid_bh.to(tl.int64)
    offset = S - T
    start_n = pid_n * BLOCK_N
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)

    k = tl.load(K + b * skb + kvh * skh + offs_n[:, None] * sks + offs_d[None, :],
                mask=offs_n[:, None] < S, other=0.0).to(tl.float32)
    v = tl.load(V + b * svb + kvh * svh + offs_n[:, None] * svs + offs_d[None, :],
                mask=offs_n[:, None] < S, other=0.0).to(tl.float32)
    dk = tl.zeros([BLOCK_N, D], tl.float32)
    dv = tl.zeros([BLOCK_N, D], tl.float32)
    q_base = Q + bh * T * D
    do_base = DO + bh * T * D

    # The query rows that see some key of this block: from the first key's own position to the
    # last key's position + WINDOW - 1, in row indices (position - offset).
    last_key = tl.minimum(start_n + BLOCK_N, S) - 1
    lo = tl.maximum(start_n - offset, 0)
    lo = (lo // BLOCK_M) * BLOCK_M
    hi = tl.minimum(last_key + WINDOW - offset, T)
    for start_m in tl.range(lo, hi, BLOCK_M):
        rows = start_m + offs_m
        pos = rows + offset
        q = tl.load(q_base + rows[:, None] * D + offs_d[None, :],
                    mask=rows[:, None] < T, other=0.0).to(tl.float32)
        do = tl.load(do_base + rows[:, None] * D + offs_d[None, :],
                     mask=rows[:, None] < T, other=0.0).to(tl.float32)
        lse = tl.load(LSE + bh * T + rows, mask=rows < T, other=0.0)
        delta = tl.load(DELTA + bh * T + rows, mask=rows < T, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * SCALE_LOG2
        allowed = ((offs_n[None, :] <= pos[:, None]) & (pos[:, None] - offs_n[None, :] < WINDOW)
                   & (rows[:, None] < T) & (offs_n[None, :] < S))
        p = tl.where(allowed, tl.exp2(s - lse[:, None]), 0.0)
        dv += tl.dot(tl.trans(p), do, input_precision=PRECISION)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dk += tl.dot(tl.trans(ds), q, input_precision=PRECISION)

    out = bh * S * D + offs_n[:, None] * D + offs_d[None, :]
    tl.store(DK + out, dk * SCALE, mask=offs_n[:, None] < S)
    tl.store(DV + out, dv, mask=offs_n[:, None] < S)


@triton.jit
def _bwd_dq_kernel(Q, K, V, DO, LSE, DELTA, DQ,
                   skb, skh, sks, svb, svh, svs,
                   H, GROUP, T, S, WINDOW,
                   SCALE: tl.constexpr, SCALE_LOG2: tl.constexpr, D: tl.constexpr,
                   PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    # Q, DO, DQ: contiguous (B, H, T, D).
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    kvh = (pid_bh % H // GROUP).to(tl.int64)
    bh = pid_bh.to(tl.int64)
    offset = S - T
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    pos = offs_m + offset
    rows = bh * T * D + offs_m[:, None] * D + offs_d[None, :]

    q = tl.load(Q + rows, mask=offs_m[:, None] < T, other=0.0).to(tl.float32)
    do = tl.load(DO + rows, mask=offs_m[:, None] < T, other=0.0).to(tl.float32)
    lse = tl.load(LSE + bh * T + offs_m, mask=offs_m < T, other=0.0)
    delta = tl.load(DELTA + bh * T + offs_m, mask=offs_m < T, other=0.0)
    k_base = K + b * skb + kvh * skh
    v_base = V + b * svb + kvh * svh
    dq = tl.zeros([BLOCK_M, D], tl.float32)

    last_pos = tl.minimum(start_m + BLOCK_M, T) - 1 + offset  # same key range as the forward
    lo = tl.maximum(start_m + offset - WINDOW + 1, 0)
    lo = (lo // BLOCK_N) * BLOCK_N
    for start_n in tl.range(lo, last_pos + 1, BLOCK_N):
        keys = start_n + offs_n
        k = tl.load(k_base + keys[:, None] * sks + offs_d[None, :],
                    mask=keys[:, None] < S, other=0.0).to(tl.float32)
        v = tl.load(v_base + keys[:, None] * svs + offs_d[None, :],
                    mask=keys[:, None] < S, other=0.0).to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * SCALE_LOG2
        allowed = ((keys[None, :] <= pos[:, None]) & (pos[:, None] - keys[None, :] < WINDOW)
                   & (keys[None, :] < S) & (offs_m[:, None] < T))
        p = tl.where(allowed, tl.exp2(s - lse[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds, k, input_precision=PRECISION)

    tl.store(DQ + rows, (dq * SCALE).to(DQ.dtype.element_ty), mask=offs_m[:, None] < T)


# Triton picks interpreter or compiler when a function is decorated: its own library functions
# (tl.zeros, tl.sum, ...) when triton is imported, these kernels when this module is. Setting or
# clearing TRITON_INTERPRET after either leaves code that cannot run on the path dispatch picks.
_BUILT_FOR_INTERPRETER = (not isinstance(_fwd_kernel, triton.runtime.JITFunction),
                          not isinstance(tl.zeros, triton.runtime.JITFunction))

# ---- launchers --------------------------------------------------------------------------------


def _blocks(D: int, backward: bool) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps). The interpreter's tl.dot needs dims >= 16, and small
    blocks keep it fast; compiled sizes are conservative defaults (not tuned on a GPU here), the
    backward's smaller because it holds more float32 tiles at once."""
    if dispatch.interpreted():
        return 16, 16, 4
    if backward:
        return (64, 64, 4) if D <= 64 else (32, 32, 4)
    return (128, 64, 8) if D <= 64 else (64, 64, 4)


def _precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


def _device(t: torch.Tensor) -> contextlib.AbstractContextManager[object]:
    # Triton launches on the current CUDA device; make it the tensors' one.
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _window_arg(window: int | None, S: int) -> int:
    return S if window is None else min(window, S)


def _forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None,
             scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    B, H, T, D = q.shape
    KVH, S = k.shape[1], k.shape[2]
    o = torch.empty_like(q)
    lse = torch.empty((B, H, T), device=q.device, dtype=torch.float32)
    block_m, block_n, warps = _blocks(D, backward=False)
    grid = (triton.cdiv(T, block_m), B * H)
    with _device(q):
        _fwd_kernel[grid](
            q, k, v, o, lse,
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2), o.stride(0), o.stride(1), o.stride(2),
            H, H // KVH, T, S, _window_arg(window, S),
            SCALE_LOG2=scale * _LOG2E, D=D, PRECISION=_precision(q.dtype),
            BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps, num_stages=2)
    return o, lse


def _backward(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              o: torch.Tensor, lse: torch.Tensor, window: int | None,
              scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    B, H, T, D = q.shape
    KVH, S = k.shape[1], k.shape[2]
    group = H // KVH
    do = do.contiguous()
    delta = torch.empty_like(lse)
    dq = torch.empty_like(q)
    # Per query head, in float32: summing a group's heads in torch afterwards is deterministic.
    dk = torch.empty((B, H, S, D), device=q.device, dtype=torch.float32)
    dv = torch.empty_like(dk)
    block_m, block_n, warps = _blocks(D, backward=True)
    common = dict(SCALE=scale, SCALE_LOG2=scale * _LOG2E, D=D, PRECISION=_precision(q.dtype),
                  BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps, num_stages=1)
    strides = (k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2))
    shape = (H, group, T, S, _window_arg(window, S))
    with _device(q):
        _bwd_delta_kernel[(triton.cdiv(T, block_m), B * H)](o, do, delta, T, D=D,
                                                             BLOCK_M=block_m)
        _bwd_dkdv_kernel[(triton.cdiv(S, block_n), B * H)](
            q, k, v, do, lse, delta, dk, dv, *strides, *shape, **common)
        _bwd_dq_kernel[(triton.cdiv(T, block_m), B * H)](
            q, k, v, do, lse, delta, dq, *strides, *shape, **common)
    dk = dk.view(B, KVH, group, S, D).sum(dim=2).to(k.dtype)
    dv = dv.view(B, KVH, group, S, D).sum(dim=2).to(v.dtype)
    return dq, dk, dv


class AttentionFunction(torch.autograd.Function):
    """The Triton forward and backward passes. Takes q, k, v contiguous, of one dtype, with a
    head dim in 16/32/64/128; `attention` sees to that."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, q: torch.Tensor, k: torch.Tensor,
                v: torch.Tensor, window: int | None, scale: float) -> torch.Tensor:
        o, lse = _forward(q, k, v, window, scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.window, ctx.scale = window, scale  # type: ignore[attr-defined]
        return o

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx,  # type: ignore[override]
                 do: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        q, k, v, o, lse = ctx.saved_tensors  # type: ignore[attr-defined]
        window, scale = ctx.window, ctx.scale  # type: ignore[attr-defined]
        dq, dk, dv = _backward(do, q, k, v, o, lse, window, scale)
        return dq, dk, dv, None, None


def _fall_back(why: str) -> None:
    """Record that attention runs the reference although Triton could run, so that
    `dispatch.report()` says so; PHALANX_KERNELS=triton makes it an error instead."""
    if os.environ.get("PHALANX_KERNELS") == "triton":
        raise dispatch.KernelUnavailable(f"attention: PHALANX_KERNELS=triton, but {why}")
    dispatch._used["attention"] = ("reference", why)  # dispatch's record, which report() reads
    warnings.warn(f"attention runs the torch reference: {why}", stacklevel=3)


def _build_mismatch(path: dispatch.Path) -> str:
    """Why the kernels as built cannot run on `path`; empty when they can."""
    want = path == "triton-interpreted"
    if all(built == want for built in _BUILT_FOR_INTERPRETER):
        return ""
    kernels, language = ("the interpreter" if b else "the compiler" for b in _BUILT_FOR_INTERPRETER)
    return (f"path {path}, but these kernels were built for {kernels} and triton.language for "
            f"{language}: TRITON_INTERPRET must be set before triton is imported")


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None) -> None:
    if q.dim() != 4 or k.dim() != 4 or k.shape != v.shape:
        raise ValueError(f"want q (B, H, T, D), k and v (B, KVH, S, D); got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    B, H, T, D = q.shape
    if k.shape[0] != B or k.shape[3] != D or H % k.shape[1] != 0 or k.shape[2] < T:
        raise ValueError(f"k/v {tuple(k.shape)} do not fit q {tuple(q.shape)}: need the same "
                         "batch and head dim, KVH dividing H, and S >= T")
    if window is not None and window < 1:
        raise ValueError(f"window must be >= 1, got {window}")


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None = None,
              scale: float | None = None) -> torch.Tensor:
    """Causal attention of q (B, H, T, D) over k, v (B, KVH, S, D), queries at the last T of the
    S positions, optionally within a sliding `window`; `scale` defaults to D^-1/2. Runs the path
    `dispatch.choose("attention", ...)` picks; differentiable either way."""
    _check(q, k, v, window)
    D = q.shape[3]
    scale = D ** -0.5 if scale is None else float(scale)
    path = dispatch.choose("attention", q.device)
    if path == "reference":
        return attention_reference(q, k, v, window, scale)
    mismatch = _build_mismatch(path)
    if mismatch:
        _fall_back(mismatch)
        return attention_reference(q, k, v, window, scale)
    if not q.dtype == k.dtype == v.dtype or q.dtype not in _DTYPES:
        _fall_back(f"dtypes {q.dtype}/{k.dtype}/{v.dtype}: the kernels take one of "
                   "float32, float16, bfloat16")
        return attention_reference(q, k, v, window, scale)
    if D > _MAX_HEAD_DIM:
        _fall_back(f"head dim {D} > {_MAX_HEAD_DIM}")
        return attention_reference(q, k, v, window, scale)
    if q.numel() == 0:  # nothing to launch; the reference handles empty shapes
        return attention_reference(q, k, v, window, scale)
    padded = max(16, 1 << (D - 1).bit_length())
    if padded != D:  # zero columns add nothing to q·k and give zero output columns
        pad = (0, padded - D)
        q, k, v = (torch.nn.functional.pad(t, pad) for t in (q, k, v))
    out = AttentionFunction.apply(q.contiguous(), k.contiguous(), v.contiguous(), window, scale)
    return out[..., :D] if padded != D else out
