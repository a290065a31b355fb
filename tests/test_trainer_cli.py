"""`phalanx train`: the standalone trainer end to end, on tiny models (seconds each)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from phalanx.apps.cli import app
from phalanx.engine.model.io import load_model

TINY = {
    "name": "tiny",
    "model": {"block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16},
    "data": {"kind": "synthetic",
             "synthetic": {"vocab": 6, "order": 1, "train_tokens": 20_000, "val_tokens": 2_000}},
    "train": {"steps": 40, "batch": 8, "lr": 1e-2, "warmup": 5, "eval_every": 20,
              "sample_tokens": 20},
}


def write(tmp_path: Path, data: dict[str, object], name: str = "train.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def train(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["train", *args])
    return result.exit_code, result.output


def test_trains_on_the_synthetic_corpus_and_writes_its_outputs(tmp_path: Path) -> None:
    code, output = train(str(write(tmp_path, TINY)), "--out", str(tmp_path / "run"))
    assert code == 0, output
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {"model", "checkpoint.pt", "metrics.json",
                                               "summary.json"}
    rows = json.loads((run / "metrics.json").read_text())
    assert [r["step"] for r in rows] == [20, 40]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["entropy_rate"] > 0 and "entropy rate H" in output
    assert summary["final_val_loss"] < 1.79  # ln 6: it learned something in 40 steps
    assert summary["val_minus_entropy_rate"] == pytest.approx(
        summary["final_val_loss"] - summary["entropy_rate"])
    model, tokenizer = load_model(run / "model")
    assert tokenizer is not None and tokenizer.vocab_size == 6
    assert model.config.n_embd == 16


def test_resuming_continues_exactly(tmp_path: Path) -> None:
    config = write(tmp_path, TINY)
    code, output = train(str(config), "--out", str(tmp_path / "straight"))
    assert code == 0, output
    assert train(str(config), "--until", "20", "--out", str(tmp_path / "split"))[0] == 0
    code, output = train(str(config), "--resume", "--out", str(tmp_path / "split"))
    assert code == 0 and "resumed at step 20" in output, output
    a, _ = load_model(tmp_path / "straight" / "model")
    b, _ = load_model(tmp_path / "split" / "model")
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_prompt_completion_and_plain_text_files(tmp_path: Path) -> None:
    lines = tmp_path / "pairs.txt"
    lines.write_text("I like to cook in the |kitchen\nthe sky is |blue\n" * 40)
    pairs = {**TINY, "data": {"kind": "prompt_completion", "path": str(lines)}}
    code, output = train(str(write(tmp_path, pairs)), "--out", str(tmp_path / "pc"))
    assert code == 0, output
    text = tmp_path / "text.txt"
    text.write_text("to be or not to be, that is the question. " * 60)
    code, output = train(str(write(tmp_path, TINY)), "--data", str(text), "--out",
                         str(tmp_path / "txt"))
    assert code == 0 and "text.txt" in output, output


def test_a_memory_budget_picks_the_micro_batch_and_keeps_the_tokens(tmp_path: Path) -> None:
    """A budget that fits about 3 of a step's 8 sequences: the trainer probes, splits each step
    into micro-batches that fit, and trains on the same tokens (the loss matches the run
    without a budget)."""
    code, output = train(str(write(tmp_path, TINY)), "--out", str(tmp_path / "whole"))
    assert code == 0, output
    from phalanx.engine.train.micro_batch import MB
    probe = {"train": {**TINY["train"], "memory_budget_mb": 1000}}  # type: ignore[dict-item]
    code, output = train(str(write(tmp_path, {**TINY, **probe}, "p.yaml")), "--out",
                         str(tmp_path / "probe"))
    assert code == 0, output
    measured = json.loads((tmp_path / "probe" / "summary.json").read_text())["memory_probe"]
    state, per = measured["state_mb"], measured["per_sequence_mb"]
    one = measured["measured_mb"]["1"]
    budget = (state + one + 2.5 * per) * MB / MB  # room for about 3 sequences
    tight = {"train": {**TINY["train"], "memory_budget_mb": budget}}  # type: ignore[dict-item]
    code, output = train(str(write(tmp_path, {**TINY, **tight}, "t.yaml")), "--out",
                         str(tmp_path / "tight"))
    assert code == 0, output
    assert "memory budget" in output and "micro-batches of" in output
    summary = json.loads((tmp_path / "tight" / "summary.json").read_text())
    assert 2 <= summary["micro_batch"] < 8 and summary["sequences_per_step"] == 8
    assert summary["memory_probe"]["peak_mb"] <= budget
    whole = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert summary["final_val_loss"] == pytest.approx(whole["final_val_loss"], abs=2e-3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a CPU machine")
def test_cuda_without_a_gpu_and_a_hopeless_budget_are_one_line_errors(tmp_path: Path) -> None:
    for change, message in (({"device": "cuda"}, "torch sees no CUDA device"),
                            ({"memory_budget_mb": 0.02}, "too small for a micro-batch")):
        data = {**TINY, "train": {**TINY["train"], **change}}  # type: ignore[dict-item]
        code, output = train(str(write(tmp_path, data)), "--out", str(tmp_path / "bad"))
        assert code == 2 and message in output, output
        assert "Traceback" not in output and len(output.strip().splitlines()) <= 2


@pytest.mark.parametrize(("change", "message"), [
    ({"train": {"steps": 0}}, "train.steps"),
    ({"model": {"n_embd": 15}}, "n_head"),
    ({"data": {"kind": "text"}}, "needs data.path"),
    ({"colour": "red"}, "colour"),
    ({"data": {"kind": "text", "path": "/nonexistent/corpus.txt"}}, "cannot read"),
])
def test_bad_configs_are_one_line_errors(tmp_path: Path, change: dict[str, object],
                                         message: str) -> None:
    data = {**TINY, **change}
    code, output = train(str(write(tmp_path, data)), "--out", str(tmp_path / "bad"))
    assert code == 2 and message in output, output
    assert "Traceback" not in output and len(output.strip().splitlines()) <= 2
