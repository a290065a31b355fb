"""The row-wise and elementwise kernels (RMSNorm, the SwiGLU gate, the MoE router), run by
Triton's interpreter on the CPU, against their torch references: outputs and gradients under
random upstream gradients, over odd sizes; bfloat16 compiled, on CUDA only."""

import os

# The kernel test modules must run with TRITON_INTERPRET=1, set before triton and the kernels
# are imported: @triton.jit reads it when it decorates (see interpreter_problem below).
os.environ["TRITON_INTERPRET"] = "1"

import subprocess
import sys

import pytest
import torch
import triton

from phalanx.kernels import dispatch
from phalanx.kernels import rmsnorm as rmsnorm_module
from phalanx.kernels import router as router_module
from phalanx.kernels import swiglu as swiglu_module


def interpreter_problem() -> str | None:
    """Why this process cannot interpret the kernels, if it cannot. @triton.jit picks the
    interpreter when it decorates, and triton decorates its own library (tl.sum, tl.sigmoid...)
    when it is imported: if anything imported triton in this process before TRITON_INTERPRET was
    set (a conftest, another test module), the kernels cannot run on CPU tensors at all, and
    reloading the kernel modules would not help."""
    modules = (triton.language, rmsnorm_module, swiglu_module, router_module)
    for module in modules:
        if any(isinstance(v, triton.runtime.JITFunction) for v in vars(module).values()):
            return (f"{module.__name__} was imported before TRITON_INTERPRET=1 was set in this "
                    "process; run the kernel tests in a process that sets it first")
    return None


TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2}


@pytest.fixture(autouse=True)
def _interpreted(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.function.__name__ != "test_bfloat16_on_cuda" and (why := interpreter_problem()):
        pytest.fail(why)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("PHALANX_KERNELS", "triton")  # the CPU default is the reference


def relative_error(a: torch.Tensor, b: torch.Tensor, scale: float = 0.0) -> float:
    """max|a - b| / max(max|b|, scale): robust where b is small everywhere."""
    diff = (a.double() - b.double()).abs().max().item()
    return diff / max(b.double().abs().max().item(), scale, 1e-30)


def assert_ran(kernel: str, path: str = "triton-interpreted") -> None:
    """The last call of `kernel` took `path`: a silent fallback to the reference fails."""
    assert dispatch.report()[kernel].startswith(f"{path} ("), dispatch.report()


def randn(*shape: int, dtype: torch.dtype, seed: int, grad: bool = True) -> torch.Tensor:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)
    return x.requires_grad_(grad)


def test_interpreter_is_on() -> None:
    assert dispatch.interpreted()
    for kernel in ("rmsnorm", "swiglu", "moe_router"):
        assert dispatch.choose(kernel, torch.device("cpu")) == "triton-interpreted"
        assert_ran(kernel)


# ---- RMSNorm -------------------------------------------------------------------------------


def rmsnorm_errors(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> dict[str, float]:
    x = randn(*shape, dtype=dtype, seed=seed)
    w = randn(shape[-1], dtype=dtype, seed=seed + 1)
    g = randn(*shape, dtype=dtype, seed=seed + 2, grad=False)
    y = rmsnorm_module.rmsnorm(x, w)
    assert_ran("rmsnorm")
    dx, dw = torch.autograd.grad(y, (x, w), g)
    ref = rmsnorm_module.rmsnorm_reference(x, w, 1e-5)
    ref_dx, ref_dw = torch.autograd.grad(ref, (x, w), g)
    assert (y.dtype, dx.dtype, dw.dtype) == (dtype, dtype, dtype)
    # dx is a difference of terms of size |g w| rstd; at hidden size 1 they cancel down to ~eps
    # in both implementations, so its error is measured against the terms
    x32 = x.detach().float()
    rstd = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-5)
    terms = (g.float() * w.detach().float() * rstd).abs().max().item()
    return {"y": relative_error(y, ref), "dx": relative_error(dx, ref_dx, terms),
            "dw": relative_error(dw, ref_dw)}


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [
        ((1, 1), torch.float32),
        ((3, 7), torch.float32),
        ((17, 33), torch.float32),
        ((2, 3, 100), torch.float32),  # leading dimensions flatten to rows
        ((3, 257), torch.float32),
        ((17, 1), torch.float32),
        ((1, 257), torch.float16),
        ((17, 33), torch.float16),
        ((3, 100), torch.float16),
    ],
)
def test_rmsnorm_matches_reference(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    errors = rmsnorm_errors(shape, dtype, seed=sum(shape))
    assert max(errors.values()) < TOLERANCE[dtype], errors


def test_rmsnorm_weight_gradient_is_deterministic() -> None:
    x = randn(17, 33, dtype=torch.float32, seed=3)
    w = randn(33, dtype=torch.float32, seed=4)
    g = randn(17, 33, dtype=torch.float32, seed=5, grad=False)
    first, second = (torch.autograd.grad(rmsnorm_module.rmsnorm(x, w), w, g)[0]
                     for _ in range(2))
    assert torch.equal(first, second)


def test_rmsnorm_rejects_a_wrong_weight() -> None:
    with pytest.raises(ValueError, match="weight"):
        rmsnorm_module.rmsnorm(torch.ones(2, 4), torch.ones(5))


# ---- SwiGLU --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [
        ((1,), torch.float32),
        ((7,), torch.float32),
        ((3, 33), torch.float32),
        ((17, 100), torch.float32),
        ((2, 3, 257), torch.float32),  # several blocks and a ragged last one
        ((17, 33), torch.float16),
        ((3, 257), torch.float16),
    ],
)
def test_swiglu_matches_reference(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    seed = sum(shape)
    a, b = randn(*shape, dtype=dtype, seed=seed), randn(*shape, dtype=dtype, seed=seed + 1)
    g = randn(*shape, dtype=dtype, seed=seed + 2, grad=False)
    y = swiglu_module.swiglu(a, b)
    assert_ran("swiglu")
    grads = torch.autograd.grad(y, (a, b), g)
    ref = swiglu_module.swiglu_reference(a, b)
    ref_grads = torch.autograd.grad(ref, (a, b), g)
    assert y.dtype == dtype and all(d.dtype == dtype for d in grads)
    errors = {n: relative_error(u, v) for n, u, v in
              zip(("y", "da", "db"), (y, *grads), (ref, *ref_grads), strict=True)}
    assert max(errors.values()) < TOLERANCE[dtype], errors


def test_swiglu_refuses_double_backward() -> None:
    a, b = randn(7, dtype=torch.float32, seed=1), randn(7, dtype=torch.float32, seed=2)
    (da,) = torch.autograd.grad(swiglu_module.swiglu(a, b).sum(), a, create_graph=True)
    with pytest.raises(RuntimeError, match=r"once_differentiable|does not require grad"):
        torch.autograd.grad(da.sum(), a)


def test_swiglu_rejects_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="alike"):
        swiglu_module.swiglu(torch.ones(3, 4), torch.ones(4))


