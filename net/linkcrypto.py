"""Record protection for an established link: ChaCha20-Poly1305 (IETF) with implicit nonces.

Each direction has its own key (see handshake.session_keys) and its own counter, so a nonce is
never reused under a key. The counter is not sent: both ends count records, which means a
dropped, reordered, replayed or altered record fails authentication and the link is closed.
`PlainRecords` is the same interface for unencrypted links, so the transport never branches.
"""

from __future__ import annotations

import struct
from typing import Protocol

import nacl.bindings
import nacl.exceptions

TAG_SIZE = nacl.bindings.crypto_aead_chacha20poly1305_ietf_ABYTES
_NONCE = struct.Struct("<4xQ")  # 12 bytes: four zero bytes, then a 64-bit record counter
_LAST_COUNTER = 2**64 - 1


class DecryptError(Exception):
    """A record failed authentication (tampered, replayed, reordered or under the wrong key)."""


class RecordCodec(Protocol):
    overhead: int

    def seal(self, plaintext: bytes) -> bytes: ...

    def open(self, record: bytes) -> bytes: ...


class PlainRecords:
    """No protection: records pass through unchanged."""

    overhead = 0

    def seal(self, plaintext: bytes) -> bytes:
        return plaintext

    def open(self, record: bytes) -> bytes:
        return record


class SealedRecords:
    """One direction of an encrypted link; use one instance to seal and another to open."""

    overhead = TAG_SIZE

    def __init__(self, key: bytes) -> None:
        if len(key) != nacl.bindings.crypto_aead_chacha20poly1305_ietf_KEYBYTES:
            raise ValueError("session key must be 32 bytes")
        self._key = key
        self._counter = 0

    def _next_nonce(self) -> bytes:
        if self._counter == _LAST_COUNTER:  # unreachable in practice; never wrap around
            raise DecryptError("record counter exhausted; the link must be re-established")
        nonce = _NONCE.pack(self._counter)
        self._counter += 1
        return nonce

    def seal(self, plaintext: bytes) -> bytes:
        return nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(
            plaintext, None, self._next_nonce(), self._key)

    def open(self, record: bytes) -> bytes:
        try:
            return nacl.bindings.crypto_aead_chacha20poly1305_ietf_decrypt(
                record, None, self._next_nonce(), self._key)
        except nacl.exceptions.CryptoError:
            raise DecryptError("record failed authentication") from None


def record_codecs(send_key: bytes | None,
                  recv_key: bytes | None) -> tuple[RecordCodec, RecordCodec]:
    """(sealer, opener) for a link: encrypted when the handshake produced keys."""
    if send_key is None or recv_key is None:
        return PlainRecords(), PlainRecords()
    return SealedRecords(send_key), SealedRecords(recv_key)
