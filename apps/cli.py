"""The `phalanx` command line (typer). Every user error is one line on stderr and exit code 2."""

from __future__ import annotations

import sys

from phalanx.apps.numerics import pin_at_entry

pin_at_entry(sys.argv)  # first: kernel paths are fixed before torch, numpy or MKL load

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from phalanx.apps.cli_help import Typer
from phalanx.apps.node_command import node as node_command
from phalanx.apps.outputs import output_file, output_folder
from phalanx.apps.serve_command import serve as serve_command
from phalanx.apps.tables import WholeNumbers
from phalanx.apps.terminal import err, fail, out
from phalanx.apps.web_command import web_app
from phalanx.scenario.errors import ScenarioError

# torch's profiler (the trainer's memory probe measures with it) logs each start and stop to
# stderr unless its level is set above those traces (6) before torch loads
os.environ.setdefault("KINETO_LOG_LEVEL", "6")

app = Typer(no_args_is_help=True, pretty_exceptions_enable=False,
            help="Decentralized, Byzantine-fault-tolerant training: simulate, run, measure.")
bench_app = Typer(no_args_is_help=True, help="Benchmarks that write JSON results.")
app.add_typer(bench_app, name="bench")
cluster_app = Typer(no_args_is_help=True,
                    help="A local cluster of real node processes from a scenario.")
app.add_typer(cluster_app, name="cluster")
app.add_typer(web_app, name="web")


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        out.print(f"phalanx {version('phalanx')}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_print_version,
        help="print the installed version and exit")] = False) -> None:
    """(the options before a command; the group's help is the Typer's)"""


