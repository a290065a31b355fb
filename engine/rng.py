"""Named, seeded random streams: every random draw in a run derives from one root seed.

A stream is identified by a path of names (e.g. ("data", 3, 17) for node 3's batch of round
17), so drawing from one stream never shifts another and results do not depend on the order in
which nodes ask for their streams. Python's `hash()` is salted per process, so names are hashed
with SHA-256 instead.
"""

from __future__ import annotations

import hashlib

import numpy as np


def _spawn_key(names: tuple[str | int, ...]) -> tuple[int, ...]:
    digest = hashlib.sha256("/".join(map(str, names)).encode()).digest()
    return tuple(int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4))


class RngStreams:
    """Factory of independent numpy Generators derived from a root seed and a name path."""

    def __init__(self, root_seed: int) -> None:
        self.root_seed = int(root_seed)

    def stream(self, *names: str | int) -> np.random.Generator:
        seq = np.random.SeedSequence(entropy=self.root_seed, spawn_key=_spawn_key(names))
        return np.random.Generator(np.random.PCG64(seq))

    def seed(self, *names: str | int) -> int:
        """A 63-bit integer seed for libraries that take an int (networkx, torch)."""
        return int(self.stream(*names).integers(0, 2**63 - 1))
