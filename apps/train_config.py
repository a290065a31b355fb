"""The `phalanx train` configuration file: model, data and training sections, validated with
one-line errors naming the field (as scenario files are)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, model_validator

from phalanx.engine.model.config import FFN, ConfigError, GPTConfig, Positions
from phalanx.scenario.explain import invalid
from phalanx.scenario.schema import ScenarioError, Strict, read_yaml

Positive = Annotated[int, Field(ge=1)]
NonNegative = Annotated[int, Field(ge=0)]


class ModelSection(Strict):
    """GPTConfig's fields except `vocab_size`, which the data decides."""

    block_size: Positive = 64
    n_layer: Positive = 4
    n_head: Positive = 4
    n_kv_head: Positive | None = None
    n_embd: Positive = 128
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    bias: bool = False
    norm: Literal["rms", "layer"] = "rms"
    positions: Positions = "rotary"
    rope_base: Annotated[float, Field(gt=0)] = 10_000.0
    sliding_window: Positive | None = None
    ffn: FFN = "swiglu"
    ffn_hidden: Positive | None = None
    n_experts: Positive = 4
    top_k: Positive = 2
    capacity_factor: Annotated[float, Field(gt=0)] = 1.25
    aux_loss_coef: Annotated[float, Field(ge=0)] = 0.01
    z_loss_coef: Annotated[float, Field(ge=0)] = 0.0
    tie_weights: bool = True

    def gpt(self, vocab_size: int) -> GPTConfig:
        return GPTConfig(vocab_size=vocab_size, **self.model_dump())


class SyntheticSection(Strict):
    """A random order-k Markov source (engine/train/synthetic.py): its entropy rate is the
    best loss any model can reach."""

    vocab: Annotated[int, Field(ge=2, le=62)] = 16
    order: NonNegative = 2
    concentration: Annotated[float, Field(gt=0)] = 0.3
    seed: int = 0
    train_tokens: Positive = 1_000_000
    val_tokens: Positive = 100_000


class DataSection(Strict):
    kind: Literal["synthetic", "text", "prompt_completion"] = "synthetic"
    path: Path | None = None  # a text file, or a folder of .txt files
    tokenizer: Literal["char", "bpe"] = "char"
    vocab_size: Annotated[int, Field(ge=257)] = 512  # bpe only
    val_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1
    synthetic: SyntheticSection = SyntheticSection()

    @model_validator(mode="after")
    def _path_for_files(self) -> DataSection:
        if self.kind != "synthetic" and self.path is None:
            raise ValueError(f"data.kind {self.kind!r} needs data.path (or --data)")
        return self


class TrainSection(Strict):
    """A step trains on batch x accumulate sequences, in `accumulate` micro-batches of `batch`;
    with `memory_budget_mb`, in micro-batches as large as the budget allows (probed before
    training). On CUDA a step that runs out of memory is split finer and run again."""

    steps: Positive = 2000
    batch: Positive = 12
    accumulate: Positive = 1
    # tensors only (weights, optimizer state, activations), not the interpreter and libraries
    memory_budget_mb: Annotated[float, Field(gt=0)] | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when there is one
    lr: Annotated[float, Field(gt=0)] = 1e-3
    min_lr: Annotated[float, Field(ge=0)] = 1e-4
    warmup: NonNegative = 100
    weight_decay: Annotated[float, Field(ge=0)] = 0.1
    beta2: Annotated[float, Field(gt=0, lt=1)] = 0.99
    grad_clip: Annotated[float, Field(gt=0)] | None = 1.0
    optimizer: Literal["adamw", "sam"] = "adamw"
    sam_rho: Annotated[float, Field(gt=0)] = 0.05
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    checkpointing: bool = False  # gradient checkpointing
    seed: int = 1337
    threads: Positive = 1  # torch intra-op threads (one is steadiest on shared machines)
    eval_every: Positive = 250
    eval_batches: Positive | None = None  # None: the whole validation stream
    sample_every: NonNegative = 0  # 0: one sample at the end only
    sample_tokens: Positive = 200
    checkpoint_every: NonNegative = 0  # 0: at the end only
    prefetch: Positive = 4  # batches built ahead by the loader threads
    workers: Positive = 1


class Reference(Strict):
    """A published result for the same configuration, printed beside ours."""

    val_loss: float
    source: str


class TrainFile(Strict):
    name: str = "train"
    reference: Reference | None = None
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    train: TrainSection = TrainSection()


def parse_train_file(data: Any, source: str) -> TrainFile:
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: expected a mapping of fields at the top level")
    try:
        parsed = TrainFile.model_validate(data)
        parsed.model.gpt(vocab_size=2)  # the model's own consistency checks, early
    except ValidationError as err:
        raise invalid(err, source, TrainFile) from None
    except ConfigError as err:
        raise ScenarioError(f"{source}: model: {err}") from None
    return parsed


def load_train_file(path: Path, overrides: dict[str, Any] | None = None) -> TrainFile:
    """The file at `path`, with `overrides` ({"data.path": ..., "train.steps": ...}) applied
    before validation."""
    data = read_yaml(path, "training config")
    if data is None:
        data = {}
    if isinstance(data, dict):
        for dotted, value in (overrides or {}).items():
            section, key = dotted.split(".")
            data = {**data, section: {**(data.get(section) or {}), key: value}}
    return parse_train_file(data, str(path))
