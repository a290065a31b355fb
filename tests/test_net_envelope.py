"""Signed envelopes, identities, signature caches and the memoizing frame opener."""

from __future__ import annotations

import os
import pickle
import stat
import struct
from pathlib import Path

import msgpack
import numpy as np
import pytest

from phalanx.net.codec import Limits, encode_payload
from phalanx.net.crypto import Identity, VerifyCache, sha256, verify_signature
from phalanx.net.envelope import VERSION, Envelope, FrameOpener, open_frame, seal, signed_bytes
from phalanx.net.errors import DecodeError
from phalanx.net.merkle import merkle_root
from phalanx.net.messages import Gradient, Proposal, RoundRecord, SyncRequest, SyncResponse

IDS = {i: Identity.derive(42, i) for i in range(4)}
KEYRING = {i: ident.public_key for i, ident in IDS.items()}
H = sha256(b"model")


def grad(rnd: int = 5) -> Gradient:
    return Gradient(rnd, H, 1.25, 32, np.arange(12, dtype=np.float32).reshape(3, 4))


def craft(
    identity: Identity,
    kind: int,
    sender: int,
    rnd: int,
    seq: int,
    payload: bytes,
    version: int = VERSION,
) -> bytes:
    """A correctly signed frame around an arbitrary payload."""
    digest = merkle_root(payload)
    sig = identity.sign(signed_bytes(kind, sender, rnd, seq, digest))
    return msgpack.packb([version, kind, sender, rnd, seq, digest, sig, payload])


def reject(frame: bytes, reason: str, **kw: object) -> DecodeError:
    with pytest.raises(DecodeError) as err:
        open_frame(frame, kw.pop("keyring", KEYRING), **kw)  # type: ignore[arg-type]
    assert err.value.reason == reason, err.value
    return err.value


def fields_of(frame: bytes) -> list[object]:
    return msgpack.unpackb(frame)


def repack(frame: bytes, index: int, value: object) -> bytes:
    f = fields_of(frame)
    f[index] = value
    return msgpack.packb(f)


# --- round trips ---------------------------------------------------------------------------


def test_seal_open_roundtrip_every_kind() -> None:
    inner = seal(IDS[1], 1, 7, grad(3))
    msgs = [
        grad(),
        Proposal(5, 1, (0, 1, 2), (H, H, sha256(b"x"))),
        SyncRequest(5, 0, 10),
        SyncResponse(5, (RoundRecord(3, inner, (inner,), ()),)),
    ]
    for seq, msg in enumerate(msgs):
        frame = seal(IDS[2], 2, seq, msg)
        env = open_frame(frame, KEYRING)
        assert (env.sender, env.round, env.seq, env.kind) == (2, 5, seq, type(msg).KIND)
        assert env.frame == frame and msgpack.packb(fields_of(frame)) == frame  # canonical
        assert env.digest == merkle_root(encode_payload(msg))
        assert type(env.message) is type(msg)
    assert open_frame(seal(IDS[0], 0, 0, msgs[1]), KEYRING).message == msgs[1]


def test_gradient_content_survives() -> None:
    env = open_frame(seal(IDS[0], 0, 1, grad()), KEYRING)
    g = env.message
    assert isinstance(g, Gradient)
    assert (g.base_hash, g.loss, g.samples) == (H, 1.25, 32)
    assert np.array_equal(g.values, grad().values) and not g.values.flags.writeable


def test_nested_round_record_frames_roundtrip() -> None:
    proposal = seal(IDS[0], 0, 10, Proposal(3, 0, (1, 2), (H, H)))
    grads = tuple(seal(IDS[i], i, 11, grad(3)) for i in (1, 2))
    resp = SyncResponse(4, (RoundRecord(3, proposal, grads, ()), RoundRecord(2, b"", (), ())))
    env = open_frame(seal(IDS[3], 3, 12, resp), KEYRING)
    assert env.message == resp
    record = env.message.records[0]  # type: ignore[union-attr]
    assert open_frame(record.proposal, KEYRING).message == Proposal(3, 0, (1, 2), (H, H))
    assert [open_frame(f, KEYRING).sender for f in record.gradients] == [1, 2]


def test_extreme_header_values() -> None:
    for sender, rnd, seq in ((2**31, -(2**63), 2**64 - 1), (0, 2**63 - 1, 0)):
        ident = Identity.derive(1, sender)
        frame = seal(ident, sender, seq, SyncRequest(rnd, 0, 0))
        env = open_frame(frame, {sender: ident.public_key})
        assert (env.sender, env.round, env.seq) == (sender, rnd, seq)
    with pytest.raises(ValueError, match="seq"):
        seal(IDS[0], 0, -1, SyncRequest(1, 0, 0))
    with pytest.raises(ValueError, match="sender"):
        seal(IDS[0], 2**63, 0, SyncRequest(1, 0, 0))
    with pytest.raises(TypeError):
        seal(IDS[0], 0, 0, RoundRecord(1, b"", (), ()))  # type: ignore[arg-type]