def print_summary(result: object) -> None:
    from phalanx.apps.results import RunResult

    assert isinstance(result, RunResult)
    s = result.summary
    table = Table(title=f"{s['scenario']} (seed {s['seed']}, {s['mode']})", show_header=False)
    shown = ["nodes", "f", "rounds_planned", "min_rounds_committed", "distinct_final_hashes",
             "lagging_nodes", "down_at_end",
             "final_model_hash", "final_eval_loss", "final_eval_accuracy", "label_accuracy",
             "synced_commits", "privacy", "exclusions", "membership_changes", "members_at_end",
             "reputation", "view_changes", "suspicions", "last_commit_seconds", "sim_seconds", "wall_seconds", "messages_delivered",
             "messages_dropped", "dropped_by_reason", "messages_per_round", "rejected_by_reason",
             "sim_events_per_wall_second", "peak_memory_mb"]
    for key in shown:
        if key in s:
            table.add_row(key, _summary_text(key, s[key]))
    out.print(WholeNumbers(table))
    if result.out:
        nodes = ("" if not (result.out / "nodes").exists() else
                 ", nodes/<id>.sqlite and .log, members.json" if s["mode"] == "real-tcp"
                 else ", nodes/<id>.sqlite, nodes/frames.sqlite")
        tables = "".join(f", {name}" for name in result.tables)
        out.print(f"outputs in {result.out}/ (rounds.parquet, events.parquet{tables}, "
                  f"scenario.resolved.yaml, summary.json, run.png{nodes})")
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
    costs: Annotated[Path | None, typer.Option(
        "--costs", help="simulate with the component costs measured by `phalanx calibrate "
        "--components` (gradient, per-event handling, transport, SQLite, cores) instead of "
        "step_time")
    ] = None,
) -> None:
    """Run a scenario; exit code 1 when an `expect:` assertion fails."""
    from phalanx.scenario.schema import load_scenario

    if costs is not None and real:
        raise fail("--costs models a simulated run; --real measures one")
    try:
        loaded = load_scenario(scenario, seed)
    except ScenarioError as e:
        raise fail(str(e)) from None
    target = output_folder(out_dir or Path("runs") / (loaded.name + ("-real" if real else "")))
    from phalanx.apps.real import RealRunError
    from phalanx.apps.runner import run_scenario
    from phalanx.sim.costs import CostError, load_costs, workload_key
    from phalanx.sim.topology import TopologyError

    try:
        model = load_costs(costs) if costs is not None else None
        if model is not None:
            model.for_workload(workload_key(loaded))  # before the run, not in it
        result = run_scenario(loaded, out=target, real=real, progress=not quiet, costs=model)
    except (CostError, ScenarioError) as e:
        raise fail(str(e)) from None
    except TopologyError as e:
        raise fail(f"{scenario}: topology: {e}") from None
    except RealRunError as e:
        raise fail(f"{scenario}: --real: {e}") from None
    except OSError as e:  # a disk that fills up or goes away during the run
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
        "--save-failures", help="write a regression file <name>-seed<S>.yaml here for each "
        "failing seed, shrunk to the smallest variant that fails the same way")] = None,
    shrink_runs: Annotated[int, typer.Option(
        help="runs each shrink may spend (0: save the scenario as it is)")] = 120,
    expectations: Annotated[bool, typer.Option(
        "--expect", help="a seed that misses its `expect:` checks fails too")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Run a scenario over many seeds in parallel and check every run's invariants.

    Safety, agreement, liveness and nothing lost are checked per seed; exit code 1 when any is
    violated. Every failing seed replays with `phalanx run SCENARIO --seed S`."""
    if seeds < 1:
        raise fail(f"--seeds: must be at least 1 (got {seeds})")
    if start < 0:
        raise fail(f"--start: must be at least 0 (got {start})")
    if workers is not None and workers < 1:
        raise fail(f"--workers: must be at least 1 (got {workers})")
    if shrink_runs < 0:
        raise fail(f"--shrink-runs: must be at least 0 (got {shrink_runs})")
    if out_dir is not None:
        output_folder(out_dir)
    if save_failures is not None:
        output_folder(save_failures, "--save-failures")
    from phalanx.apps.sweep import SweepError, print_report
    from phalanx.apps.sweep import sweep as run_sweep
    from phalanx.sim.topology import TopologyError

    try:
        report = run_sweep(scenario, range(start, start + seeds), workers, out_dir,
                           save_failures=save_failures, expectations=expectations,
                           shrink_runs=shrink_runs, progress=not quiet, console=err)
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
def check(
    suite: Annotated[Path, typer.Argument(help="a folder of scenario and matrix files (or one "
                                          "file)")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="output folder (default: "
                                                 "runs/check-<suite name>)")] = None,
    junit: Annotated[Path | None, typer.Option(help="JUnit XML file (default: "
                                               "<out>/junit.xml)")] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes "
                                                "(default: one per CPU)")] = None,
) -> None:
    """Run a regression suite: every scenario and every matrix cell must keep its invariants
    and its `expect:` entries. Exit code 1 naming each failing case and its replay command."""
    from phalanx.apps.check import CheckError, report_line
    from phalanx.apps.check import check as run_check

    if workers is not None and workers < 1:
        raise fail(f"--workers: must be at least 1 (got {workers})")
    if out_dir is not None:
        output_folder(out_dir)
    if junit is not None:
        output_file(junit, "--junit")
    try:
        report = run_check(suite, out_dir, junit, workers)
    except (CheckError, ScenarioError) as e:
        raise fail(str(e)) from None
    except OSError as e:
        raise fail(f"cannot write outputs to {e.filename or out_dir}: {e.strerror}") from None
    out.print((report.out / "report.md").read_text(), highlight=False, soft_wrap=True)
    out.print(report_line(report), highlight=False, soft_wrap=True)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def plugins() -> None:
    """List the aggregators, attacks and workloads that installed packages add (entry points
    in the groups phalanx.aggregators, phalanx.attacks, phalanx.workloads)."""
    from phalanx.engine.aggregate import AGGREGATORS
    from phalanx.engine.byzantine import BEHAVIOURS
    from phalanx.engine.plugins import GROUPS, registered, shadowed
    from phalanx.engine.workloads import WORKLOADS

    builtins = {"aggregators": frozenset(AGGREGATORS), "attacks": frozenset(BEHAVIOURS),
                "workloads": frozenset(WORKLOADS)}
    found = 0
    for group in GROUPS:
        hidden = set(shadowed(group, builtins[group]))
        for name, target in sorted(registered(group).items()):
            found += 1
            note = "  (ignored: a built-in has this name)" if name in hidden else ""
            out.print(f"{group[:-1]:<10} {name:<24} {target}{note}", highlight=False,
                      soft_wrap=True)
    if not found:
        out.print("no plugins installed (entry points in phalanx.aggregators, "
                  "phalanx.attacks, phalanx.workloads)", highlight=False, soft_wrap=True)


@app.command()
def validate(
    scenario: Annotated[Path | None, typer.Argument(
        help="scenario YAML file (with --explain: a field, e.g. training.aggregator)")] = None,
    explain: Annotated[bool, typer.Option(
        help="explain the scenario format: the tree of sections, or the field given")] = False,
    markdown: Annotated[bool, typer.Option(
        help="with --explain: the full reference as Markdown (docs/scenario.md)")] = False,
) -> None:
    """Check a scenario file (schema, topology, and that the n − f gradients sure to arrive
    are enough for the aggregator) and print it with every default filled in, then the disk
    and memory a simulated run of it will take (an estimate)."""
    if explain or markdown:
        from phalanx.scenario.reference import ExplainError, render

        try:
            typer.echo(render(None if scenario is None else str(scenario), markdown))
        except ExplainError as e:
            raise fail(str(e)) from None
        return
    if scenario is None:
        raise fail("give a scenario file, or --explain to see the format")
    from phalanx.scenario.footprint import estimate
    from phalanx.scenario.schema import load_scenario

    try:
        loaded = load_scenario(scenario)
    except ScenarioError as e:
        raise fail(str(e)) from None
    from phalanx.engine.rng import RngStreams
    from phalanx.sim.topology import TopologyError, scenario_graph

    try:
        scenario_graph(loaded, RngStreams(loaded.seed))  # connected, as the run draws it
    except TopologyError as e:
        raise fail(f"{scenario}: topology: {e}") from None
    out.print(loaded.resolved_yaml(), highlight=False)
    for line in estimate(loaded).lines():  # a YAML comment: the output still loads as YAML
        out.print(f"# {line}", highlight=False, markup=False, soft_wrap=True)


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

    if out_dir is not None:
        output_folder(out_dir)
    overrides: dict[str, object] = {}
    if data is not None:
        overrides["data.path"] = str(data)
    if steps is not None:
        overrides["train.steps"] = steps
    try:
        loaded = load_train_file(config, overrides)
        if data is not None and loaded.data.kind == "synthetic":
            loaded = load_train_file(config, {**overrides, "data.kind": "text"})
        target = output_folder(out_dir or Path("runs") / "train" / loaded.name)
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
              + (f" (reference {s['reference']['val_loss']:.4f}: {s['reference']['source']})"
                 if s["reference"] else "")
              + f"; {s['tokens_per_second']:,.0f} tokens/s; kernels: {s['kernels'] or 'none'}; "
              f"outputs in {target}/")


@bench_app.command("sim")
def bench_sim(
    nodes: Annotated[str, typer.Option(help="comma-separated node counts")] = "100,1000",
    rounds: Annotated[int, typer.Option(help="rounds per run")] = 2,
    against: Annotated[str | None, typer.Option(
        help="a git revision: run its simulator and this one alternately, as subprocesses, "
             "and compare their phalanx/bare ratios")] = None,
    repeats: Annotated[int, typer.Option(help="with --against: runs of each build")] = 3,
    out_file: Annotated[Path, typer.Option("--out", help="JSON result file")] = Path(
        "benchmarks/out/sim.json"),
) -> None:
    """Simulated events per wall second: phalanx vs a bare-SimPy run of the same traffic."""
    output_file(out_file)
    counts = _counts("--nodes", nodes, 4)
    if against is None:
        from phalanx.apps.bench_sim import run_bench

        run_bench(counts, rounds, out_file, out)
        return
    from phalanx.apps.bench_against import AgainstError, run_against

    if repeats < 1:
        raise fail(f"--repeats must be at least 1 (got {repeats})")
    try:
        run_against(counts, rounds, against, repeats, out_file, out)
    except AgainstError as e:
        raise fail(str(e)) from None


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
    output_file(out_file)
    from phalanx.apps.bench_consensus import run_bench

    if rounds < 2:
        raise fail(f"--rounds: at least 2 rounds are needed to time one (got {rounds})")
    run_bench(_counts("--nodes", nodes, 4), rounds, out_file, out)


@bench_app.command("crash")
def bench_crash(
    nodes: Annotated[str, typer.Option(help="comma-separated cluster sizes")] = "5,10",
    rounds: Annotated[int, typer.Option(help="rounds per run")] = 60,
    crash_round: Annotated[int, typer.Option(help="the round a member crashes in")] = 20,
    real: Annotated[bool, typer.Option(help="also kill a member of a real loopback "
                                       "cluster")] = True,
    out_file: Annotated[Path, typer.Option("--out", help="JSON result file")] = Path(
        "benchmarks/out/crash.json"),
) -> None:
    """Round latency with one member crashed (within f): failure detector on and off."""
    output_file(out_file)
    from phalanx.apps.bench_crash import run_bench

    if not 3 <= crash_round <= rounds - 5:
        raise fail(f"--crash-round: between 3 and rounds - 5 (got {crash_round})")
    counts = _counts("--nodes", nodes, 4)
    try:
        run_bench(counts, rounds, crash_round, real, out_file, out)
    except RuntimeError as e:
        raise fail(str(e)) from None


@bench_app.command("compression")
def bench_compression(
    workloads: Annotated[str, typer.Option(help="comma-separated: mlp, transformer")] = (
        "mlp,transformer"),
    ratios: Annotated[str, typer.Option(help="top-k ratios, comma-separated")] = (
        "0.1,0.05,0.01,0.001,0.0003,0.0001"),
    rounds: Annotated[int | None, typer.Option(help="rounds per run (default: per "
                                                     "workload, 300 each)")
                      ] = None,
    out_file: Annotated[Path, typer.Option("--out", help="JSON result file (Parquet beside)")
                        ] = Path("benchmarks/out/compression.json"),
    seed: Annotated[int, typer.Option(help="the runs' seed (data, model, links)")] = 3,
) -> None:
    """Bytes per round, final loss and round latency per compression method, beside the
    uncompressed run, at 10 Mbit/s."""
    output_file(out_file)
    from phalanx.apps.bench_compression import WORKLOADS, run_bench

    names = [w.strip() for w in workloads.split(",") if w.strip()]
    unknown = [w for w in names if w not in WORKLOADS]
    if unknown or not names:
        raise fail(f"--workloads: {unknown or names} (allowed: {', '.join(WORKLOADS)})")
    try:
        kept = tuple(float(r) for r in ratios.split(","))
    except ValueError:
        raise fail(f"--ratios: {ratios!r} is not a comma-separated list of numbers") from None
    if not all(0 < r <= 1 for r in kept):
        raise fail(f"--ratios: each must be in (0, 1] (got {ratios})")
    if rounds is not None and rounds < 2:
        raise fail(f"--rounds: at least 2 (got {rounds})")
    run_bench(names, kept, rounds, out_file, out, seed)


@bench_app.command("train")
def bench_train(
    steps: Annotated[int, typer.Option(help="steps per timed window")] = 30,
    repeats: Annotated[int, typer.Option(help="timed windows per side (alternating)")] = 3,
    out_file: Annotated[Path, typer.Option("--out", help="JSON result file")] = Path(
        "benchmarks/out/train.json"),
) -> None:
    """Training tokens/s of phalanx's step vs a plain PyTorch loop; peak memory."""
    output_file(out_file)
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
    output_file(out_file)
    from phalanx.apps.bench_kernels import run_bench

    if seq < 16:
        raise fail(f"--seq: at least 16 (got {seq})")
    run_bench(seq, out_file, out)


@bench_app.command("real")
def bench_real(
    scenario: Annotated[Path, typer.Option(help="the cluster's scenario")] = Path(
        "scenarios/bench_real.yaml"),
    rounds: Annotated[int, typer.Option(help="rounds per run")] = 200,
    out_file: Annotated[Path, typer.Option("--out", help="JSON result file")] = Path(
        "benchmarks/out/real.json"),
    calibrate: Annotated[bool, typer.Option(help="also calibrate the simulator on this "
                                            "machine and compare its prediction")] = True,
) -> None:
    """Rounds/s and bytes/round of a real loopback cluster beside the simulator's prediction."""
    output_file(out_file)
    from phalanx.apps.bench_real import run_bench
    from phalanx.apps.calibrate import CalibrationError
    from phalanx.apps.real import RealRunError

    if rounds < 3:
        raise fail(f"--rounds: at least 3 (got {rounds})")
    try:
        run_bench(scenario, rounds, out_file, out, calibrated=calibrate)
    except (ScenarioError, RealRunError, CalibrationError) as e:
        raise fail(str(e)) from None
    except OSError as e:
        raise fail(f"bench real: {e.strerror or e}") from None


@bench_app.command("rlhf")
def bench_rlhf(
    scenario: Annotated[Path, typer.Option(help="the RLHF scenario every cell varies")] = Path(
        "scenarios/rlhf.yaml"),
    seeds: Annotated[int, typer.Option(help="seeds per cell (0..N-1)")] = 1,
    cell: Annotated[list[str] | None, typer.Option(help="run only these cells (repeat the "
                                                  "option); default: all")] = None,
    out_file: Annotated[Path, typer.Option("--out", help="JSON result file")] = Path(
        "benchmarks/out/rlhf.json"),
) -> None:
    """The RLHF pipeline: reward-model accuracy with honest and inverting annotators
    (reputation on/off), PPO and DPO true score and KL, ALIE against robust and mean."""
    output_file(out_file)
    from phalanx.apps.bench_rlhf import CELLS, run_bench

    known = [c.name for c in CELLS]
    for name in cell or []:
        if name not in known:
            raise fail(f"--cell: unknown cell; known: {', '.join(known)}")
    if seeds < 1:
        raise fail(f"--seeds: at least 1 (got {seeds})")
    try:
        run_bench(scenario, seeds, list(cell or []), out_file, out)
    except ScenarioError as e:
        raise fail(str(e)) from None


@bench_app.command("crowd")
def bench_crowd(
    seeds: Annotated[int, typer.Option(help="simulated crowds (seeds 0..N-1)")] = 5,
    crowdkit_python: Annotated[Path | None, typer.Option(
        help="python of a scratch venv with crowd-kit: compare its aggregators on the same "
             "labels")] = None,
    out_file: Annotated[Path, typer.Option("--out", help="JSON result file")] = Path(
        "benchmarks/out/crowd.json"),
) -> None:
    """Label aggregation accuracy and agreement on a simulated crowd with spammers."""
    output_file(out_file)
    from phalanx.apps.bench_crowd import BenchError, run_bench

    if seeds < 1:
        raise fail(f"--seeds: at least 1 (got {seeds})")
    try:
        run_bench(seeds, out_file, out, crowdkit_python)
    except BenchError as e:
        raise fail(str(e)) from None


@bench_app.command("web")
def bench_web(
    clients: Annotated[int, typer.Option(help="concurrent annotator clients")] = 200,
    seconds: Annotated[float, typer.Option(help="how long they submit")] = 60.0,
    out_file: Annotated[Path, typer.Option("--out", help="JSON result file")] = Path(
        "benchmarks/out/web.json"),
) -> None:
    """Web submissions per second and latency under concurrent annotators; none lost."""
    output_file(out_file)
    from phalanx.apps.bench_web import BenchWebError, run_bench

    if not 1 <= clients <= 250:
        raise fail(f"--clients: 1..250, the server's connection cap leaves room (got {clients})")
    if not seconds > 0:
        raise fail(f"--seconds: more than 0 (got {seconds})")
    try:
        run_bench(clients, seconds, out_file, out)
    except BenchWebError as e:
        raise fail(str(e)) from None


@bench_app.command("memory")
def bench_memory(
    rounds: Annotated[int, typer.Option(help="rounds the cluster runs")] = 20_000,
    nodes: Annotated[int, typer.Option(help="nodes in the loopback cluster")] = 4,
    every: Annotated[float, typer.Option(help="seconds between samples of node 0")] = 2.0,
    warmup: Annotated[int, typer.Option(help="rounds before memory must stay flat")] = 1000,
    folder: Annotated[Path | None, typer.Option(
        "--dir", help="where the nodes keep their disks (default: a temporary folder)")] = None,
    out_file: Annotated[Path, typer.Option("--out", help="JSON result file")] = Path(
        "benchmarks/out/memory.json"),
    nodes_pythonpath: Annotated[Path | None, typer.Option(
        help="run the nodes from this PYTHONPATH (another checkout, for a baseline)")] = None,
) -> None:
    """A real node's resident memory over a long run (flat after warm-up?) and its restart
    time on the disk that run left."""
    output_file(out_file)
    import tempfile

    from phalanx.apps.bench_memory import BenchMemoryError, run_bench

    if rounds < 10 or nodes < 1 or every <= 0 or warmup < 0:
        raise fail("--rounds at least 10, --nodes at least 1, --every above 0, --warmup >= 0")
    if folder is not None:
        output_folder(folder, "--dir")
    try:
        with tempfile.TemporaryDirectory(prefix="phalanx-bench-memory-") as tmp:
            run_bench(rounds, nodes, every, warmup, folder or Path(tmp), out_file, out,
                      nodes_pythonpath)
    except (ScenarioError, BenchMemoryError) as e:
        raise fail(str(e)) from None
    except OSError as e:
        raise fail(f"bench memory: {e.strerror or e}") from None


@bench_app.command("fidelity")
def bench_fidelity(
    out_file: Annotated[Path, typer.Option("--out", help="JSON result file (the measured "
                                           "component costs beside it)")] = Path(
        "benchmarks/out/fidelity.json"),
    real_runs: Annotated[int, typer.Option(help="real runs of each scenario")] = 1,
    repeats: Annotated[int, typer.Option(help="repetitions of each component timing")] = 30,
) -> None:
    """The simulator with separately measured component costs against real runs with the
    scenario's links emulated: a 4-node mlp, a 10-node ring of 20 ms links, the transformer."""
    output_file(out_file)
    from phalanx.apps.bench_fidelity import run_bench
    from phalanx.apps.calibrate import CalibrationError
    from phalanx.apps.real import RealRunError

    if real_runs < 1 or repeats < 5:
        raise fail(f"--real-runs: at least 1 and --repeats: at least 5 (got {real_runs}, "
                   f"{repeats})")
    try:
        run_bench(out_file, out, real_runs, repeats)
    except (ScenarioError, RealRunError, CalibrationError) as e:
        raise fail(str(e)) from None
    except OSError as e:
        raise fail(f"bench fidelity: {e.strerror or e}") from None


@app.command()
def calibrate(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML file")],
    out_file: Annotated[Path | None, typer.Option(
        "--out", help="calibrated scenario (default: runs/<name>.calibrated.yaml)")] = None,
    rounds: Annotated[int, typer.Option(help="rounds of the measured real run")] = 60,
    repeats: Annotated[int, typer.Option(help="repetitions of each micro-measurement")] = 200,
    components: Annotated[Path | None, typer.Option(
        "--components", help="instead: time each component alone (gradient, the node core's "
        "handling of each event kind, transport, SQLite, shared cores) and write the costs "
        "file for `phalanx run --costs`; no real run")] = None,
) -> None:
    """Measure this machine (gradient time, loopback link, a node's own work, one real run)
    and write the scenario with the simulator's compute and link parameters set from it;
    with --components, write the simulator's measured cost model instead."""
    from phalanx.apps.calibrate import CalibrationError, write_components
    from phalanx.apps.calibrate import calibrate as run_calibration
    from phalanx.apps.real import RealRunError
    from phalanx.scenario.schema import load_scenario

    try:
        loaded = load_scenario(scenario)
        if components is not None:
            output_file(components, "--components")
            write_components([loaded], components, repeats=min(repeats, 50), console=out)
            out.print(f"component costs written to {components}")
            return
        target = output_file(out_file or Path("runs") / f"{loaded.name}.calibrated.yaml")
        run_calibration(loaded, target, rounds=rounds, repeats=repeats, console=out)
    except (ScenarioError, RealRunError, CalibrationError) as e:
        raise fail(str(e)) from None
    except OSError as e:
        raise fail(f"calibrate: {e.strerror or e}") from None
    out.print(f"calibrated scenario written to {target}")


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
    seeds: Annotated[str | None, typer.Option(help="run every cell under each of these seeds "
                                              "(e.g. 5,6,7; the report averages them)")] = None,
) -> None:
    """Run an attacks x aggregators x topologies matrix of scenarios in parallel.

    Writes matrix.parquet and matrix.md; exit code 1 when a cell breaks safety, liveness or its
    expectations."""
    if workers is not None and workers < 1:
        raise fail(f"--workers: must be at least 1 (got {workers})")
    for folder, option in ((out_dir, "--out"), (write, "--write")):
        if folder is not None:
            output_folder(folder, option)
    seed_list = _seed_list(seeds) if seeds else None
    import polars as pl

    from phalanx.apps.matrix import load_matrix, markdown, run_matrix, table, write_table

    try:
        mspec, cells = load_matrix(spec, seed_list)
    except ScenarioError as e:
        raise fail(str(e)) from None
    target = output_folder(out_dir or Path("runs") / mspec.name)
    known = {c.group for c in cells}
    for g in group or []:
        if g not in known:
            raise fail(f"--group: no group {g!r} in {spec} (groups: {', '.join(sorted(known))})")
    cells = [c for c in cells if not group or c.group in group]
    if write is not None:
        write.mkdir(parents=True, exist_ok=True)
        for c in cells:
            if c.scenario is not None:  # a refused cell has no scenario to replay
                (write / f"{c.scenario.name}.yaml").write_text(c.scenario.resolved_yaml())
    out.print(f"matrix {mspec.name}: {len(cells)} cells ...")
    df = table(run_matrix(cells, workers))
    write_table(df, target, mspec.name)
    out.print(markdown(df, mspec.name))
    out.print(f"written to {target}/matrix.parquet and matrix.md")
    if df.filter(pl.col("failures").list.len() > 0).height:
        raise typer.Exit(1)


