"""Codec round trips (bit-exact tensors) and strict rejection of ill-typed payloads."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.net.codec import DEFAULT_LIMITS, DTYPES, Limits, decode_payload, encode_payload
from phalanx.net.errors import REASONS, DecodeError
from phalanx.net.messages import (
    COMMIT,
    JOIN,
    KINDS,
    Certified,
    Checkpoint,
    CheckpointRequest,
    Epoch,
    Evidence,
    Fetch,
    Frames,
    Gradient,
    MemberChange,
    Proposal,
    RoundRecord,
    SyncRequest,
    SyncResponse,
    ViewChange,
    Vote,
)

H = bytes(range(32))


def same_array(a: np.ndarray, b: np.ndarray) -> bool:
    a_le = a.astype(a.dtype.newbyteorder("<"), copy=False)
    return a.dtype.name == b.dtype.name and a.shape == b.shape and a_le.tobytes() == b.tobytes()


def roundtrip(msg):  # type: ignore[no-untyped-def]
    out = decode_payload(type(msg).KIND, encode_payload(msg))
    assert type(out) is type(msg)
    return out


@st.composite
def tensors(draw: st.DrawFn) -> np.ndarray:
    """Arrays of any allowed dtype and odd shape, filled with arbitrary bit patterns (NaN
    payloads, -0.0, subnormals, infinities included)."""
    name = draw(st.sampled_from(sorted(DTYPES)))
    shape = tuple(draw(st.lists(st.integers(0, 5), max_size=4)))
    dtype = DTYPES[name]
    n = int(np.prod(shape, dtype=np.int64))
    if name == "bool":
        raw = bytes(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    else:
        raw = draw(st.binary(min_size=n * dtype.itemsize, max_size=n * dtype.itemsize))
    arr = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    if draw(st.booleans()):  # the encoder must accept big-endian input too
        arr = arr.astype(dtype.newbyteorder(">"))
    return arr


@settings(max_examples=300, deadline=None)
@given(
    tensors(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True),
    st.integers(0, 2**64 - 1),
)
def test_gradient_roundtrip_bit_exact(values: np.ndarray, rnd: int, loss: float, n: int) -> None:
    out = roundtrip(Gradient(rnd, H, loss, n, values))
    assert (out.round, out.base_hash, out.samples) == (rnd, H, n)
    assert np.float64(out.loss).tobytes() == np.float64(loss).tobytes()
    assert same_array(values, out.values)
    assert not out.values.flags.writeable


def test_special_float_bits_survive() -> None:
    nan_payload = np.array([0x7FC00001, 0xFFC12345, 0x80000000, 0x00000001], np.uint32)
    f32 = nan_payload.view(np.float32)
    f16 = np.array([0x7E01, 0x8000, 0xFC00], np.uint16).view(np.float16)
    f64 = np.array([0x7FF8000000000001, 0x8000000000000000], np.uint64).view(np.float64)
    for arr in (f32, f16, f64, f32.astype(">f4")):
        assert same_array(arr, roundtrip(Gradient(0, H, -0.0, 1, arr)).values)
    out = roundtrip(Gradient(0, H, -0.0, 1, f32))
    assert np.signbit(out.loss)


def test_layouts_and_zero_size() -> None:
    base = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    for arr in (
        base.T,  # Fortran order
        base[:, ::2, 1:],  # strided view
        np.zeros((0,), np.float32),
        np.zeros((3, 0, 2), np.int8),
        np.array(3.5, np.float64),  # 0-d
        np.array([True, False, True]),
    ):
        out = roundtrip(Gradient(1, H, 0.0, 1, arr)).values
        assert out.shape == arr.shape and np.array_equal(out, arr)
        assert out.flags.c_contiguous and not out.flags.writeable


def test_decoded_array_is_read_only() -> None:
    out = roundtrip(Gradient(1, H, 0.0, 1, np.ones(4, np.float32))).values
    with pytest.raises(ValueError):
        out[0] = 2.0


@settings(max_examples=300, deadline=None)
@given(
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-(2**63), 2**63 - 1),
    st.lists(st.integers(-(2**63), 2**64 - 1), max_size=20),
    st.lists(st.binary(min_size=32, max_size=32), max_size=20),
)
def test_proposal_roundtrip(rnd: int, view: int, senders: list[int], digests: list[bytes]) -> None:
    msg = Proposal(rnd, view, tuple(senders), tuple(digests))
    assert roundtrip(msg) == msg


def test_sync_messages_roundtrip() -> None:
    req = SyncRequest(9, 3, 5)
    assert roundtrip(req) == req
    records = tuple(RoundRecord(r, b"p" * r, tuple(b"g" * i for i in range(r)), (b"c",) * r)
                    for r in range(4))
    for resp in (SyncResponse(9, records), SyncResponse(0, ())):
        assert roundtrip(resp) == resp
    assert roundtrip(CheckpointRequest(3)) == CheckpointRequest(3)
    state = [np.arange(n, dtype=np.float32) for n in (5, 10, 5)]
    epochs = (Epoch(0, (0, 1, 2, 3)), Epoch(3, (0, 1, 2, 3, 4)))
    cp = roundtrip(Checkpoint(4, records[3], *state, epochs))
    assert cp.round == 4 and cp.record == records[3] and cp.epochs == epochs
    assert roundtrip(MemberChange(7, 2, JOIN)) == MemberChange(7, 2, JOIN)
    for got, want in zip((cp.params, cp.velocity, cp.last_update), state, strict=True):
        np.testing.assert_array_equal(got, want)


def test_consensus_messages_roundtrip_and_hash_length() -> None:
    vote = Vote(7, 2, COMMIT, b"h" * 32, b"m" * 32)
    assert roundtrip(vote) == vote
    with pytest.raises(DecodeError) as err:
        decode_payload(Vote.KIND, msgpack.packb([7, 2, COMMIT, b"short", b"m" * 32]))
    assert err.value.reason == "bad_payload"
    for msg in (ViewChange(3, 1, (b"v1", b"v2"), b"p"), ViewChange(3, 1, (), b""),
                Evidence(4, b"first", b"second"), Fetch(4, (0, 2)), Frames(4, (b"g1", b"g2")),
                Certified(4, COMMIT, (b"v1", b"v2", b"v3")),
                Proposal(2, 1, (0, 1, 2), (b"a" * 32,) * 3, (b"vote",) * 3)):
        assert roundtrip(msg) == msg


def test_every_kind_is_covered() -> None:
    assert set(KINDS) == {1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14}  # 5 (Head) is retired
    assert all(kind == cls.KIND for kind, cls in KINDS.items())


def test_float_field_accepts_int_and_floats_are_float64() -> None:
    raw = msgpack.packb([1, H, 2, 3, ["float32", [0], b""], "", 0, []])
    out = decode_payload(Gradient.KIND, raw)
    assert type(out.loss) is float and out.loss == 2.0
    payload = encode_payload(Gradient(1, H, 0.1, 3, np.zeros(0, np.float32)))
    assert msgpack.unpackb(payload)[2] == 0.1  # float64, not rounded to float32


def bad(kind: int, obj: object, limits: Limits = DEFAULT_LIMITS) -> str:
    with pytest.raises(DecodeError) as err:
        decode_payload(kind, msgpack.packb(obj), limits)
    assert err.value.reason == "bad_payload", err.value
    return err.value.detail


GOOD_T = ["float32", [2, 3], bytes(24)]
TAIL = ["", 0, []]  # a dense gradient's encoding, size and parts


@pytest.mark.parametrize(
    ("obj", "needle"),
    [
        ([True, H, 0.0, 1, GOOD_T, *TAIL], "Gradient.round: expected int, got bool"),
        ([1, H, 0.0, False, GOOD_T, *TAIL], "samples: expected int, got bool"),
        ([1, H, True, 1, GOOD_T, *TAIL], "loss: expected float, got bool"),
        ([1, H[:31], 0.0, 1, GOOD_T, *TAIL], "base_hash: expected 32 bytes, got 31"),
        ([1, "x" * 32, 0.0, 1, GOOD_T, *TAIL], "base_hash"),
        ([1, H, 0.0, 1], "expected an array of 8 fields"),
        ([1, H, 0.0, 1, GOOD_T, *TAIL, 0], "expected an array of 8 fields"),
        ([1, H, 0.0, 1, ["float32", [2, 3], bytes(20)], *TAIL], "data must be 24 bytes"),
        ([1, H, 0.0, 1, ["float32", [2, -3], bytes(24)], *TAIL], "bad dim"),
        ([1, H, 0.0, 1, ["float32", [2, True], bytes(8)], *TAIL], "bad dim"),
        ([1, H, 0.0, 1, ["complex64", [1], bytes(8)], *TAIL], "not allowed"),
        ([1, H, 0.0, 1, ["float32", [1] * 9, bytes(4)], *TAIL], "at most 8 dims"),
        ([1, H, 0.0, 1, ["float32", [2, 3]], *TAIL], "expected tensor"),
        ([1, H, 0.0, 1, ["float32", (2, 3), "x"], *TAIL], "data must be"),
        ([1, H, 0.0, 1, ["bool", [2], b"\x01\x02"], *TAIL], "bool tensor"),
        ([1, H, 0.0, 1, ["float32", [0, 2**63], b""], *TAIL], "bad dim"),
        ({"round": 1}, "Gradient"),
    ],
)
def test_gradient_rejections(obj: object, needle: str) -> None:
    assert needle in bad(Gradient.KIND, obj)


def test_nested_rejections_name_the_path() -> None:
    assert "digests[1]" in bad(Proposal.KIND, [1, 0, [1, 2], [H, H[:5]], [], b""])
    assert "senders[0]: expected int, got bool" in bad(Proposal.KIND, [1, 0, [True], [], [], b""])
    assert "records[0].gradients[1]" in bad(SyncResponse.KIND, [1, [[1, b"", [b"", 3], [], []]]])
    assert "records[0]" in bad(SyncResponse.KIND, [1, [[1, b""]]])
    assert "from_round" in bad(SyncRequest.KIND, [1, 2.0, 3])


def test_limits_are_enforced() -> None:
    small = Limits(max_elements=5, max_items=3, max_dims=2, dtypes=frozenset({"float32"}))
    assert "max_elements" in bad(Gradient.KIND, [1, H, 0.0, 1, GOOD_T, *TAIL], small)
    assert "not allowed" in bad(Gradient.KIND, [1, H, 0.0, 1, ["int8", [1], b"\x00"], *TAIL],
                                small)
    assert "max_items" in bad(Proposal.KIND, [1, 0, [1, 2, 3, 4], [], [], b""], small)
    assert "at most 2 dims" in bad(
        Gradient.KIND, [1, H, 0.0, 1, ["float32", [1] * 3, b"\0" * 4], *TAIL], small
    )
    with pytest.raises(DecodeError) as err:
        decode_payload(Gradient.KIND, bytes(100), Limits(max_frame=99))
    assert err.value.reason == "too_large"


def test_limits_validation() -> None:
    with pytest.raises(ValueError, match="unknown"):
        Limits(dtypes=frozenset({"complex64"}))
    with pytest.raises(ValueError, match="max_dims"):
        Limits(max_dims=-1)


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xc1", msgpack.packb([1, 2, 3]) + b"\x00", b"\x95\x01", b"\xdd\xff\xff\xff\xff"],
)
def test_garbage_payloads(payload: bytes) -> None:
    with pytest.raises(DecodeError) as err:
        decode_payload(SyncRequest.KIND, payload)
    assert err.value.reason == "bad_payload"


def test_unknown_kind_and_non_bytes() -> None:
    for kind in (0, 99, -1, True, "1"):
        with pytest.raises(DecodeError) as err:
            decode_payload(kind, msgpack.packb([1, 2, 3]))  # type: ignore[arg-type]
        assert err.value.reason == "unknown_kind"
    with pytest.raises(DecodeError) as err:
        decode_payload(SyncRequest.KIND, [1, 2, 3])  # type: ignore[arg-type]
    assert err.value.reason in REASONS


def test_encode_rejects_what_would_not_decode() -> None:
    with pytest.raises(TypeError):
        encode_payload(RoundRecord(1, b"", (), ()))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="values: dtype complex64"):
        encode_payload(Gradient(1, H, 0.0, 1, np.zeros(2, np.complex64)))
    with pytest.raises(ValueError, match="samples: expected int, got bool"):
        encode_payload(Gradient(1, H, 0.0, True, np.zeros(2)))
    with pytest.raises(ValueError, match=r"digests\[0\]: expected 32 bytes"):
        encode_payload(Proposal(1, 0, (1,), (b"short",)))
    with pytest.raises(ValueError, match="round"):
        encode_payload(SyncRequest(2**64, 0, 0))
    with pytest.raises(ValueError, match="values: expected numpy array"):
        encode_payload(Gradient(1, H, 0.0, 1, [1.0, 2.0]))  # type: ignore[arg-type]


def test_encode_accepts_numpy_scalars() -> None:
    msg = Gradient(np.int64(4), H, np.float32(0.5), np.uint8(3), np.zeros(1, np.float16))  # type: ignore[arg-type]
    out = roundtrip(msg)
    assert (type(out.round), out.round, out.loss, out.samples) == (int, 4, 0.5, 3)


def test_decode_error_contract() -> None:
    import pickle

    e = DecodeError("bad_payload", "x.y: broken")
    assert str(e) == "bad_payload: x.y: broken"
    again = pickle.loads(pickle.dumps(e))
    assert (again.reason, again.detail) == (e.reason, e.detail)
    with pytest.raises(ValueError):
        DecodeError("nope", "")


def test_net_imports_no_higher_layer() -> None:
    import subprocess
    import sys

    code = (
        "import sys, phalanx.net.envelope, phalanx.net.replay;"
        "bad = [m for m in sys.modules if m.split('.')[:2] in"
        " (['phalanx', 'engine'], ['phalanx', 'sim'], ['phalanx', 'apps'])];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
