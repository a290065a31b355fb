"""Tokenizers for the transformer: text <-> token ids, one class per algorithm.

- :class:`CharTokenizer` (``"char"``): one token per character, the vocabulary being the
  sorted alphabet of a training corpus. Meant for the synthetic corpus and for small
  Shakespeare-style character models, where a tiny vocabulary keeps the embedding table small and
  every id is easy to read by eye.
- :class:`BPETokenizer` (``"bpe"``): byte-level BPE as in GPT-2, trained with the Hugging Face
  ``tokenizers`` library. It starts from the 256 bytes, so any Unicode string encodes and
  decodes back exactly, and learned merges make common text several times shorter than its
  UTF-8 bytes.

Every tokenizer is used the same way::

    tok = train_tokenizer("bpe", corpus, vocab_size=512)
    ids = tok.encode("To be, or not to be")
    assert tok.decode(ids) == "To be, or not to be"
    tok.save(path)                   # one UTF-8 JSON file with a "kind" field
    tok = load_tokenizer(path)       # dispatches on "kind"

Training is deterministic: the same corpus and vocabulary size give the same ids on every run
and every machine, so nodes that train their tokenizer independently still agree on token ids.
Every failure (unknown character, id out of range, bad file) raises :class:`TokenizerError`
with a one-line message.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import tokenizers as hf

__all__ = [
    "EOT",
    "BPETokenizer",
    "CharTokenizer",
    "Tokenizer",
    "TokenizerError",
    "load_tokenizer",
    "train_tokenizer",
]

#: GPT-2's document separator, the one special token of :class:`BPETokenizer`
EOT = "<|endoftext|>"


class TokenizerError(ValueError):
    """A text, id or file the tokenizer cannot handle; the message is one line."""


def _documents(corpus: Iterable[str] | str) -> Iterator[str]:
    # A bare string is one document; iterating it would yield characters.
    if isinstance(corpus, str):
        yield corpus
    else:
        yield from corpus


class Tokenizer(ABC):
    """Text <-> token ids. Subclasses set :attr:`kind` and implement the abstract methods."""

    #: the ``"kind"`` field of saved files, and the name :func:`train_tokenizer` accepts
    kind: ClassVar[str]

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids; every id is in ``range(vocab_size)``."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``; ``decode(encode(s)) == s``."""

    @classmethod
    @abstractmethod
    def train(cls, corpus: Iterable[str] | str, vocab_size: int | None = None) -> Tokenizer:
        """A tokenizer fitted to ``corpus`` (a string or an iterable of documents)."""

    @abstractmethod
    def _state(self) -> dict[str, Any]:
        """JSON-ready fields (without ``kind``) that :meth:`_from_state` rebuilds from."""

    @classmethod
    @abstractmethod
    def _from_state(cls, state: dict[str, Any], path: Path) -> Tokenizer:
        """Rebuild from a loaded file; raise :class:`TokenizerError` naming ``path``."""

    def save(self, path: Path | str) -> None:
        """Write one UTF-8 JSON file with ``kind`` and everything needed to rebuild."""
        # ensure_ascii escapes everything outside ASCII, so any Python string (even a lone
        # surrogate in a character vocabulary) survives the file; the result is still UTF-8.
        state = {"kind": self.kind, **self._state()}
        Path(path).write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")

    def _check_ids(self, ids: Sequence[int]) -> list[int]:
        # Without this check a negative id would index from the end of a list, and the HF
        # library silently drops unknown ids: both would hide a bug in the caller.
        n = self.vocab_size
        out = [int(i) for i in ids]
        for i in out:
            if not 0 <= i < n:
                raise TokenizerError(f"token id {i} is out of range [0, {n})")
        return out


