"""The `phalanx` command line (typer). Every user error is one line on stderr and exit code 2."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import polars as pl
import typer
from rich.console import Console
from rich.table import Table

from phalanx.sim.scenario import ScenarioError, load_scenario
from phalanx.sim.topology import TopologyError

# torch's profiler (the trainer's memory probe measures with it) logs each start and stop to
# stderr unless its level is set above those traces (6) before torch loads
os.environ.setdefault("KINETO_LOG_LEVEL", "6")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Decentralized, Byzantine-fault-tolerant training: simulate, run, measure.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that write JSON results.")
app.add_typer(bench_app, name="bench")

err = Console(stderr=True)
out = Console()


def fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def print_summary(result: object) -> None:
    from phalanx.apps.results import RunResult

    assert isinstance(result, RunResult)
    s = result.summary
    table = Table(title=f"{s['scenario']} (seed {s['seed']}, {s['mode']})", show_header=False)
    shown = ["nodes", "f", "rounds_planned", "min_rounds_committed", "distinct_final_hashes",
             "lagging_nodes", "down_at_end",
             "final_model_hash", "final_eval_loss", "final_eval_accuracy",
             "synced_commits", "exclusions", "reputation", "view_changes", "sim_seconds", "wall_seconds", "messages_delivered",
             "messages_dropped", "dropped_by_reason", "messages_per_round", "rejected_by_reason",
             "sim_events_per_wall_second", "peak_memory_mb"]
    for key in shown:
        if key in s:
            table.add_row(key, _summary_text(key, s[key]))
    out.print(table)
    if result.out:
        out.print(f"outputs in {result.out}/ (rounds.parquet, events.parquet, "
                  f"scenario.resolved.yaml, summary.json, run.png)")
    for failure in result.failures:
        err.print(f"[bold red]expect failed:[/] {failure}", highlight=False, soft_wrap=True)
    if not result.failures and result.scenario.expect.model_dump(exclude_none=True):
        out.print("[green]all expectations hold[/]")


SHOWN_PEERS = 8  # reputation lists longer than this show their lowest scores only


def _summary_text(key: str, value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if key == "reputation" and isinstance(value, dict) and len(value) > SHOWN_PEERS:
        lowest = sorted(value.items(), key=lambda kv: (kv[1], int(kv[0])))[:SHOWN_PEERS]
        shown = ", ".join(f"{peer}: {score}" for peer, score in lowest)
        return f"{len(value)} peers; lowest: {shown} (all in summary.json)"
    return str(value)


@app.command()
def run(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML file")],
    seed: Annotated[int | None, typer.Option(help="override the scenario's seed")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="output folder "
                                                 "(default: runs/<scenario name>)")] = None,
    real: Annotated[bool, typer.Option("--real", help="run the nodes as OS processes over "
                                       "TCP on loopback instead of simulating them")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress output")] = False,
) -> None:
    """Run a scenario; exit code 1 when an `expect:` assertion fails."""
    from phalanx.apps.real import RealRunError
    from phalanx.apps.runner import run_scenario

    try:
        loaded = load_scenario(scenario, seed)
        target = out_dir or Path("runs") / (loaded.name + ("-real" if real else ""))
        result = run_scenario(loaded, out=target, real=real, progress=not quiet)
    except ScenarioError as e:
        raise fail(str(e)) from None
    except TopologyError as e:
        raise fail(f"{scenario}: topology: {e}") from None
    except RealRunError as e:
        raise fail(f"{scenario}: --real: {e}") from None
    except OSError as e:  # e.g. --out names a file, or a folder we may not write
        raise fail(f"cannot write outputs to {e.filename or target}: {e.strerror}") from None
    print_summary(result)
    if result.failures:
        raise typer.Exit(1)


@app.command()
def sweep(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML file")],
    seeds: Annotated[int, typer.Option(help="how many seeds to run")] = 100,
    start: Annotated[int, typer.Option(help="first seed")] = 0,
    workers: Annotated[int | None, typer.Option(help="worker processes "
                                                "(default: one per CPU)")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="output folder "
                                                 "(default: runs/<scenario name>-sweep)")] = None,
    save_failures: Annotated[Path | None, typer.Option(
        "--save-failures", help="write <name>-seed<S>.yaml here for each failing seed")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Run a scenario over many seeds in parallel and check every run's invariants.

    Safety, agreement, liveness and nothing lost are checked per seed; exit code 1 when any is
    violated. Every failing seed replays with `phalanx run SCENARIO --seed S`."""
    from phalanx.apps.sweep import SweepError, print_report
    from phalanx.apps.sweep import sweep as run_sweep

    if seeds < 1:
        raise fail(f"--seeds: must be at least 1 (got {seeds})")
    if start < 0:
        raise fail(f"--start: must be at least 0 (got {start})")
    if workers is not None and workers < 1:
        raise fail(f"--workers: must be at least 1 (got {workers})")
    try:
        report = run_sweep(scenario, range(start, start + seeds), workers, out_dir,
                           save_failures=save_failures, progress=not quiet, console=err)
    except (ScenarioError, SweepError) as e:
        raise fail(str(e)) from None
    except TopologyError as e:
        raise fail(f"{scenario}: topology: {e}") from None
    except OSError as e:  # e.g. --out names a file, or a folder we may not write
        raise fail(f"cannot write outputs to {e.filename or out_dir}: {e.strerror}") from None
    print_report(report, out)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def validate(scenario: Annotated[Path, typer.Argument(help="scenario YAML file")]) -> None:
    """Check a scenario file (schema and topology) and print it with every default filled in."""
    from phalanx.engine.rng import RngStreams
    from phalanx.sim.world import build_graph_routes

    try:
        loaded = load_scenario(scenario)
        build_graph_routes(loaded, RngStreams(loaded.seed))
    except ScenarioError as e:
        raise fail(str(e)) from None
    except TopologyError as e:
        raise fail(f"{scenario}: topology: {e}") from None
    out.print(loaded.resolved_yaml(), highlight=False)


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="training config YAML (model, data, train)")],
    data: Annotated[Path | None, typer.Option(
        help="a text file or folder to train on (sets data.path; synthetic becomes text)")] = None,
    steps: Annotated[int | None, typer.Option(help="override train.steps")] = None,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="output folder (default: runs/train/<name>)")] = None,
    resume: Annotated[bool, typer.Option(help="continue from the output folder's checkpoint")
                      ] = False,
    until: Annotated[int | None, typer.Option(
        help="stop after this step (checkpointed), keeping the full schedule")] = None,
) -> None:
    """Train the transformer on one machine: progress, evaluation, samples, checkpoints."""
    from phalanx.apps.train import run_training
    from phalanx.apps.train_config import load_train_file
    from phalanx.engine.model.config import ConfigError
    from phalanx.engine.model.tokenizer import TokenizerError
    from phalanx.engine.train.data import DataError

    overrides: dict[str, object] = {}
    if data is not None:
        overrides["data.path"] = str(data)
    if steps is not None:
        overrides["train.steps"] = steps
    try:
        loaded = load_train_file(config, overrides)
        if data is not None and loaded.data.kind == "synthetic":
            loaded = load_train_file(config, {**overrides, "data.kind": "text"})
        target = out_dir or Path("runs") / "train" / loaded.name
        result = run_training(loaded, target, out, resume=resume, until=until)
    except ScenarioError as e:
        raise fail(str(e)) from None
    except (DataError, TokenizerError, ConfigError, ValueError) as e:
        raise fail(f"{config}: {e}") from None
    except OSError as e:
        raise fail(f"cannot write outputs: {e}") from None
    s = result.summary
    out.print(f"final validation loss {s['final_val_loss']:.4f} nats/token"
              + (f" (entropy rate H = {s['entropy_rate']:.4f}, gap {s['val_minus_entropy_rate']:+.4f})"
                 if s["entropy_rate"] else "")
              + f"; {s['tokens_per_second']:,.0f} tokens/s; kernels: {s['kernels'] or 'none'}; "
              f"outputs in {target}/")