# ---- MoE router ----------------------------------------------------------------------------


def router_cases() -> list[tuple[int, int, int]]:
    return sorted({(n, e, k) for n in (1, 5, 33) for e in (1, 3, 4, 8) for k in (1, 2, e)
                   if k <= e})


def check_routing(out: "router_module.RouterOutput", ref: "router_module.RouterOutput",
                  n: int, e: int, k: int) -> None:
    assert torch.equal(out.experts, ref.experts)
    assert relative_error(out.weights, ref.weights) < 1e-5
    assert relative_error(out.probs, ref.probs) < 1e-5
    assert relative_error(out.mean_probs, ref.mean_probs) < 1e-5
    assert torch.equal(out.counts, ref.counts) and int(out.counts.sum()) == n * k
    assert torch.allclose(out.weights.sum(-1), torch.ones(n), atol=1e-6)
    assert all(len(set(row)) == k for row in out.experts.tolist())
    assert out.experts.dtype == torch.int64 and out.counts.dtype == torch.int64
    assert out.probs.shape == (n, e) and out.weights.shape == (n, k)


def router_grads(out: "router_module.RouterOutput", logits: torch.Tensor,
                 upstream: tuple[torch.Tensor, ...]) -> torch.Tensor:
    g_probs, g_weights, g_mean = upstream
    loss = ((out.probs * g_probs).sum() + (out.weights * g_weights).sum()
            + (out.mean_probs * g_mean).sum())
    return torch.autograd.grad(loss, logits)[0]


@pytest.mark.parametrize(("n", "e", "k"), [*router_cases(), (130, 8, 2)])  # 130: 3 programs
def test_router_matches_reference(n: int, e: int, k: int) -> None:
    seed = 100 * n + 10 * e + k
    logits = randn(n, e, dtype=torch.float32, seed=seed)
    out = router_module.route_topk(logits, k)
    assert_ran("moe_router")
    ref = router_module.router_reference(logits, k)
    check_routing(out, ref, n, e, k)
    # without ties, the selection is torch.topk's (of the probabilities, as engine.model.moe)
    assert torch.equal(out.experts, ref.probs.topk(k, dim=-1).indices)
    upstream = (randn(n, e, dtype=torch.float32, seed=seed + 1, grad=False),
                randn(n, k, dtype=torch.float32, seed=seed + 2, grad=False),
                randn(e, dtype=torch.float32, seed=seed + 3, grad=False))
    grad = router_grads(out, logits, upstream)
    assert relative_error(grad, router_grads(ref, logits, upstream)) < TOLERANCE[torch.float32]


def test_router_float16_logits() -> None:
    logits = randn(33, 8, dtype=torch.float16, seed=9)
    out = router_module.route_topk(logits, 2)
    assert_ran("moe_router")
    check_routing(out, router_module.router_reference(logits, 2), 33, 8, 2)
    g = randn(33, 2, dtype=torch.float32, seed=10, grad=False)
    grad = torch.autograd.grad((out.weights * g).sum(), logits)[0]
    ref = torch.autograd.grad((router_module.router_reference(logits, 2).weights * g).sum(),
                              logits)[0]
    assert grad.dtype == torch.float16
    assert relative_error(grad, ref) < TOLERANCE[torch.float16]