def _seed_list(seeds: str) -> list[int]:
    try:
        seed_list = [int(x) for x in seeds.split(",")]
    except ValueError:
        raise fail(f"--seeds: a comma-separated list of integers (e.g. 5,6,7); got "
                   f"{seeds[:40]!r}") from None
    if min(seed_list) < 0:
        raise fail("--seeds: seeds must be >= 0")
    return seed_list


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
    for col in ("node", "from round", "rounds verified", "model hash", "problem"):
        table.add_column(col)
    for a in audits:
        table.add_row(str(a.node), str(a.since), str(a.rounds), (a.model_hash or "")[:16], a.problem or "")
    out.print(WholeNumbers(table))
    for line in split:
        err.print(f"[bold red]logs disagree:[/] {line}", highlight=False)
    for lineage in sorted({a.lineage for a in audits if a.lineage}):
        out.print(f"lineage, certified by every replayed round: {lineage}", highlight=False)
    bad = [a for a in audits if a.problem]
    out.print(f"audit: {len(audits)} node logs, {sum(a.rounds for a in audits)} rounds verified, "
              f"{len(bad)} logs with a bad record, {len(split)} rounds where logs disagree")
    if bad or split:
        raise typer.Exit(1)


app.command(name="node")(node_command)
app.command(name="serve")(serve_command)