def test_signed_bytes_layout() -> None:
    data = signed_bytes(4, 2**31, -1, 2**64 - 1, H)
    assert data == b"phalanx/env/v1" + struct.pack(">BHqqQ", 1, 4, 2**31, -1, 2**64 - 1) + H
    with pytest.raises(ValueError):
        signed_bytes(2**16, 0, 0, 0, H)
    with pytest.raises(ValueError):
        signed_bytes(1, 0, 0, 0, H[:31])


# --- tampering -----------------------------------------------------------------------------

FRAME = seal(IDS[1], 1, 99, grad())


@pytest.mark.parametrize(
    ("index", "value", "reason"),
    [
        (0, 2, "bad_version"),
        (1, 2, "bad_signature"),  # another valid kind: the signature no longer matches
        (1, 77, "unknown_kind"),
        (1, 2**40, "unknown_kind"),
        (0, 300, "bad_version"),
        (2, 2**63, "malformed"),
        (2, 2, "bad_signature"),  # claims to be another known sender
        (2, 1000, "unknown_sender"),
        (3, 6, "bad_signature"),
        (4, 100, "bad_signature"),
        (5, H, "bad_digest"),
        (5, merkle_root(b"x")[:31], "bad_digest"),
        (6, bytes(64), "bad_signature"),
        (6, b"\x01" * 63, "bad_signature"),
        (7, encode_payload(grad()) + b"\x00", "bad_digest"),
        (0, True, "malformed"),
        (4, -1, "malformed"),
        (3, "5", "malformed"),
        (6, [1], "malformed"),
        (7, "payload", "malformed"),
    ],
)
def test_tampering_each_field(index: int, value: object, reason: str) -> None:
    reject(repack(FRAME, index, value), reason)


def test_flipped_bits_in_signature_and_payload() -> None:
    f = fields_of(FRAME)
    sig = bytearray(f[6])  # type: ignore[arg-type]
    sig[10] ^= 1
    reject(repack(FRAME, 6, bytes(sig)), "bad_signature")
    payload = bytearray(f[7])  # type: ignore[arg-type]
    payload[-1] ^= 0x80
    reject(repack(FRAME, 7, bytes(payload)), "bad_digest")


def test_signed_by_another_identity() -> None:
    forged = seal(IDS[2], 1, 99, grad())  # sender 1's id, sender 2's key
    reject(forged, "bad_signature")


def test_unknown_sender_and_oversized() -> None:
    reject(FRAME, "unknown_sender", keyring={0: KEYRING[0]})
    reject(FRAME, "too_large", limits=Limits(max_frame=len(FRAME) - 1))
    assert open_frame(FRAME, KEYRING, limits=Limits(max_frame=len(FRAME))).seq == 99


def test_round_mismatch() -> None:
    payload = encode_payload(grad(rnd=6))
    reject(craft(IDS[1], Gradient.KIND, 1, 5, 1, payload), "round_mismatch")


def test_bad_payloads_behind_valid_signatures() -> None:
    h = [H, 0.5, 3]
    cases = [
        [5, *h, ["float32", [2, 3], bytes(20)]],  # shape/data mismatch
        [5, H, 0.5, True, ["float32", [1], bytes(4)]],  # bool where int expected
        [True, *h, ["float32", [1], bytes(4)]],
        [5, *h],
    ]
    for obj in cases:
        frame = craft(IDS[1], Gradient.KIND, 1, 5, 1, msgpack.packb(obj))
        reject(frame, "bad_payload")
    # A payload of another kind's layout fails that kind's schema.
    wrong = craft(IDS[1], Proposal.KIND, 1, 5, 1, encode_payload(grad()))
    reject(wrong, "bad_payload")


def test_structural_garbage_is_malformed() -> None:
    for frame in (
        b"",
        b"\xc1",
        msgpack.packb({"a": 1}),
        msgpack.packb(fields_of(FRAME)[:7]),
        msgpack.packb([*fields_of(FRAME), 0]),
        FRAME + b"\x00",
        FRAME[:-1],
        bytearray(b"\x90"),
    ):
        reject(frame, "malformed")
    reject(42, "malformed")  # type: ignore[arg-type]


def test_non_canonical_encoding_is_malformed() -> None:
    f = fields_of(FRAME)
    seq_u64 = b"\xcf" + int(f[4]).to_bytes(8, "big")  # type: ignore[call-overload]
    parts = [msgpack.packb(x) for x in f]
    parts[4] = seq_u64
    reject(b"\x98" + b"".join(parts), "malformed")
    parts = [msgpack.packb(x) for x in f]
    parts[7] = b"\xc6" + len(f[7]).to_bytes(4, "big") + f[7]  # type: ignore[arg-type, operator]
    reject(b"\x98" + b"".join(parts), "malformed")
    reject(b"\xdc\x00\x08" + b"".join(msgpack.packb(x) for x in f), "malformed")


def test_verify_callable_failures_are_bad_signature() -> None:
    def boom(pk: bytes, data: bytes, sig: bytes) -> bool:
        raise RuntimeError("hostile verifier")

    reject(FRAME, "bad_signature", verify=boom)
    reject(FRAME, "bad_signature", verify=lambda *a: 1)  # truthy is not True


