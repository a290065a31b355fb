"""Merkle tree over fixed-size chunks, so a large payload can be fetched and checked chunk by
chunk against the digest in its signed envelope.

Leaves are sha256(0x00 || chunk) and inner nodes sha256(0x01 || left || right): the domain
bytes stop a leaf from being passed off as an inner node (second-preimage attacks). An odd node
at the end of a level is promoted unchanged. An empty payload is one empty chunk, so every
payload has at least one leaf and a payload of one chunk has its leaf hash as root.
"""

from __future__ import annotations

import hashlib

CHUNK_SIZE = 65536
HASH_SIZE = 32

# One proof step: (sibling_is_left, sibling_hash), ordered from the leaf up. Levels where the
# path node is promoted have no step.
ProofStep = tuple[bool, bytes]


def _leaf(chunk: bytes | memoryview) -> bytes:
    h = hashlib.sha256(b"\x00")
    h.update(chunk)
    return h.digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _check_chunk_size(chunk_size: int) -> None:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")


def chunk_count(size: int, chunk_size: int = CHUNK_SIZE) -> int:
    """Number of chunks (leaves) of a payload of `size` bytes."""
    _check_chunk_size(chunk_size)
    return max(1, -(-size // chunk_size))


def chunks(data: bytes, chunk_size: int = CHUNK_SIZE) -> list[bytes]:
    _check_chunk_size(chunk_size)
    if not data:
        return [b""]
    return [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]


def _leaves(data: bytes, chunk_size: int) -> list[bytes]:
    view = memoryview(data)  # slices without copying the payload
    return [_leaf(view[i : i + chunk_size]) for i in range(0, max(len(data), 1), chunk_size)]


def _parent_level(level: list[bytes]) -> list[bytes]:
    parents = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
    if len(level) % 2:
        parents.append(level[-1])
    return parents


def merkle_root(data: bytes, chunk_size: int = CHUNK_SIZE) -> bytes:
    _check_chunk_size(chunk_size)
    if len(data) <= chunk_size:  # fast path: the common small message is a single leaf
        return _leaf(data)
    level = _leaves(data, chunk_size)
    while len(level) > 1:
        level = _parent_level(level)
    return level[0]


def merkle_proof(data: bytes, index: int, chunk_size: int = CHUNK_SIZE) -> list[ProofStep]:
    """Sibling hashes from chunk `index` up to the root."""
    _check_chunk_size(chunk_size)
    level = _leaves(data, chunk_size)
    if not 0 <= index < len(level):
        raise IndexError(f"chunk index {index} out of range for {len(level)} chunks")
    proof: list[ProofStep] = []
    while len(level) > 1:
        if index % 2:
            proof.append((True, level[index - 1]))
        elif index + 1 < len(level):
            proof.append((False, level[index + 1]))
        level = _parent_level(level)
        index //= 2
    return proof


def verify_chunk(
    root: bytes, index: int, n_chunks: int, chunk: bytes, proof: list[ProofStep]
) -> bool:
    """True iff `chunk` is chunk `index` of the `n_chunks`-chunk payload with this root.

    The proof's shape (which steps exist, on which side) is recomputed from index and n_chunks
    and must match exactly, so a valid proof cannot be replayed for another index. Never raises.
    """
    try:
        if not 0 <= index < n_chunks:
            return False
        h = _leaf(chunk)
        steps = iter(proof)
        pos, width = index, n_chunks
        while width > 1:
            if pos % 2 or pos + 1 < width:
                step = next(steps, None)
                if step is None:
                    return False
                is_left, sibling = step
                if is_left is not bool(pos % 2) or len(sibling) != HASH_SIZE:
                    return False
                h = _node(sibling, h) if is_left else _node(h, sibling)
            pos //= 2
            width = (width + 1) // 2
        return next(steps, None) is None and h == root
    except Exception:  # garbage proof structure from a peer is just an invalid proof
        return False
