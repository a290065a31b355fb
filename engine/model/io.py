"""A trained model on disk: one folder with `model.safetensors` (weights), `config.json` (the
GPTConfig) and, when there is one, `tokenizer.json`.

safetensors holds raw tensors only (no pickle, so loading a folder runs no code from it); the
LM head tied to the embedding is stored once and tied again on load.
"""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_model as load_weights
from safetensors.torch import save_model as save_weights

from phalanx.engine.model.config import ConfigError, GPTConfig
from phalanx.engine.model.gpt import GPT
from phalanx.engine.model.tokenizer import Tokenizer, load_tokenizer

WEIGHTS, CONFIG, TOKENIZER = "model.safetensors", "config.json", "tokenizer.json"


def save_model(folder: Path, model: GPT, tokenizer: Tokenizer | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(model, str(folder / WEIGHTS))
    model.config.save(folder / CONFIG)
    if tokenizer is not None:
        tokenizer.save(folder / TOKENIZER)


def load_model(folder: Path) -> tuple[GPT, Tokenizer | None]:
    """The model saved in `folder` (in eval mode) and its tokenizer, if one was saved."""
    config = GPTConfig.load(folder / CONFIG)
    model = GPT(config)
    weights = folder / WEIGHTS
    if not weights.exists():
        raise ConfigError(f"{folder}: no {WEIGHTS}")
    try:
        load_weights(model, str(weights))  # strict: every tensor present, every shape right
    except (SafetensorError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{weights}: does not fit the config ({first})") from None
    tokenizer = load_tokenizer(folder / TOKENIZER) if (folder / TOKENIZER).exists() else None
    return model.eval(), tokenizer
