"""`phalanx bench sim --against REV`: this build's simulator against another commit's, in one
run. Both run as fresh subprocesses, alternating (this, REV, this, REV, ...), so a machine that
gets busier or quieter during the run weighs on both alike; each run reports phalanx's events
per second as a share of bare SimPy's on the same traffic (`bench_sim.py`), and the summary is
the median share of each build and their difference."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from phalanx.apps.bench_report import results_table, save_report, stamp

ROOT = Path(__file__).resolve().parent.parent  # the repository (package root)


class AgainstError(RuntimeError):
    """The baseline cannot be checked out or run (one line)."""


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise AgainstError(f"git {' '.join(args)}: {done.stderr.strip() or 'failed'}")
    return done.stdout.strip()


def _one(python_path: str | None, counts: list[int], rounds: int, out: Path) -> dict[str, Any]:
    env = dict(os.environ)
    if python_path is not None:
        env["PYTHONPATH"] = python_path  # `phalanx` resolves to the baseline's tree
    command = [sys.executable, "-m", "phalanx.apps.cli", "bench", "sim", "--nodes",
               ",".join(map(str, counts)), "--rounds", str(rounds), "--out", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise AgainstError(f"bench sim failed ({'baseline' if python_path else 'this build'}):"
                           f" {tail}")
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def run_against(counts: list[int], rounds: int, rev: str, repeats: int, out_file: Path,
                console: Console) -> dict[str, Any]:
    commit = _git("rev-parse", "--verify", f"{rev}^{{commit}}")
    runs: dict[str, list[dict[str, Any]]] = {"this": [], "baseline": []}
    with tempfile.TemporaryDirectory(prefix="phalanx-against-") as tmp:
        tree, pkg = Path(tmp) / "tree", Path(tmp) / "pkg"
        _git("worktree", "add", "--detach", str(tree), commit)
        try:
            pkg.mkdir()
            (pkg / "phalanx").symlink_to(tree, target_is_directory=True)
            for i in range(repeats):
                for side, path in (("this", None), ("baseline", str(pkg))):
                    console.print(f"bench sim --against: run {i + 1}/{repeats}, {side} ...")
                    report = _one(path, counts, rounds, Path(tmp) / f"{side}-{i}.json")
                    runs[side].append(report)
        finally:
            _git("worktree", "remove", "--force", str(tree))
    rows = []
    for k, n in enumerate(counts):
        this = [r["results"][k]["ratio"] for r in runs["this"]]
        base = [r["results"][k]["ratio"] for r in runs["baseline"]]
        rows.append({"nodes": n, "ratios_this": this, "ratios_baseline": base,
                     "median_this": statistics.median(this),
                     "median_baseline": statistics.median(base),
                     "difference": statistics.median(this) - statistics.median(base)})
    report = {"benchmark": "sim-against", **stamp(), "baseline": commit,
              "this": _git("rev-parse", "HEAD") + (" (with uncommitted changes)"
                                                   if _git("status", "--porcelain", "-uno")
                                                   else ""),
              "rounds": rounds, "repeats": repeats, "results": rows, "runs": runs}
    save_report(report, out_file)
    console.print(results_table(
        f"phalanx/bare event rate, this build vs {commit[:10]} ({repeats} alternating runs "
        f"each, medians)",
        ("nodes", "this", "baseline", "this - baseline", "this (all runs)",
         "baseline (all runs)"),
        [(str(r["nodes"]), f"{r['median_this']:.3f}", f"{r['median_baseline']:.3f}",
          f"{r['difference']:+.3f}", " ".join(f"{x:.3f}" for x in r["ratios_this"]),
          " ".join(f"{x:.3f}" for x in r["ratios_baseline"])) for r in rows]))
    console.print(f"written to {out_file}")
    return report