def test_envelope_is_frozen() -> None:
    env = open_frame(FRAME, KEYRING)
    assert isinstance(env, Envelope)
    with pytest.raises(AttributeError):
        env.seq = 1  # type: ignore[misc]


# --- identities and signatures -------------------------------------------------------------


def test_identity_derive_is_deterministic() -> None:
    assert Identity.derive(42, 1).public_key == IDS[1].public_key
    assert len({Identity.derive(42, i).public_key for i in range(20)}) == 20
    assert Identity.derive(43, 1).public_key != IDS[1].public_key
    assert Identity.derive(-1, -(2**63)).seed != Identity.derive(1, -(2**63)).seed
    expected = sha256(b"phalanx/identity/v1" + struct.pack(">qq", 42, 1))
    assert IDS[1].seed == expected
    with pytest.raises(ValueError):
        Identity.derive(2**63, 0)


def test_identity_sign_verify_and_repr() -> None:
    ident = Identity.generate()
    sig = ident.sign(b"data")
    assert len(ident.public_key) == 32 and len(sig) == 64
    assert verify_signature(ident.public_key, b"data", sig)
    assert not verify_signature(ident.public_key, b"date", sig)
    assert not verify_signature(IDS[0].public_key, b"data", sig)
    assert ident.seed.hex() not in repr(ident)
    assert Identity.from_seed(ident.seed).public_key == ident.public_key
    with pytest.raises(ValueError):
        Identity.from_seed(b"short")


@pytest.mark.parametrize(
    "args",
    [
        (b"\x00" * 31, b"d", bytes(64)),
        (b"\x00" * 32, b"d", bytes(63)),
        (None, b"d", bytes(64)),
        (IDS[0].public_key, None, IDS[0].sign(b"")),
        (IDS[0].public_key, b"", "x" * 64),
        (b"\xff" * 32, b"d", bytes(64)),  # not a curve point
    ],
)
def test_verify_signature_never_raises(args: tuple[object, object, object]) -> None:
    assert verify_signature(*args) is False  # type: ignore[arg-type]


def test_identity_files(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    ident = Identity.load_or_create(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_text().strip() == ident.seed.hex()
    assert Identity.load_or_create(path).public_key == ident.public_key
    assert Identity.load(path).seed == ident.seed
    path.chmod(0o644)
    IDS[0].save(path)  # overwriting tightens the mode again
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert Identity.load(path).public_key == KEYRING[0]
    path.write_text("not hex")
    with pytest.raises(ValueError, match="hex seed"):
        Identity.load(path)


def test_verify_cache_hits_and_forgeries() -> None:
    cache = VerifyCache(maxsize=2)
    pk, data = IDS[0].public_key, b"payload"
    good = IDS[0].sign(data)
    forged = bytes([good[0] ^ 1]) + good[1:]
    assert cache.verify(pk, data, good) and (cache.hits, cache.misses) == (0, 1)
    assert cache(pk, data, good) and (cache.hits, cache.misses) == (1, 1)
    assert not cache.verify(pk, data, forged)
    assert not cache.verify(pk, data, forged)
    assert not cache.verify(KEYRING[1], data, good)
    assert len(cache) == 2  # bounded
    assert not cache.verify(pk, None, good)  # type: ignore[arg-type]
    assert open_frame(FRAME, KEYRING, verify=cache).seq == 99


# --- FrameOpener ---------------------------------------------------------------------------


class CountingVerify:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, pk: bytes, data: bytes, sig: bytes) -> bool:
        self.calls += 1
        return verify_signature(pk, data, sig)


def test_frame_opener_caches_envelopes_and_errors() -> None:
    counter = CountingVerify()
    opener = FrameOpener(KEYRING, verify=counter, maxsize=3)
    assert opener(FRAME) is opener(bytearray(FRAME))
    assert (opener.hits, opener.misses, counter.calls) == (1, 1, 1)

    forged = seal(IDS[2], 1, 99, grad())
    errors = []
    for _ in range(3):
        with pytest.raises(DecodeError) as err:
            opener(forged)
        errors.append(err.value)
    assert counter.calls == 2  # the rejection was verified once, then served from the cache
    assert {e.reason for e in errors} == {"bad_signature"}
    assert errors[0] is not errors[1]  # fresh exception per call
    assert (opener.hits, opener.misses) == (3, 2)

    for seq in range(3):  # evicts FRAME (the oldest entry)
        opener(seal(IDS[0], 0, seq, SyncRequest(1, 0, 0)))
    assert len(opener) == 3
    opener(FRAME)
    assert counter.calls == 6
    with pytest.raises(DecodeError):
        opener(None)  # type: ignore[arg-type]


def test_frame_opener_keyring_is_a_snapshot() -> None:
    keyring = dict(KEYRING)
    opener = FrameOpener(keyring)
    keyring.clear()
    assert opener(FRAME).sender == 1


def test_decode_error_pickles_from_envelope() -> None:
    err = reject(repack(FRAME, 1, 77), "unknown_kind")
    assert pickle.loads(pickle.dumps(err)).reason == "unknown_kind"