class CharTokenizer(Tokenizer):
    """One token per character; ids are positions in the sorted alphabet of the corpus."""

    kind = "char"

    def __init__(self, chars: Iterable[str]) -> None:
        self._chars: list[str] = sorted(set(chars))
        if not self._chars:
            raise TokenizerError("a character tokenizer needs a non-empty alphabet")
        if any(len(c) != 1 for c in self._chars):
            raise TokenizerError("a character vocabulary holds single characters only")
        self._ids = {c: i for i, c in enumerate(self._chars)}

    @classmethod
    def train(cls, corpus: Iterable[str] | str, vocab_size: int | None = None) -> CharTokenizer:
        """The alphabet of ``corpus``. ``vocab_size``, if given, is an upper bound (the size of
        the model's embedding table): a larger alphabet raises :class:`TokenizerError`."""
        alphabet: set[str] = set()
        for doc in _documents(corpus):
            alphabet.update(doc)
        if vocab_size is not None and len(alphabet) > vocab_size:
            raise TokenizerError(
                f"the corpus has {len(alphabet)} distinct characters, more than "
                f"vocab_size={vocab_size}"
            )
        return cls(alphabet)

    @property
    def vocab_size(self) -> int:
        return len(self._chars)

    @property
    def chars(self) -> list[str]:
        """The vocabulary: ``chars[i]`` is the character of id ``i``."""
        return list(self._chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self._ids[c] for c in text]
        except KeyError:
            # Find the position only on failure, keeping the common path a single comprehension.
            pos = next(i for i, c in enumerate(text) if c not in self._ids)
            raise TokenizerError(
                f"character {text[pos]!r} at position {pos} is not in the vocabulary "
                f"({self.vocab_size} characters)"
            ) from None

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self._chars[i] for i in self._check_ids(ids))

    def _state(self) -> dict[str, Any]:
        # One string, so the file shows the alphabet in id order at a glance.
        return {"chars": "".join(self._chars)}

    @classmethod
    def _from_state(cls, state: dict[str, Any], path: Path) -> CharTokenizer:
        chars = state.get("chars")
        if not isinstance(chars, str) or not chars:
            raise TokenizerError(f"{path}: 'chars' must be a non-empty string")
        # Ids are positions in the sorted alphabet; a hand-edited, unsorted or repeating list
        # would silently renumber every token, so refuse it rather than re-sort it.
        if list(chars) != sorted(set(chars)):
            raise TokenizerError(f"{path}: 'chars' must be sorted and without repeats")
        return cls(chars)