@app.command()
def keygen(data_dir: Annotated[Path, typer.Argument(help="the node's data folder")]) -> None:
    """Create the node's key in DATA_DIR/node.key (if absent) and print its public key."""
    from phalanx.apps.node_settings import node_identity

    try:
        identity = node_identity(data_dir)
    except ScenarioError as e:
        raise fail(str(e)) from None
    out.print(identity.public_key.hex())


ClusterDir = Annotated[Path, typer.Option("--dir", help="the cluster's folder")]


@cluster_app.command("up")
def cluster_up_cmd(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML file")],
    folder: ClusterDir = Path("runs/cluster"),
    encrypt: Annotated[bool, typer.Option(help="encrypt the links")] = False,
    node: Annotated[int | None, typer.Option(help="start this node only")] = None,
    lightweight: Annotated[int, typer.Option(
        help="lightweight nodes that follow the chain (first start only)")] = 0,
    byzantine: Annotated[str | None, typer.Option(
        help="comma-separated member ids that attack (replaces the scenario's byzantine "
             "section; first start only)")] = None,
    attack: Annotated[str, typer.Option(
        help="their behaviour, e.g. sign_flip, equivocate, silent (see the README)")] = "sign_flip",
) -> None:
    """Start the scenario's nodes (Byzantine ones with their attack); on a folder whose cluster
    is partly down, restart the missing nodes on their old data."""
    from phalanx.apps.cluster import ClusterError, cluster_up
    from phalanx.scenario.schema import load_scenario, parse_scenario

    try:
        loaded = load_scenario(scenario)
        if byzantine is not None:
            try:
                ids = [int(i) for i in byzantine.split(",")]
            except ValueError:
                raise ScenarioError(f"--byzantine: {byzantine!r} is not a comma-separated list "
                                    f"of member ids") from None
            loaded = parse_scenario({**loaded.model_dump(mode="json"), "byzantine": [
                {"nodes": ids, "behaviour": attack}]}, f"{scenario} with --byzantine")
        nodes = cluster_up(loaded, folder, encrypt, only=node, lightweight=lightweight)
    except (ScenarioError, ClusterError) as e:
        raise fail(str(e)) from None
    for n in nodes:
        out.print(f"node {n.id}: pid {n.pid}, p2p port {n.p2p_port}, status "
                  f"{n.status_url}, log {n.folder}/node.log")


