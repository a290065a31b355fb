"""Tokenizers: exact ids, exact round trips, compression, determinism, save/load and bad input."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.engine.model.tokenizer import (
    EOT,
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    TokenizerError,
    load_tokenizer,
    train_tokenizer,
)

_STORY = (
    "the king and queen of a small kingdom were walking in the garden when they saw "
    "that every flower had turned to gold and the people came to see what was happening"
)
_WORDS = _STORY.split()


def _corpus(n_sentences: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 12))).capitalize() + ".\n"
        for _ in range(n_sentences)
    ]


CORPUS = _corpus(150, seed=0)  # ~6 KB of English-like text
HELD_OUT = "".join(_corpus(20, seed=1))  # same style, different sentences


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(CORPUS, vocab_size=400)


@pytest.fixture(scope="module")
def char() -> CharTokenizer:
    return CharTokenizer.train("hello world")


# --- char -------------------------------------------------------------------------------------


def test_char_ids_are_positions_in_the_sorted_alphabet(char: CharTokenizer) -> None:
    # sorted(set("hello world")) == [" ", "d", "e", "h", "l", "o", "r", "w"]
    assert char.chars == [" ", "d", "e", "h", "l", "o", "r", "w"]
    assert char.vocab_size == 8
    assert char.encode("hello world") == [3, 2, 4, 4, 5, 0, 7, 5, 6, 4, 1]
    assert char.decode([7, 5, 6, 4, 1]) == "world"
    assert char.encode("") == []


def test_char_vocabulary_does_not_depend_on_corpus_order_or_split() -> None:
    a = CharTokenizer.train(["ba", "c"])
    b = train_tokenizer("char", "cab")
    assert a.chars == b.chars == ["a", "b", "c"]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="hello world"))
def test_char_round_trip(text: str) -> None:
    tok = CharTokenizer.train("hello world")
    ids = tok.encode(text)
    assert len(ids) == len(text)
    assert tok.decode(ids) == text


def test_char_unknown_character_names_character_and_position(char: CharTokenizer) -> None:
    with pytest.raises(TokenizerError, match=r"'!' at position 5") as info:
        char.encode("hello! world")
    assert "\n" not in str(info.value)
    # the first unknown character is reported, also past the first one
    with pytest.raises(TokenizerError, match=r"'\\n' at position 3"):
        char.encode("hel\nx")


@pytest.mark.parametrize("bad", [8, -1, 1000])
def test_char_decode_out_of_range_names_the_id(char: CharTokenizer, bad: int) -> None:
    with pytest.raises(TokenizerError, match=rf"token id {bad} is out of range \[0, 8\)"):
        char.decode([0, bad])


def test_char_vocab_size_is_an_upper_bound() -> None:
    assert train_tokenizer("char", "abc", vocab_size=3).vocab_size == 3
    with pytest.raises(TokenizerError, match="3 distinct characters"):
        train_tokenizer("char", "abc", vocab_size=2)
    with pytest.raises(TokenizerError, match="non-empty"):
        CharTokenizer.train("")


# --- bpe --------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_bpe_round_trips_any_text(bpe: BPETokenizer, text: str) -> None:
    assert bpe.decode(bpe.encode(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "   leading spaces",
        "trailing spaces   ",
        "line one\nline two\n\n\r\n\ttabbed",
        "emoji 🎉👩‍👩‍👧 and flags 🇫🇷, CJK 日本語, accents éàü",
        "\x00\x7f\u200b zero-width and control",
        f"a document{EOT}the next one",
        "the king and queen",
    ],
)
def test_bpe_round_trips_edge_cases(bpe: BPETokenizer, text: str) -> None:
    assert bpe.decode(bpe.encode(text)) == text


def test_bpe_compresses_text_like_its_corpus(bpe: BPETokenizer) -> None:
    n_bytes = len(HELD_OUT.encode("utf-8"))
    n_tokens = len(bpe.encode(HELD_OUT))
    # merges for the frequent words must give far fewer tokens than bytes (measured about 4x)
    assert n_tokens < n_bytes / 2.5


def test_bpe_vocab_size_is_respected(bpe: BPETokenizer) -> None:
    # 400 is more than this corpus supports (min_frequency=2): fewer tokens, never more
    assert 257 < bpe.vocab_size <= 400
    # a size the corpus can fill is met exactly: 256 bytes + EOT + 43 merges
    assert BPETokenizer.train(CORPUS, vocab_size=300).vocab_size == 300
    assert max(bpe.encode(HELD_OUT + "🎉 rare words zyzzyva")) < bpe.vocab_size
    assert BPETokenizer.train(CORPUS[:20]).vocab_size <= 512  # default size


def test_bpe_rejects_a_vocabulary_smaller_than_the_bytes() -> None:
    with pytest.raises(TokenizerError, match="at least 257"):
        BPETokenizer.train(CORPUS, vocab_size=100)


def test_bpe_training_is_deterministic(bpe: BPETokenizer) -> None:
    again = train_tokenizer("bpe", list(CORPUS), vocab_size=400)
    assert isinstance(again, BPETokenizer)
    sample = HELD_OUT + " 🎉 ünïcödé"
    assert again.encode(sample) == bpe.encode(sample)
    assert again._tok.to_str() == bpe._tok.to_str()  # same merges, same ids


def test_bpe_eot_is_one_special_token(bpe: BPETokenizer) -> None:
    assert 0 <= bpe.eot_id < bpe.vocab_size
    assert bpe.decode([bpe.eot_id]) == EOT
    assert bpe.encode(EOT) == [bpe.eot_id]
    assert bpe.encode(f"a{EOT}b").count(bpe.eot_id) == 1


@pytest.mark.parametrize("bad", [-1, 400, 10**9])
def test_bpe_decode_out_of_range_names_the_id(bpe: BPETokenizer, bad: int) -> None:
    with pytest.raises(TokenizerError, match=rf"token id {bad} is out of range"):
        bpe.decode([1, bad])


def test_bpe_lone_surrogate_is_a_tokenizer_error(bpe: BPETokenizer) -> None:
    with pytest.raises(TokenizerError, match="position 2"):
        bpe.encode("ab\udc80c")


# --- both: factory, save and load -------------------------------------------------------------


SAMPLES = ["", "hello world", "the garden of gold\n", "  hold the door  "]


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_save_then_load_gives_the_same_tokenizer(kind: str, tmp_path: Path) -> None:
    alphabet_corpus = [*CORPUS, "hello world", "  hold the door  "]
    tok = train_tokenizer(kind, alphabet_corpus, vocab_size=300)
    path = tmp_path / "tok.json"
    tok.save(path)
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved["kind"] == kind
    loaded = load_tokenizer(path)
    assert type(loaded) is type(tok)
    assert loaded.vocab_size == tok.vocab_size
    for text in [*SAMPLES, HELD_OUT]:
        assert loaded.encode(text) == tok.encode(text)
        assert loaded.decode(tok.encode(text)) == text
    assert loaded.decode(range(loaded.vocab_size)) == tok.decode(range(tok.vocab_size))


def test_saved_char_vocabulary_with_unusual_characters(tmp_path: Path) -> None:
    tok = CharTokenizer.train('é"\\\n🎉\ud800')  # quotes, escapes, astral, lone surrogate
    tok.save(tmp_path / "c.json")
    assert load_tokenizer(tmp_path / "c.json").chars == tok.chars  # type: ignore[attr-defined]


def test_factory_rejects_an_unknown_kind() -> None:
    with pytest.raises(TokenizerError, match="unknown tokenizer kind 'wordpiece'"):
        train_tokenizer("wordpiece", CORPUS)


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "no such file"),
        ("{not json", "not valid JSON"),
        (b"\xff\xfe\x00", "not UTF-8"),
        ("[1, 2]", "JSON object"),
        ('{"chars": "abc"}', "missing 'kind'"),
        ('{"kind": "wordpiece"}', "unknown tokenizer kind 'wordpiece'"),
        ('{"kind": 3}', "unknown tokenizer kind 3"),
        ('{"kind": "char"}', "'chars' must be a non-empty string"),
        ('{"kind": "char", "chars": "ba"}', "sorted"),
        ('{"kind": "bpe"}', "'tokenizer' must be"),
        ('{"kind": "bpe", "tokenizer": {"model": 1}}', "bad 'tokenizer' spec"),
    ],
)
def test_load_errors_name_the_file_and_the_problem(
    tmp_path: Path, content: str | bytes | None, problem: str
) -> None:
    path = tmp_path / "tok.json"
    if content is not None:
        _write(path, content)
    with pytest.raises(TokenizerError) as info:
        load_tokenizer(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert problem in message
    assert "\n" not in message


def test_tokenizer_is_abstract() -> None:
    with pytest.raises(TypeError):
        Tokenizer()  # type: ignore[abstract]
    assert {CharTokenizer.kind, BPETokenizer.kind} == {"char", "bpe"}