def test_router_ties_go_to_the_lower_expert() -> None:
    # torch.topk on the CPU would pick 6 and 5 of eight equal logits
    logits = torch.tensor([[0.0] * 8, [1.0, 2.0, 2.0, 0.0, 2.0, 0.0, 2.0, 0.0],
                           [float("-inf")] * 7 + [0.0]])
    out = router_module.route_topk(logits, 3)
    assert_ran("moe_router")
    assert out.experts.tolist() == [[0, 1, 2], [1, 2, 4], [7, 0, 1]]
    check_routing(out, router_module.router_reference(logits, 3), 3, 8, 3)


def test_router_rejects_bad_k() -> None:
    for k in (0, 5):
        with pytest.raises(ValueError, match="k="):
            router_module.route_topk(torch.zeros(3, 4), k)


# ---- the forced reference path -------------------------------------------------------------


def test_forced_reference_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    x, w = randn(5, 33, dtype=torch.float32, seed=1), randn(33, dtype=torch.float32, seed=2)
    a, b = randn(5, 33, dtype=torch.float32, seed=3), randn(5, 33, dtype=torch.float32, seed=4)
    logits = randn(5, 8, dtype=torch.float32, seed=5)
    results = {}
    for path in ("triton-interpreted", "reference"):
        if path == "reference":
            monkeypatch.setenv("PHALANX_KERNELS", "reference")
            for kernel in ("rmsnorm", "swiglu", "moe_router"):
                assert dispatch.choose(kernel, x.device) == "reference"
        results[path] = (rmsnorm_module.rmsnorm(x, w), swiglu_module.swiglu(a, b),
                         router_module.route_topk(logits, 2))
        for kernel in ("rmsnorm", "swiglu", "moe_router"):
            assert_ran(kernel, path)
    assert dispatch.report()["rmsnorm"] == "reference (PHALANX_KERNELS=reference)"
    (y, s, r), (ref_y, ref_s, ref_r) = results["triton-interpreted"], results["reference"]
    assert relative_error(y, ref_y) < 1e-5 and relative_error(s, ref_s) < 1e-5
    check_routing(r, ref_r, 5, 8, 2)


# ---- bfloat16, compiled on CUDA ------------------------------------------------------------

BF16_ON_CUDA = """
import torch
from phalanx.kernels import dispatch
from phalanx.kernels.rmsnorm import rmsnorm, rmsnorm_reference
from phalanx.kernels.router import route_topk, router_reference
from phalanx.kernels.swiglu import swiglu, swiglu_reference

gen = torch.Generator().manual_seed(0)
def randn(*shape, dtype=torch.bfloat16, grad=True):
    return torch.randn(shape, generator=gen).cuda().to(dtype).requires_grad_(grad)
def err(a, b):
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()
def check(kernel, fn, ref, inputs, tol):
    out = fn(*inputs)
    assert dispatch.report()[kernel].startswith("triton (CUDA"), dispatch.report()
    up = torch.randn(out.shape, generator=gen).cuda().to(out.dtype)
    expected = ref(*inputs)
    got = (out, *torch.autograd.grad(out, inputs, up))
    want = (expected, *torch.autograd.grad(expected, inputs, up))
    for a, b in zip(got, want):
        assert err(a, b) < tol, (kernel, err(a, b))

for dtype, tol in ((torch.bfloat16, 2e-2), (torch.float32, 1e-4)):
    for rows, hidden in ((1, 7), (17, 33), (1000, 4096)):
        x, w = randn(rows, hidden, dtype=dtype), randn(hidden, dtype=dtype)
        check("rmsnorm", rmsnorm, lambda x, w: rmsnorm_reference(x, w, 1e-5), (x, w), tol)
    for shape in ((7,), (1000, 3000)):
        check("swiglu", swiglu, swiglu_reference, (randn(*shape, dtype=dtype),
              randn(*shape, dtype=dtype)), tol)
    for n, e, k in ((1, 1, 1), (5000, 8, 2), (300, 64, 8)):
        logits = randn(n, e, dtype=dtype)
        out, ref = route_topk(logits, k), router_reference(logits, k)
        assert dispatch.report()["moe_router"].startswith("triton (CUDA"), dispatch.report()
        assert torch.equal(out.experts, ref.experts) and torch.equal(out.counts, ref.counts)
        for a, b in ((out.probs, ref.probs), (out.weights, ref.weights),
                     (out.mean_probs, ref.mean_probs)):
            assert err(a, b) < 1e-5, err(a, b)
"""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bfloat16 is tested compiled, on CUDA")
def test_bfloat16_on_cuda() -> None:
    # This process builds the kernels for the interpreter; a fresh one compiles them.
    env = {k: v for k, v in os.environ.items()
           if k not in ("TRITON_INTERPRET", "PHALANX_KERNELS")}
    run = subprocess.run([sys.executable, "-c", BF16_ON_CUDA], env=env, capture_output=True,
                         text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-4000:]
