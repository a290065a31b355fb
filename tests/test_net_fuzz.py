"""Fuzzing: whatever bytes arrive, open_frame and decode_payload either succeed or raise
DecodeError with a known reason, nothing else."""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.net.codec import Limits, decode_payload, encode_payload
from phalanx.net.crypto import Identity, sha256
from phalanx.net.envelope import Envelope, open_frame, seal, signed_bytes
from phalanx.net.errors import REASONS, DecodeError
from phalanx.net.merkle import merkle_root
from phalanx.net.messages import KINDS, Gradient, Proposal, RoundRecord, SyncRequest, SyncResponse

FUZZ = settings(max_examples=300, deadline=None)
IDS = {i: Identity.derive(9, i) for i in range(3)}
KEYRING = {i: ident.public_key for i, ident in IDS.items()}
H = sha256(b"base")
SMALL = Limits(max_frame=1 << 16, max_elements=4096, max_items=256)

_inner = seal(IDS[0], 0, 1, SyncRequest(1, 0, 2))
MESSAGES = [
    Gradient(3, H, 0.5, 8, np.linspace(-1, 1, 10, dtype=np.float32).reshape(2, 5)),
    Gradient(3, H, float("nan"), 0, np.array([True, False])),
    Proposal(3, 1, (0, 1, 2), (H, sha256(b"a"), sha256(b"b"))),
    SyncRequest(3, 0, 16),
    SyncResponse(3, (RoundRecord(1, _inner, (_inner, b""), (_inner,)),)),
]
FRAMES = [seal(IDS[1], 1, 100 + i, m) for i, m in enumerate(MESSAGES)]
PAYLOADS = [(type(m).KIND, encode_payload(m)) for m in MESSAGES]

ints = st.integers(-(2**63), 2**64 - 1)
scalars = (
    st.none() | st.booleans() | ints | st.floats() | st.text(max_size=8) | st.binary(max_size=40)
)
structures = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(st.text(max_size=4) | ints, children, max_size=4)
    ),
    max_leaves=30,
)


def open_or_reject(frame: Any, limits: Limits = SMALL) -> Envelope | None:
    try:
        env = open_frame(frame, KEYRING, limits=limits)
    except DecodeError as e:
        assert e.reason in REASONS
        return None
    assert isinstance(env, Envelope)
    return env


def decode_or_reject(kind: int, payload: Any) -> None:
    try:
        msg = decode_payload(kind, payload, SMALL)
    except DecodeError as e:
        assert e.reason in REASONS
        return
    assert type(msg) is KINDS[kind]


def signed_frame(kind: int, sender: int, rnd: int, seq: int, payload: bytes) -> bytes:
    digest = merkle_root(payload)
    sig = IDS[sender].sign(signed_bytes(kind, sender, rnd, seq, digest))
    return msgpack.packb([1, kind, sender, rnd, seq, digest, sig, payload])


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes(data: bytes) -> None:
    open_or_reject(data)
    for kind in KINDS:
        decode_or_reject(kind, data)


@FUZZ
@given(structures)
def test_arbitrary_msgpack_structures(obj: Any) -> None:
    packed = msgpack.packb(obj)
    open_or_reject(packed)
    for kind in KINDS:
        decode_or_reject(kind, packed)


@FUZZ
@given(
    st.lists(scalars | st.lists(scalars, max_size=3), min_size=8, max_size=8),
    st.sampled_from(sorted(KINDS)),
    st.sampled_from(sorted(KEYRING)),
    st.booleans(),
)
def test_frame_shaped_structures(fields: list[Any], kind: int, sender: int, fix: bool) -> None:
    # Plausible headers (right version/kind/sender, sometimes a matching digest) get the
    # garbage past the cheap checks.
    fields[:3] = [1, kind, sender]
    if fix and type(fields[7]) is bytes:
        fields[5] = merkle_root(fields[7])
    open_or_reject(msgpack.packb(fields))


@FUZZ
@given(st.sampled_from(sorted(KINDS)), structures, ints)
def test_signed_garbage_payloads(kind: int, obj: Any, rnd: int) -> None:
    # Validly signed frames reach the payload decoder with arbitrary content.
    rnd = rnd % 2**63
    open_or_reject(signed_frame(kind, 2, rnd, 1, msgpack.packb(obj)))
    open_or_reject(signed_frame(kind, 2, rnd, 1, msgpack.packb([rnd, obj, obj, obj, obj])))


@FUZZ
@given(st.sampled_from(FRAMES), st.data())
def test_mutated_frames(frame: bytes, data: st.DataObject) -> None:
    buf = bytearray(frame)
    op = data.draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
    pos = data.draw(st.integers(0, len(buf) - 1))
    if op == "flip":
        buf[pos] ^= 1 << data.draw(st.integers(0, 7))
    elif op == "set":
        buf[pos] = data.draw(st.integers(0, 255))
    elif op == "truncate":
        del buf[pos:]
    elif op == "insert":
        buf.insert(pos, data.draw(st.integers(0, 255)))
    else:
        del buf[pos]
    env = open_or_reject(bytes(buf))
    if env is not None:  # only a no-op mutation can keep a frame valid
        assert env.frame == frame


@FUZZ
@given(st.sampled_from(PAYLOADS), st.data())
def test_mutated_payloads(kind_payload: tuple[int, bytes], data: st.DataObject) -> None:
    kind, payload = kind_payload
    buf = bytearray(payload)
    pos = data.draw(st.integers(0, len(buf) - 1))
    if data.draw(st.booleans()):
        buf[pos] = data.draw(st.integers(0, 255))
    else:
        del buf[pos:]
    for k in KINDS:  # the mutated bytes are also tried as every other kind
        decode_or_reject(k, bytes(buf))
    decode_or_reject(kind, bytes(buf))


def test_deep_nesting_and_huge_claims() -> None:
    deep = b"\x91" * 100_000 + b"\xc0"
    huge_array = b"\xdd\xff\xff\xff\xff"
    huge_bin = b"\xc6\xff\xff\xff\xff"
    for data in (deep, huge_array, huge_bin):
        open_or_reject(data)
        for kind in KINDS:
            decode_or_reject(kind, data)
    open_or_reject(signed_frame(Gradient.KIND, 0, 1, 1, deep))
