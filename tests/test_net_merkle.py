"""Merkle roots and per-chunk proofs."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.net.merkle import (
    CHUNK_SIZE,
    chunk_count,
    chunks,
    merkle_proof,
    merkle_root,
    verify_chunk,
)


def leaf(chunk: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + chunk).digest()


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def check_all_chunks(data: bytes, chunk_size: int) -> None:
    root = merkle_root(data, chunk_size)
    parts = chunks(data, chunk_size)
    n = len(parts)
    assert n == chunk_count(len(data), chunk_size)
    assert b"".join(parts) == data
    for i, chunk in enumerate(parts):
        proof = merkle_proof(data, i, chunk_size)
        assert verify_chunk(root, i, n, chunk, proof)
        assert not verify_chunk(root, i, n, chunk + b"\x00", proof)
        for j in range(n):  # a proof is only good for its own index
            if j != i:
                assert not verify_chunk(root, j, n, chunk, proof)
        if chunk:
            flipped = bytes([chunk[0] ^ 1]) + chunk[1:]
            assert not verify_chunk(root, i, n, flipped, proof)


@pytest.mark.parametrize("chunk_size", [CHUNK_SIZE, 64])
def test_edge_sizes(chunk_size: int) -> None:
    for size in (0, 1, chunk_size - 1, chunk_size, chunk_size + 1, 5 * chunk_size + 3):
        check_all_chunks(os.urandom(size), chunk_size)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(1, 48))
def test_random_payloads(data: bytes, chunk_size: int) -> None:
    check_all_chunks(data, chunk_size)


def test_structure() -> None:
    assert merkle_root(b"") == leaf(b"")
    small = os.urandom(100)
    assert merkle_root(small) == leaf(small)  # one chunk: root is its leaf hash
    data = b"a" * 4 + b"b" * 4 + b"c" * 2
    l0, l1, l2 = leaf(b"aaaa"), leaf(b"bbbb"), leaf(b"cc")
    assert merkle_root(data, 4) == node(node(l0, l1), l2)  # odd node promoted unchanged
    assert merkle_proof(data, 2, 4) == [(True, node(l0, l1))]
    assert merkle_proof(data, 0, 4) == [(False, l1), (False, l2)]
    assert merkle_proof(small, 0) == []
    assert chunks(b"") == [b""] and chunk_count(0) == 1


def test_tampered_and_garbage_proofs() -> None:
    data = os.urandom(5 * 64 + 3)
    root = merkle_root(data, 64)
    chunk = chunks(data, 64)[1]
    proof = merkle_proof(data, 1, 64)
    assert verify_chunk(root, 1, 6, chunk, proof)
    assert not verify_chunk(root, 1, 6, chunk, proof[:-1])
    assert not verify_chunk(root, 1, 6, chunk, [*proof, proof[-1]])
    assert not verify_chunk(root, 1, 6, chunk, [(not proof[0][0], proof[0][1]), *proof[1:]])
    assert not verify_chunk(root, 1, 6, chunk, [(proof[0][0], bytes(32)), *proof[1:]])
    for garbage in (None, [None], [(True,)], [(1, proof[0][1])], [(True, b"x")]):
        assert not verify_chunk(root, 1, 6, chunk, garbage)  # type: ignore[arg-type]
    assert not verify_chunk(root, -1, 6, chunk, proof)
    assert not verify_chunk(root, 6, 6, chunk, proof)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        merkle_root(b"x", 0)
    with pytest.raises(IndexError):
        merkle_proof(b"x" * 10, 3, 4)