class BPETokenizer(Tokenizer):
    """Byte-level BPE (GPT-2 style) over the Hugging Face ``tokenizers`` library.

    Id 0 is :data:`EOT`, ids 1-256 are the 256 byte symbols, the rest are learned merges. The library
    matches :data:`EOT` inside ordinary text too, and :meth:`decode` keeps it, so round trips
    stay exact even for text that contains the marker.
    """

    kind = "bpe"
    #: the default size: 256 bytes + EOT + 255 merges, plenty for small corpora
    DEFAULT_VOCAB_SIZE = 512
    #: 256 byte tokens + EOT: the smallest vocabulary that still encodes every string
    MIN_VOCAB_SIZE = 257

    def __init__(self, tokenizer: hf.Tokenizer) -> None:
        self._tok = tokenizer
        eot_id = tokenizer.token_to_id(EOT)
        if eot_id is None:
            raise TokenizerError(f"the BPE tokenizer has no {EOT} token")
        self._eot_id: int = eot_id
        self._vocab_size: int = tokenizer.get_vocab_size(with_added_tokens=True)

    @classmethod
    def train(cls, corpus: Iterable[str] | str, vocab_size: int | None = None) -> BPETokenizer:
        """Learn up to ``vocab_size`` tokens (default 512) from ``corpus``; merges need a pair
        seen at least twice, so a small corpus may yield fewer tokens than asked for.

        Deterministic: with tokenizers 0.23, separate processes (each with its own hash seeds,
        parallel or not) trained on the same corpus, even one where every pair ties, produced
        byte-identical tokenizers. Nothing in the library promises this, so the tests recheck it.
        """
        size = cls.DEFAULT_VOCAB_SIZE if vocab_size is None else vocab_size
        if size < cls.MIN_VOCAB_SIZE:
            raise TokenizerError(
                f"vocab_size={size} is too small for byte-level BPE: it needs at least "
                f"{cls.MIN_VOCAB_SIZE} (256 bytes + {EOT})"
            )
        tok = hf.Tokenizer(hf.models.BPE())
        # No prefix space: it would add a leading space that decode cannot tell from a real one.
        tok.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = hf.decoders.ByteLevel()
        trainer = hf.trainers.BpeTrainer(
            vocab_size=size,
            min_frequency=2,
            special_tokens=[EOT],
            # All 256 bytes from the start, whatever the corpus holds: any string then encodes.
            initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(_documents(corpus), trainer=trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def eot_id(self) -> int:
        """Id of :data:`EOT`, the end-of-document token."""
        return self._eot_id

    def encode(self, text: str) -> list[int]:
        try:
            return self._tok.encode(text).ids
        except TypeError:
            # Rust strings must be valid UTF-8; the only Python str that is not holds a lone
            # surrogate (e.g. from errors="surrogateescape").
            pos = next((i for i, c in enumerate(text) if "\ud800" <= c <= "\udfff"), None)
            if pos is None:
                raise
            raise TokenizerError(
                f"character {text[pos]!r} at position {pos} is a lone surrogate, not encodable"
            ) from None

    def decode(self, ids: Sequence[int]) -> str:
        # skip_special_tokens=False: the library's default would drop EOT and break round trips.
        return self._tok.decode(self._check_ids(ids), skip_special_tokens=False)

    def _state(self) -> dict[str, Any]:
        # The library's own JSON, embedded as an object (not a string) so the file stays readable.
        return {"tokenizer": json.loads(self._tok.to_str())}

    @classmethod
    def _from_state(cls, state: dict[str, Any], path: Path) -> BPETokenizer:
        spec = state.get("tokenizer")
        if not isinstance(spec, dict):
            raise TokenizerError(f"{path}: 'tokenizer' must be the tokenizers library's JSON")
        try:
            tok = hf.Tokenizer.from_str(json.dumps(spec))
        except Exception as exc:  # the library raises plain Exception on a bad spec
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise TokenizerError(f"{path}: bad 'tokenizer' spec: {msg}") from None
        try:
            return cls(tok)
        except TokenizerError as exc:
            raise TokenizerError(f"{path}: {exc}") from None


_KINDS: dict[str, type[Tokenizer]] = {cls.kind: cls for cls in (CharTokenizer, BPETokenizer)}


def _unknown_kind(kind: object) -> str:
    return f"unknown tokenizer kind {kind!r}; expected one of {', '.join(sorted(_KINDS))}"


def train_tokenizer(
    kind: str, corpus: Iterable[str] | str, vocab_size: int | None = None
) -> Tokenizer:
    """Train a tokenizer of ``kind`` ("char" or "bpe") on ``corpus``."""
    cls = _KINDS.get(kind)
    if cls is None:
        raise TokenizerError(_unknown_kind(kind))
    return cls.train(corpus, vocab_size)


def load_tokenizer(path: Path | str) -> Tokenizer:
    """Rebuild a tokenizer written by :meth:`Tokenizer.save`, whatever its kind."""
    path = Path(path)
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TokenizerError(f"{path}: no such file") from None
    except OSError as exc:
        raise TokenizerError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise TokenizerError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise TokenizerError(
            f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(state, dict):
        raise TokenizerError(f"{path}: expected a JSON object with a 'kind' field")
    if "kind" not in state:
        raise TokenizerError(f"{path}: missing 'kind' field")
    cls = _KINDS.get(state["kind"]) if isinstance(state["kind"], str) else None
    if cls is None:
        raise TokenizerError(f"{path}: {_unknown_kind(state['kind'])}")
    return cls._from_state(state, path)
