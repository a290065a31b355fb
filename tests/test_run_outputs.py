"""What a run shows its user: run.png marks the faults, heals and attacks where they happened;
console tables never cut a number at 80 columns; the summary's times say what they measure;
`bench compression` puts its breaking point in words."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from matplotlib.patches import Rectangle
from rich.console import Console

import phalanx
from phalanx.apps.bench_compression import breaking_point_text
from phalanx.apps.bench_report import results_table
from phalanx.apps.plot import plot_run, run_figure
from phalanx.apps.runner import run_scenario
from phalanx.scenario.schema import parse_scenario

SCENARIOS = Path(phalanx.__file__).resolve().parent / "scenarios"

# 7 nodes (f = 2): a cut healed mid-run, a crash with its restart, and an attack from round 12
FAULTY: dict[str, Any] = {
    "name": "marks", "seed": 3, "nodes": {"count": 7},
    "links": {"latency": 0.005, "jitter": 0.001},
    "workload": {"kind": "linear", "dim": 4},
    "training": {"rounds": 20, "lr": 0.1, "momentum": 0.5, "step_time": 0.02,
                 "round_timeout": 0.3, "view_timeout": 1.0},
    "faults": [{"kind": "partition", "at_round": 3, "duration": 0.3,
                "groups": [[0, 1, 2, 3, 4], [5, 6]]},
               {"kind": "crash", "at_round": 10, "duration": 0.2, "nodes": [5]}],
    "byzantine": [{"nodes": [6], "behaviour": "sign_flip", "from_round": 12}],
}


def test_run_png_shades_each_fault_heal_and_attack_on_the_round_axis(tmp_path: Path) -> None:
    result = run_scenario(parse_scenario(FAULTY))
    fig, spans = run_figure(result)
    by_kind = {s.kind: s for s in spans}
    assert sorted(by_kind) == ["byzantine", "crash", "partition"] and len(spans) == 3
    # an at_round fault strikes when its round is first committed: the end of that round's bar
    cut, crash, attack = by_kind["partition"], by_kind["crash"], by_kind["byzantine"]
    assert cut.start == 3.5 and crash.start == 10.5 and attack.start == 11.5
    assert cut.label == "partition 0-4 | 5-6" and crash.label == "crash node 5"
    assert cut.healed and crash.healed and 3.5 < cut.end < 19.5 and 10.5 < crash.end < 19.5
    assert attack.end == 19.5 and not attack.healed  # to the last round's end
    # every panel (loss, latency) has each span shaded over exactly its rounds
    for ax in fig.axes[:2]:
        shaded = {(round(p.get_x(), 6), round(p.get_x() + p.get_width(), 6))
                  for p in ax.patches if isinstance(p, Rectangle) and p.get_alpha()}
        assert {(round(s.start, 6), round(s.end, 6)) for s in spans} <= shaded
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["partition 0-4 | 5-6", "crash node 5",
                      "Byzantine: sign_flip by node 6 from round 12", "heal / restart"]
    assert plot_run(result, tmp_path / "run.png") == spans
    assert (tmp_path / "run.png").stat().st_size > 10_000


def test_a_heal_after_the_last_round_is_said_so(tmp_path: Path) -> None:
    result = run_scenario(SCENARIOS / "partition.yaml")
    (cut,) = plot_run(result, tmp_path / "run.png")
    assert (cut.kind, cut.start, cut.end) == ("partition", 5.5, 29.5)
    assert re.fullmatch(r"healed at 4\.\d\d s, after the last round", cut.note), cut.note


def cli(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "phalanx.apps.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_run_at_80_columns_cuts_nothing_and_its_times_agree(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = cli("run", SCENARIOS / "partition.yaml", "--out", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "…" not in proc.stdout + proc.stderr
    assert max(map(len, proc.stdout.splitlines())) <= 80
    summary = json.loads((out / "summary.json").read_text())
    # the hash, folded onto two lines of its cell, is all there
    cells = "".join(re.findall(r"│ *(?:final_model_hash)? *│ ([0-9a-f]+) *│", proc.stdout))
    assert summary["final_model_hash"] in cells
    # the progress bar ends at the last honest commit of the last round; the run stops later,
    # once the nodes have been quiet for their view timeout
    rounds = pl.read_parquet(out / "rounds.parquet").filter(~pl.col("byzantine"))
    last = rounds.filter(pl.col("round") == rounds["round"].max())["time"].max()
    assert summary["last_commit_seconds"] == pytest.approx(last)
    bar = re.findall(r"committed at t=([\d.]+)s", proc.stderr)[-1]
    assert float(bar) == pytest.approx(summary["last_commit_seconds"], abs=0.005)
    assert summary["sim_seconds"] > summary["last_commit_seconds"]
    assert re.search(r"│ last_commit_seconds +│ [\d.]+ +│", proc.stdout)


ROWS = [("transformer", "sender Adam, topk 0.003 +leaky EF", "265,500", "12.3x", "1.9876",
         "+0.6%", "-", "0.097", "1.02x"),
        ("mlp", "none", "1,234,567", "1.0x", "0.5601", "+0.0%", "0.834", "0.123", "1.00x")]


@pytest.mark.parametrize("width", [140, 100, 80, 60, 40])
def test_bench_tables_keep_every_number_whole(width: int) -> None:
    table = results_table(
        "gradient compression at 10 Mbit/s (ratios against the uncompressed run)",
        ("workload", "method", "bytes/round", "fewer bytes", "final loss", "loss gap",
         "accuracy", "round s", "speed-up"), ROWS)
    console = Console(width=width, color_system=None)
    with console.capture() as capture:
        console.print(table)
    text = capture.get()
    assert "…" not in text and max(map(len, text.splitlines())) <= width
    numbers = {cell for row in ROWS for cell in row[2:] if cell != "-"}
    assert numbers <= set(re.split(r"[\s│┃]+", text)), text


@pytest.mark.parametrize(("holds", "breaks", "words"), [
    (0.01, 0.003, "within 2% of the uncompressed loss down to ratio 0.01; the largest ratio "
                  "more than 2% above it is 0.003"),
    (0.001, None, "within 2% of the uncompressed loss at every ratio tried (down to 0.001): "
                  "no breaking point in this range"),
    (None, 0.1, "more than 2% above the uncompressed loss at every ratio tried (the "
                "largest: 0.1)"),
])
def test_breaking_point_in_words(holds: float | None, breaks: float | None, words: str) -> None:
    text = breaking_point_text({"workload": "mlp", "sender_adam": False,
                                "smallest_ratio_within_2pct": holds,
                                "largest_ratio_beyond_2pct": breaks})
    assert text.startswith("mlp: top-k with error feedback ") and words in text
    assert "None" not in text
