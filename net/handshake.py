"""Mutual authentication of a TCP link, sans-IO: the transport moves bytes, this module decides.

Three messages, 1.5 round trips (the shape of SIGMA / Noise XX, with static keys known in
advance from the keyring):

    dialer   -> acceptor : hello_d
    acceptor -> dialer   : hello_a, sig_a = Sign_a(tag | "acceptor" | H(hello_d, hello_a))
    dialer   -> acceptor : sig_d = Sign_d(tag | "dialer"   | H(hello_d, hello_a))

A hello carries the protocol version, the sender's node id and Ed25519 key, a fresh 32-byte
nonce and, when the link is encrypted, an ephemeral X25519 key. Both nonces sit in the signed
transcript, so a signature recorded on one connection is worthless on any other; the role label
stops a signature being reflected back as the other side's. The acceptor speaks only after the
dialer's hello names a keyring member, so a scanner learns nothing and costs us no signature.
Session keys, one per direction, come from the X25519 secret keyed by the transcript hash.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions
from nacl.encoding import RawEncoder
from nacl.hash import blake2b
from nacl.public import PrivateKey

from .crypto import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Identity, sha256, verify_signature
from .errors import ReasonedError

PROTOCOL_VERSION = 1
NONCE_SIZE = 32
KEY_SIZE = 32  # X25519 public keys and the derived per-direction session keys
FLAG_ENCRYPT = 0x01

# version u8 | flags u8 | node id i64 | Ed25519 public key | nonce, then the X25519 key if any
_HELLO = struct.Struct(f">BBq{PUBLIC_KEY_SIZE}s{NONCE_SIZE}s")
HELLO_SIZES = (_HELLO.size, _HELLO.size + KEY_SIZE)
MAX_HANDSHAKE_RECORD = max(*HELLO_SIZES, SIGNATURE_SIZE)

_TAG = b"phalanx/link/v1"
DIALER, ACCEPTOR = b"dialer", b"acceptor"

REASONS: tuple[str, ...] = (
    "malformed_handshake",  # a hello or signature that does not parse
    "bad_version",
    "unknown_peer",  # node id not in the keyring
    "key_mismatch",  # node id known, but with another public key
    "self_connection",  # our own id came back to us
    "wrong_peer",  # the dialer reached a different node than it meant to
    "banned",
    "encryption_mismatch",  # one side wants an encrypted link, the other does not
    "bad_handshake_signature",
)


class HandshakeError(ReasonedError):
    """The peer failed authentication; `reason` is one of REASONS."""

    REASONS = REASONS


@dataclass(frozen=True, slots=True)
class Hello:
    version: int
    node_id: int
    public_key: bytes
    nonce: bytes
    ephemeral: bytes | None  # X25519 public key, present iff the sender wants encryption

    def encode(self) -> bytes:
        flags = FLAG_ENCRYPT if self.ephemeral is not None else 0
        head = _HELLO.pack(self.version, flags, self.node_id, self.public_key, self.nonce)
        return head + (self.ephemeral or b"")


def parse_hello(data: bytes) -> Hello:
    """Parse a hello; HandshakeError("malformed_handshake" | "bad_version") if it is not one."""
    if len(data) not in HELLO_SIZES:
        raise HandshakeError("malformed_handshake", f"hello of {len(data)} bytes")
    version, flags, node_id, public_key, nonce = _HELLO.unpack_from(data)
    if version != PROTOCOL_VERSION:
        raise HandshakeError("bad_version", f"version {version}, expected {PROTOCOL_VERSION}")
    if flags & ~FLAG_ENCRYPT:
        raise HandshakeError("malformed_handshake", f"unknown flags {flags:#x}")
    encrypted = bool(flags & FLAG_ENCRYPT)
    if len(data) != HELLO_SIZES[encrypted]:
        raise HandshakeError("malformed_handshake", "hello length does not match its flags")
    ephemeral = data[_HELLO.size:] if encrypted else None
    return Hello(version, node_id, public_key, nonce, ephemeral)


def transcript_hash(dialer_hello: bytes, acceptor_hello: bytes) -> bytes:
    # Length-prefixed so no two pairs of hellos give the same bytes.
    sizes = struct.pack(">HH", len(dialer_hello), len(acceptor_hello))
    return sha256(_TAG + b"/transcript" + sizes + dialer_hello + acceptor_hello)


def signed_transcript(role: bytes, transcript: bytes) -> bytes:
    """What a side signs: the tag, its role (the direction) and the transcript hash."""
    return _TAG + b"/auth/" + role + b"/" + transcript


@dataclass(frozen=True, slots=True)
class Session:
    """An authenticated link: who is on the other end and, if encrypted, the session keys."""

    peer: int
    peer_key: bytes
    transcript: bytes
    send_key: bytes | None
    recv_key: bytes | None


def session_keys(secret: PrivateKey, peer_ephemeral: bytes, transcript: bytes,
                 role: bytes) -> tuple[bytes, bytes]:
    """(send, recv) keys for `role`: one key per direction, both bound to this transcript."""
    try:
        shared = nacl.bindings.crypto_scalarmult(bytes(secret), peer_ephemeral)
    except nacl.exceptions.CryptoError:  # a low-order point gives an all-zero secret
        raise HandshakeError("malformed_handshake", "degenerate X25519 key") from None
    both = blake2b(shared, digest_size=2 * KEY_SIZE, key=transcript, encoder=RawEncoder)
    dialer_to_acceptor, acceptor_to_dialer = both[:KEY_SIZE], both[KEY_SIZE:]
    if role == DIALER:
        return dialer_to_acceptor, acceptor_to_dialer
    return acceptor_to_dialer, dialer_to_acceptor


class _Side:
    """What both roles share: our hello, checking theirs against the keyring, and finishing."""

    role: bytes
    peer_role: bytes

    def __init__(self, identity: Identity, node_id: int, keyring: Mapping[int, bytes], *,
                 encrypt: bool, banned: Container[int] = (),
                 random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self.identity = identity
        self.node_id = node_id
        self.keyring = keyring
        self.banned = banned
        self._ephemeral = PrivateKey(random_bytes(KEY_SIZE)) if encrypt else None
        eph_public = bytes(self._ephemeral.public_key) if self._ephemeral else None
        self.hello = Hello(PROTOCOL_VERSION, node_id, identity.public_key,
                           random_bytes(NONCE_SIZE), eph_public).encode()

    def _admit(self, data: bytes) -> Hello:
        hello = parse_hello(data)
        expected_key = self.keyring.get(hello.node_id)
        if expected_key is None:
            raise HandshakeError("unknown_peer", f"node {hello.node_id} is not in the keyring")
        if hello.public_key != expected_key:
            raise HandshakeError("key_mismatch", f"node {hello.node_id} sent another key")
        if hello.node_id == self.node_id:
            raise HandshakeError("self_connection", "the peer has our own node id")
        if hello.node_id in self.banned:
            raise HandshakeError("banned", f"node {hello.node_id} is banned")
        if (hello.ephemeral is None) != (self._ephemeral is None):
            raise HandshakeError("encryption_mismatch", "peers disagree on link encryption")
        return hello

    def _sign(self, transcript: bytes) -> bytes:
        return self.identity.sign(signed_transcript(self.role, transcript))

    def _finish(self, peer: Hello, transcript: bytes, signature: bytes) -> Session:
        if len(signature) != SIGNATURE_SIZE:
            raise HandshakeError("malformed_handshake", f"signature of {len(signature)} bytes")
        signed = signed_transcript(self.peer_role, transcript)
        if not verify_signature(peer.public_key, signed, signature):
            raise HandshakeError("bad_handshake_signature", f"node {peer.node_id}")
        send_key = recv_key = None
        if self._ephemeral is not None and peer.ephemeral is not None:
            send_key, recv_key = session_keys(self._ephemeral, peer.ephemeral, transcript,
                                              self.role)
        return Session(peer.node_id, peer.public_key, transcript, send_key, recv_key)


class DialerHandshake(_Side):
    """The connecting side: send `hello`, then `on_reply(hello_a, sig_a)` -> (sig_d, session)."""

    role, peer_role = DIALER, ACCEPTOR

    def __init__(self, identity: Identity, node_id: int, keyring: Mapping[int, bytes], *,
                 expect: int, encrypt: bool, banned: Container[int] = (),
                 random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        super().__init__(identity, node_id, keyring, encrypt=encrypt, banned=banned,
                         random_bytes=random_bytes)
        self.expect = expect

    def on_reply(self, acceptor_hello: bytes, acceptor_sig: bytes) -> tuple[bytes, Session]:
        peer = self._admit(acceptor_hello)
        if peer.node_id != self.expect:
            raise HandshakeError("wrong_peer", f"reached node {peer.node_id}, "
                                 f"wanted {self.expect}")
        transcript = transcript_hash(self.hello, acceptor_hello)
        session = self._finish(peer, transcript, acceptor_sig)
        return self._sign(transcript), session


class AcceptorHandshake(_Side):
    """The listening side: `on_hello(hello_d)` -> (hello_a, sig_a), then `on_auth(sig_d)`."""

    role, peer_role = ACCEPTOR, DIALER
    _peer: Hello | None = None
    _transcript = b""

    def on_hello(self, dialer_hello: bytes) -> tuple[bytes, bytes]:
        self._peer = self._admit(dialer_hello)
        self._transcript = transcript_hash(dialer_hello, self.hello)
        return self.hello, self._sign(self._transcript)

    def on_auth(self, dialer_sig: bytes) -> Session:
        if self._peer is None:
            raise HandshakeError("malformed_handshake", "signature before hello")
        return self._finish(self._peer, self._transcript, dialer_sig)
