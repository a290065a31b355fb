"""The decoder's hyperparameters, checked once where they are made."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

FFN = Literal["swiglu", "gelu", "moe"]
Positions = Literal["rotary", "learned"]


class ConfigError(ValueError):
    """A model configuration that cannot be built; the message names the field."""


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int
    block_size: int = 256  # longest context the model is trained for
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int | None = None  # grouped-query attention: heads sharing keys/values (None: n_head)
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False
    norm: Literal["rms", "layer"] = "rms"
    norm_eps: float = 1e-5
    positions: Positions = "rotary"  # "learned": GPT-2's position embedding table
    rope_base: float = 10_000.0
    sliding_window: int | None = None  # attend to at most this many latest positions (self included)
    ffn: FFN = "swiglu"  # "gelu": GPT-2's two-matrix MLP
    # None: 8/3 of n_embd rounded up to a multiple of 8 for SwiGLU and experts (LLaMA's rule,
    # the parameters of a 4x GELU MLP), 4 n_embd for GELU
    ffn_hidden: int | None = None
    n_experts: int = 4
    top_k: int = 2
    capacity_factor: float = 1.25  # an expert keeps ceil(factor*top_k*(t+1)/E) of positions 0..t
    aux_loss_coef: float = 0.01  # Switch load-balancing loss weight
    z_loss_coef: float = 0.0  # router z-loss weight (ST-MoE)
    tie_weights: bool = True  # the LM head shares the token embedding

    def __post_init__(self) -> None:
        for name in _POSITIVE:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for broken, message in _RULES:
            if broken(self):
                raise ConfigError(message(self))

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def hidden(self) -> int:
        if self.ffn_hidden is not None:
            return self.ffn_hidden
        if self.ffn == "gelu":
            return 4 * self.n_embd
        return -(-8 * self.n_embd // 3 // 8) * 8

    @property
    def num_params(self) -> int:
        """The model's parameter count, by arithmetic (GPT(config).num_params() builds it)."""
        c, h, bias = self.n_embd, self.hidden, int(self.bias)
        norm = c * (2 if self.norm == "layer" and self.bias else 1)
        kv = self.kv_heads * self.head_dim
        attention = c * (c + 2 * kv) + bias * (c + 2 * kv) + c * c + bias * c
        if self.ffn == "moe":
            ffn = c * self.n_experts + 3 * self.n_experts * c * h
        else:
            mats = 3 if self.ffn == "swiglu" else 2
            ffn = mats * c * h + bias * ((mats - 1) * h + c)
        embeddings = self.vocab_size * c * (1 if self.tie_weights else 2)
        positions = self.block_size * c if self.positions == "learned" else 0
        return embeddings + positions + self.n_layer * (2 * norm + attention + ffn) + norm

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GPTConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model config fields {unknown}")
        try:
            return cls(**data)
        except TypeError as err:  # a missing required field
            raise ConfigError(str(err)) from None

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> GPTConfig:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"{path}: cannot read a model config ({err})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a model config is a JSON object")
        return cls.from_dict(data)


_POSITIVE = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "n_experts", "top_k")

_Rule = tuple[Callable[[GPTConfig], object], Callable[[GPTConfig], str]]

# (broken, message), checked in this order after _POSITIVE; the first broken rule is the error.
# Lazy, so a rule may rely on the ones before it (head_dim on n_head >= 1, n_head % kv_heads on
# kv_heads >= 1) and a bad value is reported before a later rule trips over it.
_RULES: tuple[_Rule, ...] = (
    (lambda c: c.n_embd % c.n_head,
     lambda c: f"n_embd {c.n_embd} is not a multiple of n_head {c.n_head}"),
    (lambda c: c.positions not in ("rotary", "learned"),
     lambda c: f"positions must be 'rotary' or 'learned', got {c.positions!r}"),
    (lambda c: c.positions == "rotary" and c.head_dim % 2,
     lambda c: f"head size {c.head_dim} must be even for rotary positions"),
    (lambda c: c.kv_heads < 1 or c.n_head % c.kv_heads,
     lambda c: f"n_kv_head {c.n_kv_head} must divide n_head {c.n_head}"),
    (lambda c: not 0.0 <= c.dropout < 1.0,
     lambda c: f"dropout must be in [0, 1), got {c.dropout}"),
    (lambda c: c.sliding_window is not None and c.sliding_window < 1,
     lambda c: f"sliding_window must be >= 1, got {c.sliding_window}"),
    (lambda c: c.norm not in ("rms", "layer"),
     lambda c: f"norm must be 'rms' or 'layer', got {c.norm!r}"),
    (lambda c: c.ffn not in ("swiglu", "gelu", "moe"),
     lambda c: f"ffn must be 'swiglu', 'gelu' or 'moe', got {c.ffn!r}"),
    (lambda c: c.top_k > c.n_experts,
     lambda c: f"top_k {c.top_k} exceeds n_experts {c.n_experts}"),
    (lambda c: c.capacity_factor <= 0,
     lambda c: f"capacity_factor must be > 0, got {c.capacity_factor}"),
    (lambda c: c.ffn_hidden is not None and c.ffn_hidden < 1,
     lambda c: f"ffn_hidden must be >= 1, got {c.ffn_hidden}"),
)
