"""The link handshake and record protection, sans-IO: bytes in, bytes or a refusal out."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.net.crypto import Identity
from phalanx.net.handshake import (
    DIALER,
    HELLO_SIZES,
    PROTOCOL_VERSION,
    REASONS,
    AcceptorHandshake,
    DialerHandshake,
    HandshakeError,
    Hello,
    Session,
    parse_hello,
    signed_transcript,
    transcript_hash,
)
from phalanx.net.linkcrypto import (
    TAG_SIZE,
    DecryptError,
    PlainRecords,
    SealedRecords,
    record_codecs,
)

IDS = {i: Identity.derive(3, i) for i in range(4)}
KEYRING = {i: ident.public_key for i, ident in IDS.items()}
STRANGER = Identity.derive(4, 0)


def dialer(node: int = 1, expect: int = 0, encrypt: bool = False, **kw) -> DialerHandshake:
    return DialerHandshake(IDS[node], node, KEYRING, expect=expect, encrypt=encrypt, **kw)


def acceptor(node: int = 0, encrypt: bool = False, **kw) -> AcceptorHandshake:
    return AcceptorHandshake(IDS[node], node, KEYRING, encrypt=encrypt, **kw)


def complete(d: DialerHandshake, a: AcceptorHandshake) -> tuple[Session, Session]:
    hello_a, sig_a = a.on_hello(d.hello)
    sig_d, dialer_session = d.on_reply(hello_a, sig_a)
    return dialer_session, a.on_auth(sig_d)


def refused(reason: str) -> AbstractContextManager[Any]:
    assert reason in REASONS
    return pytest.raises(HandshakeError, match=f"^{reason}:")


@pytest.mark.parametrize("encrypt", [False, True])
def test_both_sides_learn_who_is_on_the_other_end(encrypt: bool) -> None:
    at_dialer, at_acceptor = complete(dialer(encrypt=encrypt), acceptor(encrypt=encrypt))
    assert (at_dialer.peer, at_dialer.peer_key) == (0, KEYRING[0])
    assert (at_acceptor.peer, at_acceptor.peer_key) == (1, KEYRING[1])
    assert at_dialer.transcript == at_acceptor.transcript
    if encrypt:  # one key per direction, and each side's send key is the other's receive key
        assert at_dialer.send_key == at_acceptor.recv_key != at_dialer.recv_key
        assert at_dialer.recv_key == at_acceptor.send_key
    else:
        assert at_dialer.send_key is at_dialer.recv_key is None


def test_every_connection_gets_a_fresh_transcript_and_fresh_keys() -> None:
    first, _ = complete(dialer(encrypt=True), acceptor(encrypt=True))
    second, _ = complete(dialer(encrypt=True), acceptor(encrypt=True))
    assert first.transcript != second.transcript
    assert first.send_key != second.send_key


@pytest.mark.parametrize(("hello", "reason"), [
    (Hello(PROTOCOL_VERSION, 9, STRANGER.public_key, bytes(32), None), "unknown_peer"),
    (Hello(PROTOCOL_VERSION, 1, STRANGER.public_key, bytes(32), None), "key_mismatch"),
    (Hello(PROTOCOL_VERSION, 0, KEYRING[0], bytes(32), None), "self_connection"),
    (Hello(PROTOCOL_VERSION + 1, 1, KEYRING[1], bytes(32), None), "bad_version"),
    (Hello(PROTOCOL_VERSION, 1, KEYRING[1], bytes(32), bytes(range(32))),
     "encryption_mismatch"),
])
def test_acceptor_refuses_a_hello_it_cannot_admit(hello: Hello, reason: str) -> None:
    with refused(reason):
        acceptor().on_hello(hello.encode())


def test_banned_peer_is_refused_before_anything_is_signed() -> None:
    with refused("banned"):
        acceptor(banned={1}).on_hello(dialer().hello)


def test_dialer_refuses_a_node_other_than_the_one_it_meant() -> None:
    d = dialer(expect=2)
    with refused("wrong_peer"):
        d.on_reply(*acceptor().on_hello(d.hello))


def test_signature_by_another_key_is_refused() -> None:
    d, a = dialer(), acceptor()
    hello_a, sig_a = a.on_hello(d.hello)
    d.on_reply(hello_a, sig_a)
    with refused("bad_handshake_signature"):
        a.on_auth(IDS[2].sign(b"anything"))


def test_signature_recorded_on_another_connection_is_refused() -> None:
    d = dialer()
    hello_a, sig_a = acceptor().on_hello(d.hello)
    recorded_sig, _ = d.on_reply(hello_a, sig_a)
    replay = acceptor()
    replay.on_hello(d.hello)  # same dialer hello, but the acceptor's nonce is new
    with refused("bad_handshake_signature"):
        replay.on_auth(recorded_sig)


def test_acceptor_signature_reflected_as_the_dialers_is_refused() -> None:
    # The acceptor's own signature over this very transcript: the role label makes it fail.
    a, d = acceptor(), dialer()
    _, sig_a = a.on_hello(d.hello)
    with refused("bad_handshake_signature"):
        a.on_auth(sig_a)


def test_signature_before_hello_and_malformed_signature_are_refused() -> None:
    with refused("malformed_handshake"):
        acceptor().on_auth(bytes(64))
    d, a = dialer(), acceptor()
    a.on_hello(d.hello)
    with refused("malformed_handshake"):
        a.on_auth(bytes(10))


def test_degenerate_ephemeral_key_is_refused() -> None:
    # A correctly signed hello whose X25519 key is a low-order point (here zero): the shared
    # secret would be all zeros, i.e. known to everyone.
    forged = Hello(PROTOCOL_VERSION, 1, KEYRING[1], bytes(32), bytes(32)).encode()
    a = acceptor(encrypt=True)
    hello_a, _ = a.on_hello(forged)
    signature = IDS[1].sign(signed_transcript(DIALER, transcript_hash(forged, hello_a)))
    with refused("malformed_handshake"):
        a.on_auth(signature)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2 * max(HELLO_SIZES)))
def test_any_bytes_parse_as_a_hello_or_are_refused(data: bytes) -> None:
    try:
        hello = parse_hello(data)
    except HandshakeError as e:
        assert e.reason in ("malformed_handshake", "bad_version")
        return
    assert hello.encode() == data


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200), st.binary(max_size=100))
def test_any_bytes_in_place_of_a_reply_or_signature_are_refused(first: bytes,
                                                                second: bytes) -> None:
    d = dialer()
    with pytest.raises(HandshakeError):
        d.on_reply(first, second)
    a = acceptor()
    a.on_hello(d.hello)
    with pytest.raises(HandshakeError):
        a.on_auth(second)


def test_sealed_records_round_trip_with_fresh_nonces() -> None:
    sender, receiver = SealedRecords(bytes(32)), SealedRecords(bytes(32))
    first, second = sender.seal(b"same"), sender.seal(b"same")
    assert first != second and len(first) == 4 + TAG_SIZE
    assert receiver.open(first) == receiver.open(second) == b"same"


@pytest.mark.parametrize("attack", ["flip", "replay", "reorder", "truncate", "other_key"])
def test_altered_records_fail_authentication(attack: str) -> None:
    sender, receiver = SealedRecords(bytes(32)), SealedRecords(bytes(32))
    a, b = sender.seal(b"first"), sender.seal(b"second")
    if attack == "flip":
        stream = [bytes([a[0] ^ 1]) + a[1:]]
    elif attack == "replay":
        receiver.open(a)
        stream = [a]
    elif attack == "reorder":
        stream = [b]
    elif attack == "truncate":
        stream = [a[:-1]]
    else:
        stream = [SealedRecords(bytes(range(32))).seal(b"first")]
    with pytest.raises(DecryptError):
        for record in stream:
            receiver.open(record)


def test_record_codecs_are_plain_without_keys() -> None:
    sealer, opener = record_codecs(None, None)
    assert isinstance(sealer, PlainRecords) and opener.open(sealer.seal(b"x")) == b"x"
    sealer, opener = record_codecs(bytes(32), bytes(32))
    assert opener.open(sealer.seal(b"x")) == b"x"
