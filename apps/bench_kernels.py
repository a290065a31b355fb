"""`phalanx bench kernels`: each Triton kernel's time on CUDA, against torch eager (and, for
attention, `scaled_dot_product_attention`), as achieved TFLOP/s or GB/s beside the device's
measured peaks. Without a GPU there is nothing to measure: it says so and exits 0.

FLOPs of causal attention are counted as 4·B·H·N²·D for the forward pass, halved for the
causal mask, and 2.5 times that for the backward pass (FlashAttention's convention). SwiGLU
and RMSNorm are memory-bound: their figure is bytes moved (inputs read once, outputs written
once) per second. The peaks are measured on the spot: a large bf16 matmul for FLOP/s and a
large device-to-device copy for bandwidth.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console

from phalanx.apps.bench_report import results_table, save_report, stamp


def _ms(fn: Callable[[], object], repeats: int = 20) -> float:
    """Median milliseconds of `fn` on the current CUDA stream, after warm-up."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def peaks(device: torch.device) -> dict[str, float]:
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    tflops = 2 * n**3 / (_ms(lambda: a @ a) * 1e-3) / 1e12
    big = torch.empty(1 << 28, device=device, dtype=torch.float32)  # 1 GiB
    gbs = 2 * big.numel() * 4 / (_ms(lambda: big.clone()) * 1e-3) / 1e9
    return {"matmul_bf16_tflops": tflops, "copy_gb_per_s": gbs}


def bench_attention(device: torch.device, seq: int, dtype: torch.dtype) -> list[dict[str, Any]]:
    from phalanx.kernels.attention import attention

    b, h, d = 4, 16, 128
    q, k, v = (torch.randn(b, h, seq, d, device=device, dtype=dtype, requires_grad=True)
               for _ in range(3))
    flops_fwd = 4 * b * h * seq * seq * d / 2
    rows = []
    for name, fn in (("triton", lambda: attention(q, k, v)),
                     ("sdpa", lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))):
        fwd = _ms(fn)
        out = fn()
        grad = torch.randn_like(out)
        bwd = _ms(lambda o=out, g=grad: torch.autograd.grad(o, (q, k, v), g, retain_graph=True))
        rows.append({"kernel": "attention", "impl": name, "shape": f"B{b} H{h} N{seq} D{d}",
                     "fwd_ms": fwd, "bwd_ms": bwd,
                     "fwd_tflops": flops_fwd / (fwd * 1e-3) / 1e12,
                     "bwd_tflops": 2.5 * flops_fwd / (bwd * 1e-3) / 1e12})
    return rows


def bench_pointwise(device: torch.device, dtype: torch.dtype) -> list[dict[str, Any]]:
    from phalanx.kernels.rmsnorm import rmsnorm
    from phalanx.kernels.swiglu import swiglu

    rows_, width = 16384, 8192
    x = torch.randn(rows_, width, device=device, dtype=dtype)
    w = torch.ones(width, device=device, dtype=dtype)
    a, g = torch.randn_like(x), torch.randn_like(x)
    size = x.numel() * x.element_size()
    cases = [
        ("rmsnorm", "triton", lambda: rmsnorm(x, w), 2 * size),
        ("rmsnorm", "torch", lambda: F.rms_norm(x, (width,), w), 2 * size),
        ("swiglu", "triton", lambda: swiglu(a, g), 3 * size),
        ("swiglu", "torch", lambda: F.silu(a) * g, 3 * size),
    ]
    return [{"kernel": k, "impl": impl, "shape": f"{rows_}x{width}", "fwd_ms": (ms := _ms(fn)),
             "gb_per_s": moved / (ms * 1e-3) / 1e9} for k, impl, fn, moved in cases]


def run_bench(seq: int, out_file: Path, console: Console) -> dict[str, Any] | None:
    if not torch.cuda.is_available():
        console.print("bench kernels: no GPU here (torch sees no CUDA device): nothing to "
                      "measure. The kernels' correctness tests run on the CPU through Triton's "
                      "interpreter (tests/test_kernels_*.py).")
        return None
    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    console.print(f"bench kernels on {name} ...")
    peak = peaks(device)
    rows = bench_attention(device, seq, torch.bfloat16) + bench_pointwise(device, torch.bfloat16)
    report = {"benchmark": "kernels", **stamp(), "device": name, "torch": torch.__version__,
              "dtype": "bfloat16", "peaks": peak, "results": rows}
    save_report(report, out_file)
    console.print(f"measured peaks: {peak['matmul_bf16_tflops']:.0f} TFLOP/s (bf16 matmul), "
                  f"{peak['copy_gb_per_s']:.0f} GB/s (copy)")
    console.print(results_table(
        "attention (causal, bf16)", ("impl", "shape", "fwd ms", "fwd TFLOP/s", "bwd ms",
                                     "bwd TFLOP/s"),
        [(r["impl"], r["shape"], f"{r['fwd_ms']:.3f}", f"{r['fwd_tflops']:.0f}",
          f"{r['bwd_ms']:.3f}", f"{r['bwd_tflops']:.0f}") for r in rows
         if r["kernel"] == "attention"]))
    console.print(results_table(
        "memory-bound kernels (bf16, forward)", ("kernel", "impl", "shape", "ms", "GB/s",
                                                 "% of copy peak"),
        [(r["kernel"], r["impl"], r["shape"], f"{r['fwd_ms']:.3f}", f"{r['gb_per_s']:.0f}",
          f"{100 * r['gb_per_s'] / peak['copy_gb_per_s']:.0f}%") for r in rows
         if r["kernel"] != "attention"]))
    console.print(f"written to {out_file}")
    return report
