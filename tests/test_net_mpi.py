"""The MPI transport, end to end: 4 ranks under `mpiexec` run tests/mpi_ranks.py, each writes what
it saw, and these tests judge the files. Every launch must also exit 0 within a timeout, which is
the clean-shutdown check (no rank stuck in close() or MPI_Finalize)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mpi_ranks import (
    FLOOD_BOUND,
    FLOOD_FRAMES,
    FLOOD_SIZE,
    OVERSIZE_MAX,
    STRAGGLER_CLOSE,
    schedule,
)

RANKS = 4
SCRIPT = Path(__file__).resolve().parent / "mpi_ranks.py"
MPIEXEC = shutil.which("mpiexec")
needs_mpiexec = pytest.mark.skipif(MPIEXEC is None, reason="mpiexec is not on PATH (the mpich "
                                   "wheel or a system MPI provides it)")


def launch(mode: str, out: Path, timeout: float = 60.0,
           clean: bool = True) -> list[dict[str, Any]]:
    """Run every rank in `mode`; fail (never hang) unless all exit 0 within `timeout` (and,
    if `clean`, every close() completed its drain and final barrier)."""
    assert MPIEXEC is not None
    proc = subprocess.Popen([MPIEXEC, "-n", str(RANKS), sys.executable, str(SCRIPT), mode,
                             str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # hydra forwards it and cleans up every rank
        try:
            output, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        pytest.fail(f"mpiexec {mode} did not finish within {timeout} s:\n{output[-3000:]}")
    assert proc.returncode == 0, f"mpiexec {mode} exited {proc.returncode}:\n{output[-3000:]}"
    results = [json.loads((out / f"rank-{r}.json").read_text()) for r in range(RANKS)]
    if clean:
        for result in results:
            assert result["closed_cleanly"], result
    return results


@needs_mpiexec
def test_all_to_all_frames_arrive_complete_and_in_order(tmp_path: Path) -> None:
    results = launch("exchange", tmp_path)
    sizes = {size for r in range(RANKS) for dest in range(RANKS) if dest != r
             for size in schedule("exchange", r, dest)}
    assert {0, 1 << 20} <= sizes
    for result in results:
        assert result["errors"] == [], result["errors"]
        assert result["frames_received"] == (RANKS - 1) * len(schedule("exchange", 0, 1))
        assert result["dropped_full"] == 0
        assert result["refused_large"] == 0
    assert sum(r["bytes_sent"] for r in results) == sum(r["bytes_received"] for r in results)


@needs_mpiexec
def test_oversized_frames_are_discarded_and_later_frames_still_arrive(tmp_path: Path) -> None:
    results = launch("oversize", tmp_path)
    too_large = sum(size > OVERSIZE_MAX for size in schedule("oversize", 0, 1))
    assert too_large >= 2
    for result in results:
        assert result["errors"] == [], result["errors"]  # everything else, in order
        assert result["refused_large"] == (RANKS - 1) * too_large


@needs_mpiexec
def test_flooding_a_peer_drops_beyond_the_bound(tmp_path: Path) -> None:
    sender, receiver = launch("flood", tmp_path)[:2]
    accepted = sender["accepted"]
    assert sender["dropped_full"] > 0
    assert len(accepted) + sender["dropped_full"] == FLOOD_FRAMES
    assert sender["most_pending"] <= FLOOD_BOUND
    # Unbounded, the frames would hold FLOOD_FRAMES * FLOOD_SIZE = 250 MiB.
    assert sender["rss_growth_kib"] * 1024 < FLOOD_FRAMES * FLOOD_SIZE // 4
    assert receiver["received_seqs"]["0"] == accepted  # every accepted frame, in order


@needs_mpiexec
def test_staggered_shutdown_after_traffic_and_idle_ranks_do_not_spin(tmp_path: Path) -> None:
    results = launch("shutdown", tmp_path)
    for result in results:
        assert result["errors"] == [], result["errors"]  # frames sent just before close arrive
        # With 4 ranks on 2 cores, a rank that busy-polled would burn about half a core.
        assert result["idle_cpu"] < 0.15, result["idle_cpu"]
    # The first rank to close waits the longest for the others, polling without spinning.
    assert results[0]["close_s"] > 0.5
    assert results[0]["close_cpu"] < 0.3


@needs_mpiexec
def test_close_gives_up_on_a_straggler_and_no_rank_hangs(tmp_path: Path) -> None:
    results = launch("straggler", tmp_path, timeout=30.0, clean=False)
    for result in results:
        assert result["close_s"] < STRAGGLER_CLOSE + 0.5
    # The punctual ranks never heard rank 1 say goodbye in time; they left anyway.
    assert not any(results[r]["closed_cleanly"] for r in (0, 2, 3))


def test_phalanx_net_imports_without_mpi4py() -> None:
    code = ("import pkgutil, sys; sys.modules['mpi4py'] = None; import phalanx.net; "
            "[__import__(f'phalanx.net.{m.name}') for m in pkgutil.iter_modules("
            "phalanx.net.__path__) if m.name != 'mpi']")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
