"""Gradient compression: round trips, payload sizes, error feedback, hostile payloads, the
registry and the adaptive ratio (phalanx.engine.compress)."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from phalanx.engine.compress import (
    COMPRESSORS,
    AdaptiveRatio,
    CompressError,
    Compressor,
    Encoded,
    ErrorFeedback,
    NetworkConditions,
    make_compressor,
)
from phalanx.engine.compress.powersgd import matrix_shape
from phalanx.engine.compress.sparsify import pack_gaps, unpack_gaps

PARAMS: dict[str, dict[str, Any]] = {
    "topk": {"ratio": 0.1},
    "randomk": {"ratio": 0.1},
    "threshold": {"threshold": 1.0},
    "int8": {"chunk": 16},
}
NAMES = sorted(COMPRESSORS)
SPARSE = ["topk", "randomk", "threshold"]
SIZES = [1, 7, 1000, 4097]


def comp(name: str, **params: Any) -> Compressor:
    return make_compressor(name, **{**PARAMS.get(name, {}), **params})


def vec(size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(size).astype(np.float32)


def round_trip(name: str, x: np.ndarray, seed: int = 1, **params: Any
               ) -> tuple[Encoded, np.ndarray]:
    c = comp(name, **params)
    enc = c.encode(x, np.random.default_rng(seed))
    return enc, c.decode(enc)


def test_registry_holds_every_method() -> None:
    assert set(NAMES) == {
        "none", "topk", "randomk", "threshold", "fp16", "bf16", "int8", "sign", "powersgd"
    }
    assert {n for n in NAMES if COMPRESSORS[n].biased} == set(NAMES) - {"none", "randomk"}


# ---- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", NAMES)
def test_decode_is_a_fresh_float32_vector_and_encode_is_deterministic(name: str, size: int) -> None:
    x = vec(size)
    enc, y = round_trip(name, x)
    assert enc.method == name and enc.size == size
    assert y.dtype == np.float32 and y.shape == (size,) and np.isfinite(y).all()
    assert not any(np.shares_memory(y, p) for p in enc.parts)
    assert not any(np.shares_memory(x, p) for p in enc.parts)
    again, _ = round_trip(name, x.copy())  # a fresh instance with the same seed
    assert [p.tobytes() for p in again.parts] == [p.tobytes() for p in enc.parts]


@pytest.mark.parametrize("size", SIZES)
def test_casts_are_close(size: int) -> None:
    x = vec(size) * np.float32(100)
    assert np.array_equal(round_trip("none", x)[1], x)
    assert np.array_equal(round_trip("fp16", x)[1], x.astype(np.float16).astype(np.float32))
    y = round_trip("bf16", x)[1]
    assert (np.abs(y - x) <= np.abs(x) * 2.0**-8).all()
    # Bit for bit torch's round-to-nearest-even bfloat16.
    reference = torch.from_numpy(x).to(torch.bfloat16).to(torch.float32).numpy()
    assert np.array_equal(y, reference)


def test_casts_saturate_instead_of_overflowing() -> None:
    big = np.array([1e5, -1e5, 3.4e38, -np.finfo(np.float32).max], np.float32)
    assert np.array_equal(round_trip("fp16", big)[1][:2], [65504, -65504])
    y = round_trip("bf16", big)[1]
    assert np.isfinite(y).all() and np.array_equal(np.sign(y), np.sign(big))


@pytest.mark.parametrize("size", SIZES)
def test_int8_is_within_half_a_step(size: int) -> None:
    x = vec(size)
    x[: min(size, 16)] = 0  # a chunk of zeros has scale 0 and decodes to zeros
    enc, y = round_trip("int8", x)
    q, scales = enc.parts
    assert q.dtype == np.int8 and q.min() >= -127 and scales.shape == (-(-size // 16),)
    step = np.repeat(scales, 16)[:size].astype(np.float64)
    assert (np.abs(y.astype(np.float64) - x) <= step / 2 * (1 + 1e-5) + 1e-30).all()
    assert not y[: min(size, 16)].any()


def kept_of(enc: Encoded) -> np.ndarray:
    """The indices a sparse payload names."""
    width, packed, values = enc.parts
    return unpack_gaps(int(width[0]), packed, values.size, enc.size)


@pytest.mark.parametrize("size", SIZES)
def test_topk_keeps_exactly_the_k_largest(size: int) -> None:
    x = vec(size)
    enc, y = round_trip("topk", x)
    k = max(1, int(0.1 * size))
    kept = np.sort(np.argsort(-np.abs(x))[:k])
    assert np.array_equal(kept_of(enc), kept) and enc.parts[1].dtype == np.uint8
    assert np.array_equal(y[kept], x[kept])
    assert not np.delete(y, kept).any()


def test_topk_breaks_ties_by_lower_index() -> None:
    x = np.array([1, -2, 2, 1, -2, 2, 1], np.float32)
    assert list(kept_of(round_trip("topk", x, ratio=0.3)[0])) == [1, 2]  # k = 2 of four 2s
    assert list(kept_of(round_trip("topk", np.ones(10, np.float32), ratio=0.3)[0])) == [0, 1, 2]


@pytest.mark.parametrize("size", SIZES)
def test_threshold_keeps_exactly_the_large_entries(size: int) -> None:
    x = vec(size)
    enc, y = round_trip("threshold", x)
    assert np.array_equal(y, np.where(np.abs(x) >= 1.0, x, 0))
    assert enc.parts[2].size == np.count_nonzero(np.abs(x) >= 1.0)
    empty, zero = round_trip("threshold", x, threshold=1e9)
    assert empty.parts[2].size == 0 and not zero.any()


def test_randomk_is_unbiased() -> None:
    x, c, draws = vec(20), comp("randomk", ratio=0.25), 4000
    rng = np.random.default_rng(7)
    decoded = np.stack([c.decode(c.encode(x, rng)) for _ in range(draws)])
    assert ((decoded != 0).sum(axis=1) == 5).all()
    assert np.allclose(decoded[decoded != 0] / np.broadcast_to(x, decoded.shape)[decoded != 0], 4)
    # Each entry's estimator has standard deviation |x_i| sqrt(size/k - 1) / sqrt(draws).
    tolerance = 5 * np.abs(x) * np.sqrt(3 / draws)
    assert (np.abs(decoded.mean(axis=0) - x) <= tolerance).all()


@pytest.mark.parametrize("size", SIZES)
def test_sign_is_scale_times_sign(size: int) -> None:
    x = vec(size)
    x[0] = 0  # zero counts as positive
    enc, y = round_trip("sign", x)
    scale = np.float32(np.abs(x).mean(dtype=np.float64))
    assert np.array_equal(y, np.where(x >= 0, scale, -scale))
    assert enc.parts[0].dtype == np.uint8 and enc.parts[1].shape == (1,)


def _matrix(spectrum: list[float], rows: int, cols: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((rows, len(spectrum))))
    v, _ = np.linalg.qr(rng.standard_normal((cols, len(spectrum))))
    return ((u * spectrum) @ v.T).astype(np.float32)


def test_powersgd_is_exact_on_a_rank_one_matrix() -> None:
    m = _matrix([3.0], 32, 32)
    c, rng = comp("powersgd"), np.random.default_rng(0)
    for _ in range(2):  # the first step and a warm-started one
        y = c.decode(c.encode(m.ravel(), rng))
        assert np.allclose(y, m.ravel(), atol=1e-5 * np.abs(m).max())


def test_powersgd_warm_start_lowers_the_error_to_the_optimum() -> None:
    spectrum = [10.0, 5.0, 2.0, 1.0, 0.5, 0.2]
    rows, cols = matrix_shape(40 * 40)
    x = _matrix(spectrum, rows, cols).ravel()
    c, rng = comp("powersgd", rank=2), np.random.default_rng(3)
    errors = [np.linalg.norm(c.decode(c.encode(x, rng)) - x) for _ in range(8)]
    optimum = np.sqrt(sum(s * s for s in spectrum[2:]))
    assert all(b <= a * (1 + 1e-4) for a, b in itertools.pairwise(errors))
    assert errors[0] > errors[-1] and errors[-1] <= optimum * 1.01
    c.reset()  # a reset forgets the subspace: the error is back to a cold start's
    assert np.linalg.norm(c.decode(c.encode(x, np.random.default_rng(3))) - x) == errors[0]


def test_powersgd_pads_and_clamps_the_rank() -> None:
    assert [matrix_shape(n) for n in (1, 2, 4, 5, 4097)] == [(1, 1), (2, 1), (2, 2), (3, 2),
                                                             (65, 64)]
    enc, y = round_trip("powersgd", vec(2), rank=4)
    assert [p.shape for p in enc.parts] == [(2, 1), (1, 1)]
    assert np.allclose(y, vec(2), atol=1e-6)  # rank 1 of a 2x1 matrix is the matrix


# ---- payload sizes ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_ratio_matches_the_payload(name: str) -> None:
    for size in SIZES:
        enc, _ = round_trip(name, vec(size))
        if name in SPARSE:  # positions' bits are data-dependent; ratio() is the worst case
            assert comp(name).ratio(size) <= 4 * size / max(enc.nbytes(), 1)
        else:
            assert comp(name).ratio(size) == pytest.approx(4 * size / enc.nbytes())


def test_payloads_are_smaller_than_dense() -> None:
    size = 4097
    x, dense = vec(size), 4 * size
    assert round_trip("topk", x)[0].nbytes() <= 0.2 * dense
    assert round_trip("sign", x)[0].nbytes() <= dense / 32 + 8
    assert round_trip("int8", x, chunk=256)[0].nbytes() <= dense / 4 * 1.02
    assert round_trip("fp16", x)[0].nbytes() == dense / 2
    assert round_trip("powersgd", x)[0].nbytes() <= dense / 15  # rank 2 of 65 x 64


# ---- error feedback ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_error_feedback_loses_nothing(name: str) -> None:
    c = comp(name)
    ef, rng = ErrorFeedback(c), np.random.default_rng(0)
    sent, received, scale = np.zeros(300), np.zeros(300), 1.0
    for step in range(12):
        x = vec(300, seed=step)
        received += c.decode(ef.encode(x, rng))
        sent += x
        assert ef.residual is not None and ef.residual.dtype == np.float32
        scale = max(scale, float(np.abs(ef.residual).max()), float(np.abs(received).max()))
        np.testing.assert_allclose(sent, received + ef.residual, rtol=0, atol=1e-5 * scale)
    if name == "none":
        assert not ef.residual.any()


def test_topk_residual_is_exactly_what_was_dropped() -> None:
    c = comp("topk")
    ef, rng = ErrorFeedback(c), np.random.default_rng(0)
    carried = np.zeros(500, np.float32)
    for step in range(5):
        target = vec(500, seed=step) + carried
        enc = ef.encode(vec(500, seed=step), rng)
        kept = kept_of(enc)
        assert ef.residual is not None
        assert not ef.residual[kept].any()
        assert np.array_equal(np.delete(ef.residual, kept), np.delete(target, kept))
        assert (np.abs(ef.residual) <= np.abs(target)).all()
        carried = ef.residual


@pytest.mark.parametrize("x", [np.ones(50, np.float32),
                               np.linspace(0.01, 1, 50, dtype=np.float32)[::-1].copy()])
def test_topk_with_error_feedback_starves_no_coordinate(x: np.ndarray) -> None:
    c, k = comp("topk", ratio=0.1), 5
    ef, rng = ErrorFeedback(c), np.random.default_rng(0)
    # Each round sends k entries of the largest residuals, so a residual tops out near
    # level = sum(x) / k and entry i goes out about every level / x_i rounds.
    level = float(x.sum()) / k
    seen = np.zeros(x.size, bool)
    for _ in range(int(2 * level / x.min()) + 1):
        seen |= c.decode(ef.encode(x, rng)) != 0
        assert ef.residual is not None and np.abs(ef.residual).max() <= level + x.max()
    assert seen.all()


def test_leaky_feedback_shrinks_the_residual_by_its_decay() -> None:
    c, rng = comp("topk", ratio=0.1), np.random.default_rng(0)
    leaky, full = ErrorFeedback(c, decay=0.5), ErrorFeedback(c)
    x = vec(100)
    for ef in (leaky, full):
        ef.encode(x, rng)
    kept = np.flatnonzero(c.decode(full.encode(vec(100, seed=1), rng)))
    target = vec(100, seed=1) + np.float32(0.5) * leaky.residual  # type: ignore[operator]
    assert np.array_equal(c.decode(leaky.encode(vec(100, seed=1), rng)),
                          c.decode(c.encode(target, rng)))
    assert kept.size == 10
    silent = ErrorFeedback(c, decay=0.0)  # no memory: plain top-k
    silent.encode(x, rng)
    assert np.array_equal(c.decode(silent.encode(x, rng)), c.decode(c.encode(x, rng)))
    for bad in (-0.1, 1.5, "0.5"):
        with pytest.raises(ValueError, match="decay"):
            ErrorFeedback(c, decay=bad)  # type: ignore[arg-type]


def test_error_feedback_checks_its_inputs() -> None:
    ef = ErrorFeedback(comp("topk"))
    with pytest.raises(ValueError, match="wraps a Compressor"):
        ErrorFeedback("topk")
    ef.encode(vec(10), np.random.default_rng(0))
    with pytest.raises(ValueError, match="reset"):
        ef.encode(vec(11), np.random.default_rng(0))
    ef.reset()
    assert ef.residual is None
    ef.encode(vec(11), np.random.default_rng(0))


# ---- encode's input and the registry ----------------------------------------------------------


@pytest.mark.parametrize("bad", [
    np.zeros((2, 2), np.float32), np.arange(3), np.zeros(0, np.float32),
    np.array([1, np.nan], np.float32), np.array([np.inf], np.float64), np.zeros(101, np.float32),
])
def test_encode_refuses_bad_input(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="topk: "):
        comp("topk", max_size=100).encode(bad, np.random.default_rng(0))


def test_encode_refuses_to_overflow() -> None:
    x = np.full(10, 3e38, np.float32)  # randomk scales by size/k = 10
    with pytest.raises(ValueError, match="overflows float32"):
        comp("randomk").encode(x, np.random.default_rng(0))


@pytest.mark.parametrize(("name", "params", "match"), [
    ("zip", {}, r"unknown compressor 'zip'; choose one of: bf16, fp16, int8, none, powersgd"),
    ("topk", {"k": 3}, r"topk has no parameter 'k'; its parameters: ratio, max_size"),
    ("topk", {}, r"topk needs the parameter 'ratio'"),
    ("topk", {"ratio": 0}, r"topk: ratio must be a finite number in \(0, 1\]; got 0"),
    ("randomk", {"ratio": 1.5}, r"randomk: ratio"),
    ("topk", {"ratio": float("nan")}, r"ratio"),
    ("topk", {"ratio": True}, r"ratio"),
    ("topk", {"ratio": "0.1"}, r"ratio"),
    ("threshold", {"threshold": -1.0}, r"threshold: threshold"),
    ("threshold", {"threshold": float("inf")}, r"threshold: threshold"),
    ("int8", {"chunk": 0}, r"int8: chunk must be an integer >= 1; got 0"),
    ("int8", {"chunk": 2.5}, r"int8: chunk"),
    ("powersgd", {"rank": 0}, r"powersgd: rank"),
    ("none", {"max_size": 0}, r"none: max_size"),
    ("sign", {"max_size": 2**33}, r"sign: max_size"),
])
def test_make_compressor_names_the_problem(name: str, params: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        make_compressor(name, **params)
    assert "\n" not in str(info.value)


def test_compress_error_is_a_value_error_with_a_reason() -> None:
    err = CompressError("bad_size", "0")
    assert isinstance(err, ValueError) and err.reason == "bad_size" and str(err) == "bad_size: 0"
    assert Encoded("none", 2, (np.zeros(2, np.float32), np.zeros(3, np.uint8))).nbytes() == 11


# ---- hostile payloads -------------------------------------------------------------------------

def at(*idx: int) -> tuple[np.ndarray, np.ndarray]:
    """(width, packed gaps) naming these ascending indices."""
    return pack_gaps(np.array(idx, np.int64))


def u8(*v: int) -> np.ndarray:
    return np.array(v, np.uint8)


def f32(*v: float) -> np.ndarray:
    return np.array(v, np.float32)


NAN, INF = float("nan"), float("inf")

ENVELOPE_CASES: list[tuple[str, Any, str]] = [
    ("wrong method", lambda name: Encoded("gzip", 4, ()), "wrong_method"),
    ("size 0", lambda name: Encoded(name, 0, ()), "bad_size"),
    ("negative size", lambda name: Encoded(name, -3, ()), "bad_size"),
    ("float size", lambda name: Encoded(name, 2.0, ()), "bad_size"),
    ("bool size", lambda name: Encoded(name, True, ()), "bad_size"),
    ("size 10**12", lambda name: Encoded(name, 10**12, ()), "too_large"),
    ("size 10**5000", lambda name: Encoded(name, 10**5000, ()), "too_large"),
    ("size -10**5000", lambda name: Encoded(name, -(10**5000), ()), "bad_size"),
    ("no parts", lambda name: Encoded(name, 4, ()), "wrong_parts"),
    ("parts as list", lambda name: Encoded(name, 4, [f32(1)] * 2), "wrong_parts"),
    ("too many parts", lambda name: Encoded(name, 4, (f32(1),) * 4), "wrong_parts"),
    ("not an Encoded", lambda name: (name, 4, ()), "not_encoded"),
]


@pytest.mark.parametrize(("case", "build", "reason"), ENVELOPE_CASES)
@pytest.mark.parametrize("name", NAMES)
def test_decode_refuses_bad_envelopes(name: str, case: str, build: Any, reason: str) -> None:
    with pytest.raises(CompressError) as info:
        comp(name).decode(build(name))
    assert info.value.reason == reason, case


BODY_CASES: list[tuple[str, int, tuple[np.ndarray, ...], str]] = [
    *[(f"{m}: {what}", 20, parts, reason) for m in SPARSE for what, parts, reason in [
        ("index out of range", (*at(0, 20), f32(1, 2)), "index_out_of_range"),
        ("gap past the end", (u8(5), u8(31), f32(1)), "index_out_of_range"),  # gap 31 of size 20
        ("gaps of 33 bits", (u8(33), np.zeros(9, np.uint8), f32(1, 2)), "bad_width"),
        ("gaps too short", (at(1, 2)[0], u8(), f32(1, 2)), "wrong_shape"),
        ("gaps too long", (at(1, 2)[0], u8(1, 0), f32(1, 2)), "wrong_shape"),
        ("pad bits set", (u8(1), u8(0b100), f32(1, 2)), "bad_padding"),
        ("NaN value", (*at(1, 2), f32(1, NAN)), "non_finite"),
        ("infinite value", (*at(1, 2), f32(INF, 1)), "non_finite"),
        ("gaps as int8", (at(1, 2)[0], at(1, 2)[1].astype(np.int8), f32(1, 2)), "wrong_dtype"),
        ("width as uint32", (np.array([1], np.uint32), at(1, 2)[1], f32(1, 2)), "wrong_dtype"),
        ("two widths", (u8(1, 1), at(1, 2)[1], f32(1, 2)), "wrong_shape"),
        ("float64 values", (*at(1, 2), np.array([1.0, 2.0])), "wrong_dtype"),
        ("values 2-D", (*at(1, 2), f32(1, 2).reshape(1, 2)), "wrong_shape"),
        ("two parts", at(1, 2), "wrong_parts"),
        ("a list for a part", (*at(1), [1.0]), "wrong_type"),
    ]],
    ("threshold: more entries than size", 2, (u8(0), u8(), f32(1, 2, 3)), "too_many_entries"),
    # more entries than the run's ratio allows (k = 2 of 20 at ratio 0.1)
    *[(f"{m}: more than k entries", 20, (*at(1, 2, 3), f32(1, 2, 3)), "too_many_entries")
      for m in ("topk", "randomk")],
    ("none: NaN", 2, (f32(1, NAN),), "non_finite"),
    ("none: wrong length", 2, (f32(1, 2, 3),), "wrong_shape"),
    ("none: float64", 2, (np.zeros(2),), "wrong_dtype"),
    ("fp16: infinity", 2, (np.array([1, INF], np.float16),), "non_finite"),
    ("fp16: float32", 2, (f32(1, 2),), "wrong_dtype"),
    ("bf16: NaN pattern", 2, (np.array([0x3F80, 0x7FC0], np.uint16),), "non_finite"),
    ("bf16: inf pattern", 1, (np.array([0xFF80], np.uint16),), "non_finite"),
    ("bf16: 0-d", 1, (np.array(0x3F80, np.uint16),), "wrong_shape"),
    ("int8: -128", 3, (np.array([1, -128, 3], np.int8), f32(1)), "int8_range"),
    ("int8: negative scale", 3, (np.array([1, 2, 3], np.int8), f32(-1)), "negative_scale"),
    ("int8: NaN scale", 3, (np.array([1, 2, 3], np.int8), f32(NAN)), "non_finite"),
    ("int8: NaN scale of zeros", 3, (np.zeros(3, np.int8), f32(NAN)), "non_finite"),
    ("int8: overflow", 3, (np.array([127, 0, 0], np.int8), f32(3e38)), "non_finite"),
    ("int8: scales count", 17, (np.zeros(17, np.int8), f32(1)), "wrong_shape"),
    ("int8: q length", 3, (np.zeros(4, np.int8), f32(1)), "wrong_shape"),
    ("sign: bits too short", 9, (np.zeros(1, np.uint8), f32(1)), "wrong_shape"),
    ("sign: bits as int8", 8, (np.zeros(1, np.int8), f32(1)), "wrong_dtype"),
    ("sign: pad bits set", 9, (np.array([0, 1], np.uint8), f32(1)), "bad_padding"),
    ("sign: negative scale", 8, (np.zeros(1, np.uint8), f32(-0.5)), "negative_scale"),
    ("sign: NaN scale", 8, (np.zeros(1, np.uint8), f32(NAN)), "non_finite"),
    ("sign: two scales", 8, (np.zeros(1, np.uint8), f32(1, 1)), "wrong_shape"),
    ("powersgd: P rows", 16, (np.zeros((5, 2), np.float32), np.zeros((4, 2), np.float32)),
     "wrong_shape"),
    ("powersgd: ranks differ", 16, (np.zeros((4, 2), np.float32), np.zeros((4, 1), np.float32)),
     "wrong_shape"),
    ("powersgd: rank 0", 16, (np.zeros((4, 0), np.float32), np.zeros((4, 0), np.float32)),
     "bad_rank"),
    ("powersgd: rank 3 > 2", 16, (np.zeros((4, 3), np.float32), np.zeros((4, 3), np.float32)),
     "bad_rank"),
    ("powersgd: flat P", 16, (np.zeros(8, np.float32), np.zeros((4, 2), np.float32)),
     "wrong_shape"),
    ("powersgd: NaN", 16, (np.full((4, 2), NAN, np.float32), np.ones((4, 2), np.float32)),
     "non_finite"),
    ("powersgd: overflow", 16, (np.full((4, 1), 1e30, np.float32),
                                np.full((4, 1), 1e30, np.float32)), "non_finite"),
]


@pytest.mark.parametrize(("case", "size", "parts", "reason"), BODY_CASES,
                         ids=[c[0] for c in BODY_CASES])
def test_decode_refuses_bad_bodies(case: str, size: int, parts: tuple[np.ndarray, ...],
                                   reason: str) -> None:
    name = case.split(":")[0]
    with pytest.raises(CompressError) as info:
        comp(name).decode(Encoded(name, size, parts))
    assert info.value.reason == reason


@pytest.mark.parametrize("name", NAMES)
def test_max_size_bounds_the_claimed_size(name: str) -> None:
    small, rng = comp(name, max_size=100), np.random.default_rng(0)
    with pytest.raises(CompressError, match="too_large"):
        small.decode(Encoded(name, 101, comp(name).encode(vec(101), rng).parts))
    assert small.decode(small.encode(vec(100), rng)).shape == (100,)


_DTYPES = st.one_of(hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(), hnp.floating_dtypes(),
                    hnp.boolean_dtypes())
_ARRAYS = hnp.arrays(_DTYPES, hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=6))
_SIZES = st.one_of(st.integers(-5, 40), st.integers(-5, 10**13))


def _decodes_cleanly_or_refuses(c: Compressor, enc: Encoded) -> None:
    try:
        y = c.decode(enc)
    except CompressError as err:
        assert err.reason.isidentifier() and err.reason.islower()
        return
    assert y.dtype == np.float32 and y.shape == (enc.size,) and np.isfinite(y).all()


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=150, deadline=None)
@given(size=_SIZES, parts=st.lists(_ARRAYS, max_size=3).map(tuple))
def test_arbitrary_payloads_raise_only_compress_error(
    name: str, size: int, parts: tuple[np.ndarray, ...]
) -> None:
    _decodes_cleanly_or_refuses(comp(name, max_size=64), Encoded(name, size, parts))


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=100, deadline=None)
@given(data=st.data(), size=st.integers(1, 40))
def test_well_formed_payloads_with_arbitrary_values_raise_only_compress_error(
    name: str, data: st.DataObject, size: int
) -> None:
    """The dtypes and shapes right, the contents anything: exercises the value checks."""
    c = comp(name, max_size=64)
    honest = c.encode(vec(size), np.random.default_rng(0))
    which = data.draw(st.integers(0, len(honest.parts) - 1))
    shape = honest.parts[which].shape
    if data.draw(st.booleans()) and len(shape) == 1:  # a sparse payload's length is free
        shape = (data.draw(st.integers(0, 12)),)
    parts = list(honest.parts)
    parts[which] = data.draw(hnp.arrays(honest.parts[which].dtype, shape))
    if name in SPARSE and which == 2 and shape != honest.parts[2].shape:
        # as many gaps as values, of any width up to 40 bits (33 and more are refused)
        width = data.draw(st.integers(0, 40))
        parts[0] = np.array([width], np.uint8)
        parts[1] = data.draw(hnp.arrays(np.uint8, (-(-shape[0] * width // 8),)))
    _decodes_cleanly_or_refuses(c, Encoded(name, size, tuple(parts)))


# ---- adaptive ratio ---------------------------------------------------------------------------


def test_adaptive_ratio_fits_the_budget_and_clamps() -> None:
    ar = AdaptiveRatio(target_seconds=1.0, min_ratio=0.001, max_ratio=0.5)
    # 8e6 bits in a second, 64 bits an entry, one peer: 125000 entries.
    assert ar.ratio(10**6, NetworkConditions(8e6, 0.0, 1)) == pytest.approx(0.125)
    assert ar.ratio(10**6, NetworkConditions(8e6, 0.5, 1)) == pytest.approx(0.0625)
    assert ar.ratio(10**6, NetworkConditions(8e6, 0.0, 1), bytes_per_entry=4) == pytest.approx(0.25)
    assert ar.ratio(10**6, NetworkConditions(1e12, 0.0, 1)) == 0.5
    assert ar.ratio(10**6, NetworkConditions(1.0, 0.0, 1)) == 0.001
    assert ar.ratio(10**6, NetworkConditions(1e12, 2.0, 1)) == 0.001  # latency alone is too long
    assert ar.ratio(10**6, NetworkConditions(1.0, 0.0, 0)) == 0.5  # nobody to send to
    # too fast to measure: only latency limits
    assert ar.ratio(10**6, NetworkConditions(float("inf"), 0.5, 3)) == 0.5
    assert ar.ratio(10**6, NetworkConditions(float("inf"), 1.0, 3)) == 0.001


@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 10**9), latency=st.floats(0, 2), peers=st.integers(1, 100),
       bandwidths=st.lists(st.floats(1, 1e12), min_size=2, max_size=2).map(sorted),
       extra_peers=st.integers(0, 100), extra_latency=st.floats(0, 2))
def test_adaptive_ratio_is_monotone(size: int, latency: float, peers: int, bandwidths: list[float],
                                    extra_peers: int, extra_latency: float) -> None:
    ar = AdaptiveRatio(target_seconds=1.0, min_ratio=1e-4, max_ratio=0.3)
    slow, fast = (NetworkConditions(b, latency, peers) for b in bandwidths)
    crowded = NetworkConditions(bandwidths[0], latency, peers + extra_peers)
    far = NetworkConditions(bandwidths[0], latency + extra_latency, peers)
    assert ar.ratio(size, slow) <= ar.ratio(size, fast)
    assert ar.ratio(size, crowded) <= ar.ratio(size, slow)
    assert ar.ratio(size, far) <= ar.ratio(size, slow)
    for c in (slow, fast, crowded, far):
        r = ar.ratio(size, c)
        assert 1e-4 <= r <= 0.3
        if 1e-4 < r < 0.3:  # not clamped: the upload takes exactly the target time
            upload = c.peers * r * size * 64 / c.bandwidth + c.latency
            assert upload == pytest.approx(1.0, rel=1e-9)


@pytest.mark.parametrize(("build", "match"), [
    (lambda: AdaptiveRatio(0, 0.1, 0.2), "target_seconds"),
    (lambda: AdaptiveRatio(1, 0, 0.2), "min_ratio"),
    (lambda: AdaptiveRatio(1, 0.3, 0.2), "min_ratio <= max_ratio"),
    (lambda: AdaptiveRatio(1, 0.1, 1.5), "max_ratio"),
    (lambda: NetworkConditions(0, 0, 1), "bandwidth"),
    (lambda: NetworkConditions(float("nan"), 0, 1), "bandwidth"),
    (lambda: NetworkConditions(1, -1, 1), "latency"),
    (lambda: NetworkConditions(1, 0, -1), "peers"),
    (lambda: NetworkConditions(1, 0, 1.5), "peers"),
    (lambda: AdaptiveRatio(1, 0.1, 0.2).ratio(0, NetworkConditions(1, 0, 1)), "size"),
    (lambda: AdaptiveRatio(1, 0.1, 0.2).ratio(5, NetworkConditions(1, 0, 1), 0), "bytes_per"),
])
def test_adaptive_ratio_checks_its_inputs(build: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()
