"""Signed annotation records: one annotator's answer to one task, signed with the annotator's
own Ed25519 key and chained to their previous record.

A node stores and forwards records but cannot forge or alter one: the signature covers every
field, and the record's identity is the hash of its content.

Exact bytes (what a browser with WebCrypto must reproduce)
---------------------------------------------------------
1. `body` = msgpack array of the `Annotation` fields in declaration order, as the project's
   strict codec writes them (net/codec.py): integers in msgpack's shortest form, `task`,
   `annotator` and `prev` as bin 8 of 32 bytes, `kind` and `text` as UTF-8 str in the
   shortest str form, `choice` as an array of ints. No maps, no floats.
     [task, kind, annotator, seq, prev, [choice...], text, client_time_ms]
2. `digest` = SHA-256(body): the record's content address, and what the next record of the
   same annotator puts in `prev` (the first record, seq 0, has 32 zero bytes there).
3. `signature` = Ed25519 over `b"phalanx/annotation/v1" + digest` (21 + 32 bytes) by the key
   whose 32-byte public key is `annotator`.
4. On the wire and on disk: msgpack array `[body array, signature (bin 8, 64 bytes)]`.

`client_time_ms` is informational only (the annotator's clock, milliseconds since the Unix
epoch): nothing the log or the labels compute reads it, since it is whatever a client says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Final

from phalanx.net.codec import Limits, decode_record, encode_record
from phalanx.net.crypto import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Identity, sha256
from phalanx.net.errors import DecodeError, ReasonedError
from phalanx.net.messages import FixedLen, Hash32

from .tasks import MAX_FREE_TEXT_CHARS, Answer

__all__ = [
    "GENESIS",
    "MAX_CHOICES",
    "MAX_RECORD_BYTES",
    "REFUSALS",
    "Annotation",
    "RecordRefused",
    "SignedAnnotation",
    "decode_annotation",
    "sign_annotation",
    "signed_message",
]

DOMAIN: Final = b"phalanx/annotation/v1"
GENESIS: Final = bytes(32)  # `prev` of an annotator's first record
MAX_RECORD_BYTES: Final = 48 * 1024  # a free-text answer of 10 000 characters fits
MAX_CHOICES: Final = 1024  # more indices than any schema allows
MAX_INT: Final = 2**53 - 1  # seq and client time stay exact in JavaScript numbers

# Why a record is refused, in the order a log checks them; "equivocation" counts the records
# that fork an annotator's chain, which are kept (they are the evidence), not refused.
REFUSALS: Final = (
    "oversized",  # more bytes, choices or characters than any task allows
    "malformed",  # not a record at all
    "altered",  # content does not hash to the digest it was announced under
    "replay",  # a record the log already holds
    "bad_signature",
    "unknown_task",
    "invalid_answer",  # kind or answer does not fit the task's schema
    "chain_link",  # prev names a record that cannot precede this one
    "sequence_gap",  # prev names a record the log does not hold (yet)
    "flood",  # over the log's bounds per batch, per annotator or in all
    "equivocation",
)


class RecordRefused(ReasonedError):
    """A record a log will not take; `reason` is one of REFUSALS, the message one line."""

    REASONS = REFUSALS


@dataclass(frozen=True, slots=True)
class Annotation:
    """The signed content of a record (field order is the wire order: never reorder)."""

    task: Hash32  # the task's digest
    kind: str  # the task's schema kind, so a record is readable without its task
    annotator: Annotated[bytes, FixedLen(PUBLIC_KEY_SIZE)]  # Ed25519 public key
    seq: int  # 0, 1, 2, ... per annotator
    prev: Hash32  # digest of the annotator's record seq - 1; GENESIS at seq 0
    choice: tuple[int, ...]
    text: str
    client_time_ms: int  # informational only

    @property
    def answer(self) -> Answer:
        return Answer(self.choice, self.text)


@dataclass(frozen=True, slots=True)
class SignedAnnotation:
    body: Annotation
    signature: Annotated[bytes, FixedLen(SIGNATURE_SIZE)]

    @property
    def digest(self) -> bytes:
        return sha256(encode_record(self.body))

    def encode(self) -> bytes:
        return encode_record(self)


def signed_message(digest: bytes) -> bytes:
    """The exact bytes an annotator signs for the record whose body hashes to `digest`."""
    return DOMAIN + digest


def sign_annotation(identity: Identity, body: Annotation) -> SignedAnnotation:
    """`body` signed by `identity`, which must be the body's annotator; ValueError otherwise."""
    if identity.public_key != body.annotator:
        raise ValueError("an annotation is signed by its own annotator's key only")
    encoded = encode_record(body)  # ValueError naming the field for an unencodable body
    return SignedAnnotation(body, identity.sign(signed_message(sha256(encoded))))


_LIMITS = Limits(max_frame=MAX_RECORD_BYTES, max_elements=0, max_dims=0, max_items=MAX_CHOICES,
                 dtypes=frozenset())


def decode_annotation(data: bytes) -> SignedAnnotation:
    """The record `data` encodes, with its bounds checked; RecordRefused ("oversized" or
    "malformed") otherwise. Says nothing yet about its signature or its task."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise RecordRefused("malformed", f"a record is bytes, got {type(data).__name__}")
    if len(data) > MAX_RECORD_BYTES:
        raise RecordRefused("oversized", f"{len(data)} bytes > {MAX_RECORD_BYTES}")
    try:
        record = decode_record(SignedAnnotation, bytes(data), _LIMITS)
    except DecodeError as e:
        raise RecordRefused("malformed", e.detail[:200]) from None
    body = record.body
    if len(body.text) > MAX_FREE_TEXT_CHARS:
        raise RecordRefused("oversized", f"answer text of {len(body.text)} characters > "
                                         f"{MAX_FREE_TEXT_CHARS}")
    for name in ("seq", "client_time_ms"):
        if not 0 <= getattr(body, name) <= MAX_INT:
            raise RecordRefused("malformed", f"{name} must be in 0..{MAX_INT}")
    if any(not 0 <= i <= MAX_INT for i in body.choice):
        raise RecordRefused("malformed", f"choice indices must be in 0..{MAX_INT}")
    return record