@bench_app.command("sim")
def bench_sim(
    nodes: Annotated[str, typer.Option(help="comma-separated node counts")] = "100,1000",
    rounds: Annotated[int, typer.Option(help="rounds per run")] = 2,
    out_file: Annotated[Path, typer.Option("--out", help="JSON result file")] = Path(
        "benchmarks/out/sim.json"),
) -> None:
    """Simulated events per wall second: phalanx vs a bare-SimPy run of the same traffic."""
    from phalanx.apps.bench_sim import run_bench

    run_bench(_counts("--nodes", nodes, 4), rounds, out_file, out)


def _counts(option: str, value: str, least: int) -> list[int]:
    try:
        counts = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise fail(f"{option}: expected comma-separated integers (got {value!r})") from None
    if not counts or min(counts) < least:
        raise fail(f"{option}: each count must be at least {least} (got {value!r})")
    return counts


@bench_app.command("consensus")
def bench_consensus(
    nodes: Annotated[str, typer.Option(help="comma-separated node counts")] = "4,16,64,100,128",
    rounds: Annotated[int, typer.Option(help="rounds per run (at least 2)")] = 5,
    out_file: Annotated[Path, typer.Option("--out", help="JSON result file")] = Path(
        "benchmarks/out/consensus.json"),
) -> None:
    """Simulated commit latency per round and messages/bytes per round as n grows."""
    from phalanx.apps.bench_consensus import run_bench

    if rounds < 2:
        raise fail(f"--rounds: at least 2 rounds are needed to time one (got {rounds})")
    run_bench(_counts("--nodes", nodes, 4), rounds, out_file, out)


