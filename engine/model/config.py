"""The decoder's hyperparameters, checked once where they are made."""

from __future__ import annotations

import dataclasses
import json
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
    capacity_factor: float = 1.25  # expert capacity = factor * top_k * tokens / n_experts
    aux_loss_coef: float = 0.01  # Switch load-balancing loss weight
    z_loss_coef: float = 0.0  # router z-loss weight (ST-MoE)
    tie_weights: bool = True  # the LM head shares the token embedding

    def __post_init__(self) -> None:
        positive = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "n_experts",
                    "top_k")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd {self.n_embd} is not a multiple of n_head {self.n_head}")
        if self.positions not in ("rotary", "learned"):
            raise ConfigError(f"positions must be 'rotary' or 'learned', got {self.positions!r}")
        if self.positions == "rotary" and self.head_dim % 2:
            raise ConfigError(f"head size {self.head_dim} must be even for rotary positions")
        if self.kv_heads < 1 or self.n_head % self.kv_heads:
            raise ConfigError(f"n_kv_head {self.n_kv_head} must divide n_head {self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.sliding_window is not None and self.sliding_window < 1:
            raise ConfigError(f"sliding_window must be >= 1, got {self.sliding_window}")
        if self.norm not in ("rms", "layer"):
            raise ConfigError(f"norm must be 'rms' or 'layer', got {self.norm!r}")
        if self.ffn not in ("swiglu", "gelu", "moe"):
            raise ConfigError(f"ffn must be 'swiglu', 'gelu' or 'moe', got {self.ffn!r}")
        if self.top_k > self.n_experts:
            raise ConfigError(f"top_k {self.top_k} exceeds n_experts {self.n_experts}")
        if self.capacity_factor <= 0:
            raise ConfigError(f"capacity_factor must be > 0, got {self.capacity_factor}")
        if self.ffn_hidden is not None and self.ffn_hidden < 1:
            raise ConfigError(f"ffn_hidden must be >= 1, got {self.ffn_hidden}")

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
