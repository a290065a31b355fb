"""Signed envelopes: the only thing that crosses the wire.

Frame = msgpack array `[VERSION, kind, sender, round, seq, digest, signature, payload]`, with
digest = merkle_root(payload) (so big payloads can be checked chunk by chunk) and signature =
Ed25519 over `signed_bytes(...)`. Frames must be canonical (exactly what msgpack.packb emits for
that array), which makes the frame bytes a unique name for the envelope.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import msgpack

from .codec import CORE, DEFAULT_LIMITS, Limits, MessageSet, decode_payload, encode_payload
from .crypto import Identity, verify_signature
from .errors import DecodeError
from .merkle import HASH_SIZE, merkle_root
from .messages import Message

VERSION = 1

_DOMAIN = b"phalanx/env/v1"
# Signed header, fixed width and big-endian so the byte string is injective:
# version u8 | kind u16 | sender i64 | round i64 | seq u64, then the 32-byte digest.
_HEADER = struct.Struct(">BHqqQ")
# What the signed header can hold; out-of-range frames are "malformed". Version and kind need
# no bound: anything but a known value is rejected by its own check.
_RANGES = {
    "sender": (-(2**63), 2**63 - 1),
    "round": (-(2**63), 2**63 - 1),
    "seq": (0, 2**64 - 1),
}
_INT_FIELDS = ("version", "kind", "sender", "round", "seq")

# (public_key, signed_bytes, signature) -> bool; only an exact True accepts.
Verify = Callable[[bytes, bytes, bytes], bool]


@dataclass(frozen=True, slots=True)
class Envelope:
    sender: int
    round: int
    seq: int
    kind: int
    digest: bytes
    signature: bytes
    message: Message
    frame: bytes  # the exact bytes received, for relaying and for RoundRecord
    # Facts derived from the message by pure functions (say, whether a tensor is finite),
    # computed once on first use: a memoizing opener shares them between the nodes it serves.
    facts: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def signed_bytes(kind: int, sender: int, round: int, seq: int, digest: bytes) -> bytes:
    """The exact bytes the sender signs; raises ValueError for out-of-range fields."""
    if len(digest) != HASH_SIZE:
        raise ValueError(f"digest must be {HASH_SIZE} bytes, got {len(digest)}")
    try:
        header = _HEADER.pack(VERSION, kind, sender, round, seq)
    except struct.error as e:
        raise ValueError(f"envelope header out of range: {e}") from None
    return _DOMAIN + header + digest


def _bin_header(n: int) -> bytes:
    if n < 2**8:
        return b"\xc4" + n.to_bytes(1, "big")
    if n < 2**16:
        return b"\xc5" + n.to_bytes(2, "big")
    if n < 2**32:
        return b"\xc6" + n.to_bytes(4, "big")
    raise ValueError(f"payload of {n} bytes is too large for msgpack")


def _frame_prefix(
    version: int,
    kind: int,
    sender: int,
    round: int,
    seq: int,
    digest: bytes,
    signature: bytes,
    size: int,
) -> bytes:
    # Everything before the payload, built without copying the payload: a fixarray of 8
    # elements, the seven header fields as msgpack.packb encodes them, then the bin header.
    head = (version, kind, sender, round, seq, digest, signature)
    return b"\x98" + b"".join(msgpack.packb(x) for x in head) + _bin_header(size)


def seal(identity: Identity, sender: int, seq: int, message: Message) -> bytes:
    """Encode, digest and sign `message`; returns the frame. ValueError/TypeError on bad input."""
    cls = type(message)
    kind = getattr(cls, "KIND", None)
    if type(kind) is not int or not 1 <= kind <= 0xFFFF:
        raise TypeError(f"not a top-level message: {cls.__name__}")
    payload = encode_payload(message)
    rnd = int(message.round)
    for name, value in (("sender", sender), ("round", rnd), ("seq", seq)):
        lo, hi = _RANGES[name]
        if type(value) is not int or not lo <= value <= hi:
            raise ValueError(f"{name}={value!r} must be an int in [{lo}, {hi}]")
    digest = merkle_root(payload)
    signature = identity.sign(signed_bytes(kind, sender, rnd, seq, digest))
    prefix = _frame_prefix(VERSION, kind, sender, rnd, seq, digest, signature, len(payload))
    return prefix + payload


def _header_error(fields: list[object]) -> str | None:
    if len(fields) != 8:
        return f"expected 8 fields, got {len(fields)}"
    for name, value in zip(_INT_FIELDS, fields[:5], strict=True):
        if type(value) is not int:
            return f"{name} must be an int, got {type(value).__name__}"
        lo, hi = _RANGES.get(name, (value, value))
        if not lo <= value <= hi:
            return f"{name}={value} out of range [{lo}, {hi}]"
    for name, value in zip(("digest", "signature", "payload"), fields[5:], strict=True):
        if type(value) is not bytes:
            return f"{name} must be bytes, got {type(value).__name__}"
    return None


def peek_kind(frame: bytes) -> int | None:
    """The message kind a frame's header claims, unchecked (None when it has no readable
    header): for accounting that must not pay a verification, never for trusting a frame."""
    unpacker = msgpack.Unpacker(max_buffer_size=64, max_bin_len=0, max_str_len=0)
    unpacker.feed(bytes(frame[:16]))
    try:
        if unpacker.read_array_header() != 8:
            return None
        unpacker.skip()  # version
        kind = unpacker.unpack()
    except Exception:
        return None
    return kind if type(kind) is int else None


def open_frame(
    frame: bytes,
    keyring: Mapping[int, bytes],
    verify: Verify = verify_signature,
    limits: Limits = DEFAULT_LIMITS,
    messages: MessageSet = CORE,
) -> Envelope:
    """Check and decode a frame. `keyring` maps sender id -> Ed25519 public key; `messages`
    are the kinds this receiver decodes (the core ones, plus its services').

    Checks run cheapest-first and stop at the first failure; only DecodeError is raised.
    """
    try:
        return _open(frame, keyring, verify, limits, messages)
    except DecodeError:
        raise
    except Exception as e:  # a bug or a hostile keyring/verify must still not escape as-is
        raise DecodeError("malformed", f"{type(e).__name__}: {e}"[:200]) from None


def _open(frame: bytes, keyring: Mapping[int, bytes], verify: Verify, limits: Limits,
          messages: MessageSet) -> Envelope:
    frame, fields = _unpack(frame, limits)
    version, kind, sender, rnd, seq, digest, signature, payload = fields
    # Built from the frame's own fields, so a canonical frame of another version still gets
    # reported as bad_version below.
    prefix = _frame_prefix(version, kind, sender, rnd, seq, digest, signature, len(payload))
    if len(frame) != len(prefix) + len(payload) or not frame.startswith(prefix):
        raise DecodeError("malformed", "frame is not canonically encoded")
    if version != VERSION:
        raise DecodeError("bad_version", f"version {version}, expected {VERSION}")
    if kind not in messages:
        raise DecodeError("unknown_kind", f"kind {kind} not in {sorted(messages.kinds)}")
    public_key = keyring.get(sender)
    if public_key is None:
        raise DecodeError("unknown_sender", f"sender {sender} not in keyring")
    if len(digest) != HASH_SIZE or merkle_root(payload) != digest:
        raise DecodeError("bad_digest", "digest does not match the payload's Merkle root")
    try:
        ok = verify(public_key, signed_bytes(kind, sender, rnd, seq, digest), signature)
    except Exception:
        ok = False
    if ok is not True:
        raise DecodeError("bad_signature", f"signature by sender {sender} does not verify")
    message = decode_payload(kind, payload, limits, messages)
    if message.round != rnd:
        raise DecodeError("round_mismatch", f"payload round {message.round} != envelope {rnd}")
    return Envelope(sender, rnd, seq, kind, digest, signature, message, frame)


def _unpack(frame: bytes, limits: Limits) -> tuple[bytes, list[Any]]:
    """The frame as bytes and its eight well-typed fields; the structural checks of `_open`."""
    if not isinstance(frame, bytes | bytearray | memoryview):
        raise DecodeError("malformed", f"frame must be bytes, got {type(frame).__name__}")
    frame = bytes(frame)
    if len(frame) > limits.max_frame:
        raise DecodeError("too_large", f"frame {len(frame)} > {limits.max_frame} bytes")
    try:
        fields = msgpack.unpackb(
            frame,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_bin_len=limits.max_frame,
            max_str_len=256,
            max_array_len=8,
            max_map_len=0,
            max_ext_len=0,
        )
    except Exception as e:
        raise DecodeError("malformed", f"not a msgpack frame: {type(e).__name__}: {e}") from None
    if type(fields) is not list:
        raise DecodeError("malformed", f"frame must be an array, got {type(fields).__name__}")
    problem = _header_error(fields)
    if problem:
        raise DecodeError("malformed", problem)
    return frame, fields


class FrameOpener:
    """Memoizing `open_frame` for the simulator: opening is a pure function of the frame bytes
    (given a fixed keyring, copied here so it cannot change under the cache), so a frame
    broadcast to N simulated nodes is verified and decoded once. Rejections are cached too."""

    def __init__(
        self,
        keyring: Mapping[int, bytes],
        verify: Verify = verify_signature,
        limits: Limits = DEFAULT_LIMITS,
        maxsize: int = 200_000,
        messages: MessageSet = CORE,
    ) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.keyring: Mapping[int, bytes] = MappingProxyType(dict(keyring))
        self.verify = verify
        self.limits = limits
        self.messages = messages
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        # Value: the envelope, or (reason, detail) of the rejection; a fresh DecodeError is
        # raised on each hit so tracebacks do not pile up on one shared exception object.
        # Evicted oldest first (a dict keeps insertion order): a broadcast frame is looked up
        # by every node within a few simulated hops, so recency adds nothing worth its cost.
        self._cache: dict[bytes, Envelope | tuple[str, str]] = {}

    def __call__(self, frame: bytes) -> Envelope:
        if not isinstance(frame, bytes):
            if not isinstance(frame, bytearray | memoryview):
                return open_frame(frame, self.keyring, self.verify, self.limits,
                                  self.messages)  # raises
            frame = bytes(frame)
        cached = self._cache.get(frame)
        if cached is not None:
            self.hits += 1
        else:
            self.misses += 1
            try:
                cached = open_frame(frame, self.keyring, self.verify, self.limits,
                                    self.messages)
            except DecodeError as e:
                cached = (e.reason, e.detail)
            self._cache[frame] = cached
            if len(self._cache) > self.maxsize:
                del self._cache[next(iter(self._cache))]
        if isinstance(cached, Envelope):
            return cached
        raise DecodeError(*cached)

    def __len__(self) -> int:
        return len(self._cache)
