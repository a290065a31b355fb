"""Hashing and Ed25519 identities (PyNaCl)."""

from __future__ import annotations

import functools
import hashlib
import os
import struct
from collections import OrderedDict
from pathlib import Path

from nacl.signing import SigningKey, VerifyKey

SEED_SIZE = 32
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64

_DERIVE_DOMAIN = b"phalanx/identity/v1"
_DERIVE_PACK = struct.Struct(">qq")  # root_seed, node_id as signed 64-bit big-endian


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class Identity:
    """A node's Ed25519 signing key. The seed is the whole secret; repr never shows it."""

    __slots__ = ("_key", "_public")

    def __init__(self, signing_key: SigningKey) -> None:
        self._key = signing_key
        self._public = bytes(signing_key.verify_key)

    @classmethod
    def generate(cls) -> Identity:
        return cls(SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        if not isinstance(seed, bytes) or len(seed) != SEED_SIZE:
            raise ValueError(f"seed must be {SEED_SIZE} bytes")
        return cls(SigningKey(seed))

    @classmethod
    def derive(cls, root_seed: int, node_id: int) -> Identity:
        """Deterministic key for simulations: the same (root_seed, node_id) gives the same key."""
        try:
            packed = _DERIVE_PACK.pack(root_seed, node_id)
        except struct.error as e:
            raise ValueError(f"root_seed and node_id must fit in signed 64 bits: {e}") from None
        return cls.from_seed(sha256(_DERIVE_DOMAIN + packed))

    @property
    def public_key(self) -> bytes:
        return self._public

    @property
    def seed(self) -> bytes:
        return bytes(self._key)

    def sign(self, data: bytes) -> bytes:
        """64-byte detached signature."""
        return self._key.sign(data).signature

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the seed as hex, readable by the owner only; atomic so a crash never leaves a
        half-written key behind."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            # The open() mode is ignored when tmp already existed, hence the explicit chmod.
            os.fchmod(f.fileno(), 0o600)
            f.write(self.seed.hex() + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Identity:
        text = Path(path).read_text(encoding="ascii").strip()
        try:
            seed = bytes.fromhex(text)
        except ValueError:
            seed = b""
        if len(seed) != SEED_SIZE:
            raise ValueError(f"{path}: key file must hold a {2 * SEED_SIZE}-character hex seed")
        return cls.from_seed(seed)

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> Identity:
        if Path(path).exists():
            return cls.load(path)
        identity = cls.generate()
        identity.save(path)
        return identity

    def __repr__(self) -> str:
        return f"Identity(public_key={self._public.hex()[:16]}...)"


@functools.lru_cache(maxsize=4096)
def _verify_key(public_key: bytes) -> VerifyKey:
    # Parsing the key is a noticeable share of a verification; peers are few, so memoize.
    return VerifyKey(public_key)


def verify_signature(public_key: bytes, data: bytes, signature: bytes) -> bool:
    """True iff `signature` is a valid Ed25519 signature of `data` by `public_key`.

    Never raises: any malformed input (wrong types, lengths, invalid point) is just False.
    """
    if not (
        type(public_key) is bytes
        and len(public_key) == PUBLIC_KEY_SIZE
        and type(signature) is bytes
        and len(signature) == SIGNATURE_SIZE
        and isinstance(data, bytes | bytearray | memoryview)
    ):
        return False
    try:
        _verify_key(public_key).verify(bytes(data), signature)
    except Exception:  # BadSignatureError, CryptoError, or anything libsodium dislikes
        return False
    return True


class VerifyCache:
    """Verify-once cache for the simulator, where every node of a process checks the same
    signatures. Keys include the full signature, so a forged signature over the same key and
    data is a different entry and still gets verified (and rejected)."""

    def __init__(self, maxsize: int = 1_000_000) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._cache: OrderedDict[tuple[bytes, bytes, bytes], bool] = OrderedDict()

    def verify(self, public_key: bytes, data: bytes, signature: bytes) -> bool:
        if not (
            type(public_key) is bytes
            and type(signature) is bytes
            and isinstance(data, bytes | bytearray | memoryview)
        ):
            return False
        key = (public_key, sha256(data), signature)
        cached = self._cache.get(key)
        if cached is not None:
            self.hits += 1
            self._cache.move_to_end(key)
            return cached
        self.misses += 1
        ok = verify_signature(public_key, data, signature)
        self._cache[key] = ok
        if len(self._cache) > self.maxsize:
            self._cache.popitem(last=False)
        return ok

    __call__ = verify

    def __len__(self) -> int:
        return len(self._cache)
