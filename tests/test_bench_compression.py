"""`phalanx bench compression` on a short run: every method is measured beside the dense run,
and the figures hang together (fewer bytes where the method sends fewer, round latency in line
with the bytes each link carries)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from rich.console import Console

from phalanx.apps.bench_compression import run_bench


def test_every_method_is_measured_beside_the_dense_run(tmp_path: Path) -> None:
    out = tmp_path / "compression.json"
    report = run_bench(["mlp"], (0.1, 0.01), 12, out, Console(quiet=True))
    rows = {r["method"]: r for r in report["rows"]}
    assert set(rows) >= {"none", "topk 0.1 +EF", "topk 0.1 no EF", "topk 0.01 +EF", "fp16",
                         "bf16", "int8", "sign +EF", "randomk 0.1", "powersgd r2 +EF"}
    assert all(r["rounds_committed"] == 12 and r["hashes_agree"] for r in rows.values())
    assert rows["none"]["bytes_reduction"] == 1.0
    # gradient payloads: top-k sends a float32 and its gap's bits (~6 at ratio 0.1) per kept
    # entry, fp16 2 bytes per entry, sign 1 bit
    assert 6.0 < rows["topk 0.1 +EF"]["gradient_bytes_reduction"] < 9.0
    assert 1.8 < rows["fp16"]["gradient_bytes_reduction"] < 2.05
    assert rows["sign +EF"]["gradient_bytes_reduction"] > 20
    assert rows["topk 0.01 +EF"]["bytes_per_round"] < rows["topk 0.1 +EF"]["bytes_per_round"]
    # the wire sets the pace: latency grows with bytes at about the links' rate
    fit = report["wire_fits"][0]
    assert fit["r2"] > 0.9
    assert 0.5 < fit["seconds_per_link_byte"] / fit["links_seconds_per_byte"] < 1.5
    assert json.loads(out.read_text())["rows"] and len(pl.read_parquet(out.with_suffix(
        ".parquet"))) == len(rows)


def test_an_adam_workload_also_runs_adam_at_the_sender(tmp_path: Path) -> None:
    report = run_bench(["transformer"], (0.1,), 4, tmp_path / "c.json", Console(quiet=True),
                       seed=5)
    rows = {r["method"]: r for r in report["rows"]}
    sender = [r for r in rows.values() if r["sender_adam"]]
    assert {r["method"] for r in sender} == {"sender Adam, dense"} | {
        f"sender Adam, topk {r:g} +leaky EF" for r in (0.1, 0.05, 0.02, 0.01, 0.003, 0.001)}
    assert all(r["hashes_agree"] and r["rounds_committed"] == 4 and r["seed"] == 5
               for r in rows.values())
    assert rows["sender Adam, dense"]["bytes_reduction"] == 1.0  # beside the Adam dense run
    assert rows["sender Adam, topk 0.05 +leaky EF"]["feedback_decay"] == 0.8
    assert rows["sender Adam, topk 0.05 +leaky EF"]["gradient_bytes_reduction"] > 10
    assert [b["sender_adam"] for b in report["breaking_points"]] == [False, True]