@bench_app.command("train")
def bench_train(
    steps: Annotated[int, typer.Option(help="steps per timed window")] = 30,
    repeats: Annotated[int, typer.Option(help="timed windows per side (alternating)")] = 3,
    out_file: Annotated[Path, typer.Option("--out", help="JSON result file")] = Path(
        "benchmarks/out/train.json"),
) -> None:
    """Training tokens/s of phalanx's step vs a plain PyTorch loop; peak memory."""
    from phalanx.apps.bench_train import Size, run_bench

    if steps < 1 or repeats < 1:
        raise fail(f"--steps and --repeats must be at least 1 (got {steps}, {repeats})")
    run_bench(Size(), steps, repeats, out_file, out)


@bench_app.command("kernels")
def bench_kernels(
    seq: Annotated[int, typer.Option(help="attention sequence length")] = 4096,
    out_file: Annotated[Path, typer.Option("--out", help="JSON result file")] = Path(
        "benchmarks/out/kernels.json"),
) -> None:
    """Triton kernels on CUDA against torch: time, TFLOP/s or GB/s, device peaks."""
    from phalanx.apps.bench_kernels import run_bench

    if seq < 16:
        raise fail(f"--seq: at least 16 (got {seq})")
    run_bench(seq, out_file, out)


@app.command()
def matrix(
    spec: Annotated[Path, typer.Argument(help="matrix YAML file, e.g. "
                                         "scenarios/byzantine/matrix.yaml")],
    group: Annotated[list[str] | None, typer.Option(help="run only these groups")] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes "
                                                "(default: one per CPU)")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="output folder (default: "
                                                 "runs/<matrix name>)")] = None,
    write: Annotated[Path | None, typer.Option(help="also write every cell as a scenario "
                                               "file here")] = None,
) -> None:
    """Run an attacks x aggregators x topologies matrix of scenarios in parallel.

    Writes matrix.parquet and matrix.md; exit code 1 when a cell breaks safety, liveness or its
    expectations."""
    from phalanx.apps.matrix import load_matrix, markdown, run_matrix, table, write_table

    if workers is not None and workers < 1:
        raise fail(f"--workers: must be at least 1 (got {workers})")
    try:
        mspec, cells = load_matrix(spec)
    except ScenarioError as e:
        raise fail(str(e)) from None
    known = {c.group for c in cells}
    for g in group or []:
        if g not in known:
            raise fail(f"--group: no group {g!r} in {spec} (groups: {', '.join(sorted(known))})")
    cells = [c for c in cells if not group or c.group in group]
    if write is not None:
        write.mkdir(parents=True, exist_ok=True)
        for c in cells:
            (write / f"{c.scenario.name}.yaml").write_text(c.scenario.resolved_yaml())
    out.print(f"matrix {mspec.name}: {len(cells)} cells ...")
    df = table(run_matrix(cells, workers))
    target = out_dir or Path("runs") / mspec.name
    write_table(df, target, mspec.name)
    out.print(markdown(df, mspec.name))
    out.print(f"written to {target}/matrix.parquet and matrix.md")
    if df.filter(pl.col("failures").list.len() > 0).height:
        raise typer.Exit(1)


@app.command()
def audit(run_dir: Annotated[Path, typer.Argument(help="a run's output folder")]) -> None:
    """Re-verify every node's SQLite log of a run and check that the logs agree.

    Signatures, commit certificates and recomputed model hashes are checked as state sync
    checks them; exit code 1 if anything fails."""
    from phalanx.apps.audit import audit_run

    try:
        audits, split = audit_run(run_dir)
    except ScenarioError as e:
        raise fail(str(e)) from None
    table = Table(title=f"audit of {run_dir}")
    for col in ("node", "rounds verified", "model hash", "problem"):
        table.add_column(col)
    for a in audits:
        table.add_row(str(a.node), str(a.rounds), (a.model_hash or "")[:16], a.problem or "")
    out.print(table)
    for line in split:
        err.print(f"[bold red]logs disagree:[/] {line}", highlight=False)
    bad = [a for a in audits if a.problem]
    out.print(f"audit: {len(audits)} node logs, {sum(a.rounds for a in audits)} rounds verified, "
              f"{len(bad)} logs with a bad record, {len(split)} rounds where logs disagree")
    if bad or split:
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