@cluster_app.command("status")
def cluster_status_cmd(
    folder: ClusterDir = Path("runs/cluster"),
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Each node's process and what its status endpoint says."""
    import json

    from phalanx.apps.cluster import ClusterError, cluster_status

    try:
        rows = cluster_status(folder)
    except ClusterError as e:
        raise fail(str(e)) from None
    if as_json:
        print(json.dumps(rows))
        return
    table = Table(title=f"cluster in {folder}")
    for col in ("node", "pid", "process", "round", "model hash", "members", "peers up",
                "health"):
        table.add_column(col)
    for r in rows:
        st = r["status"] or {}
        table.add_row(str(r["node"]), str(r["pid"]), "running" if r["running"] else "down",
                      str(st.get("round", "-")), st.get("model_hash", "-")[:16],
                      ",".join(map(str, st["members"])) + ("" if st["member"] else " (follows)")
                      if st else "-",
                      f"{st['peers_up']}/{len(st['peers'])}" if st else "-",
                      st["health"]["status"] if st else "-")
    out.print(WholeNumbers(table))


def _cluster_change(folder: Path, node: int, op: str) -> None:
    from phalanx.apps.cluster import ClusterError, cluster_change

    try:
        reply = cluster_change(folder, node, op)
    except ClusterError as e:
        raise fail(str(e)) from None
    out.print(f"node {node} asked the members to let it {op} (epoch {reply['epoch']}); it "
              f"takes effect from the round after the one that commits it (cluster status "
              f"shows the members)", highlight=False)


@cluster_app.command("add")
def cluster_add_cmd(folder: ClusterDir = Path("runs/cluster")) -> None:
    """Start a new node beside a running cluster: it is listed as an observer in members.json,
    the running nodes admit it (SIGHUP), and it follows until `cluster join` asks it to join."""
    from phalanx.apps.cluster import ClusterError, cluster_add

    try:
        n = cluster_add(folder)
    except (ClusterError, ScenarioError) as e:
        raise fail(str(e)) from None
    out.print(f"node {n.id}: pid {n.pid}, p2p port {n.p2p_port}, status {n.status_url}, log "
              f"{n.folder}/node.log; it follows the chain: phalanx cluster join --node {n.id}",
              highlight=False)


@cluster_app.command("join")
def cluster_join_cmd(
    node: Annotated[int, typer.Option(help="the observer that joins the members")],
    folder: ClusterDir = Path("runs/cluster"),
) -> None:
    """Ask an observer (a scenario's nodes.observers) to join the members."""
    _cluster_change(folder, node, "join")


@cluster_app.command("leave")
def cluster_leave_cmd(
    node: Annotated[int, typer.Option(help="the member that leaves")],
    folder: ClusterDir = Path("runs/cluster"),
) -> None:
    """Ask a member to leave the members (it keeps following the chain)."""
    _cluster_change(folder, node, "leave")


@cluster_app.command("down")
def cluster_down_cmd(
    folder: ClusterDir = Path("runs/cluster"),
    node: Annotated[int | None, typer.Option(help="stop this node only")] = None,
    grace: Annotated[float, typer.Option(help="seconds before SIGKILL")] = 15.0,
) -> None:
    """Stop the nodes gracefully (SIGTERM: results, log and links flushed)."""
    from phalanx.apps.cluster import ClusterError, cluster_down

    try:
        killed = cluster_down(folder, grace, node)
    except ClusterError as e:
        raise fail(str(e)) from None
    out.print("stopped" + (f"; killed after {grace:g} s: {killed}" if killed else ""))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
