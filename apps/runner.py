"""`phalanx run`: run a scenario in the simulator (or over real TCP) and collect its results."""

from __future__ import annotations

import resource
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from phalanx.apps.commit_rows import commit_row
from phalanx.apps.results import (
    RunResult,
    check_expectations,
    rounds_table,
    summarize,
    write_outputs,
)
from phalanx.apps.rlhf_report import staged_outputs
from phalanx.engine.events import RoundCommitted
from phalanx.engine.metrics import MetricLog
from phalanx.engine.rlhf.service import RlhfService
from phalanx.scenario.schema import Scenario, load_scenario, with_seed
from phalanx.sim.costs import CostModel
from phalanx.sim.world import SimWorld


def peak_memory_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


class RoundPrinter:
    """Progress bar plus one table line per round once every honest node has committed it."""

    def __init__(self, scenario: Scenario, console: Console, enabled: bool) -> None:
        self.enabled, self.console = enabled, console
        self.honest = scenario.nodes.count - len(scenario.byzantine_nodes())
        self.total = scenario.training.rounds
        self._seen: dict[int, list[tuple[float, float, str]]] = {}
        self._printed = -1
        # t: when the round shown was committed (summary.json's last_commit_seconds at the end)
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                 MofNCompleteColumn(),
                                 TextColumn("committed at t={task.fields[t]:.2f}s"),
                                 TimeElapsedColumn(), console=console, disable=not enabled)
        # a staged workload (RLHF) names each round's stage in the bar and the table
        self.stage: Callable[[int], str] | None = getattr(scenario.workload, "stage", None)
        self.task = self.progress.add_task("rounds", total=self.total, t=0.0)

    def __enter__(self) -> RoundPrinter:
        self.progress.__enter__()
        if self.enabled:
            self.console.print(f"{'round':>5}  {'sim time':>9}  {'nodes':>5}  {'train loss':>10}"
                               f"  {'models':>6}" + ("  stage" if self.stage else ""))
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush(final=True)
        self.progress.__exit__(*exc)

    def commit(self, metric: RoundCommitted, time: float) -> None:
        rows = self._seen.setdefault(metric.round, [])
        rows.append((time, metric.train_loss, metric.model_hash.hex()[:8]))
        if metric.round == self._printed + 1 and len(rows) >= self.honest:
            self.flush()

    def flush(self, final: bool = False) -> None:
        while self._printed + 1 in self._seen:
            rows = self._seen[self._printed + 1]
            if len(rows) < self.honest and not final:
                return
            self._printed += 1
            hashes = sorted({h for *_, h in rows})
            if self.enabled:
                self.console.print(
                    f"{self._printed:>5}  {max(t for t, *_ in rows):>9.3f}  {len(rows):>5}  "
                    f"{sum(loss for _, loss, _ in rows) / len(rows):>10.4f}  "
                    f"{len(hashes):>6}" + ("  [red]differ[/]" if len(hashes) > 1 else "")
                    + (f"  {self.stage(self._printed)}" if self.stage else ""))
            self.progress.update(self.task, completed=self._printed + 1,
                                 t=max(t for t, *_ in rows), description=(
                                     self.stage(self._printed) if self.stage else "rounds"))


def exclusions(scenario: Scenario, metrics: MetricLog, running: set[int]) -> dict[str, Any]:
    """Per excluded node: which honest nodes excluded it, in which rounds, and whether every
    running honest node did."""
    honest = running - scenario.byzantine_nodes()
    by: dict[int, dict[int, int]] = {}
    for m, _ in metrics.exclusions:
        if m.node in honest:
            by.setdefault(m.offender, {}).setdefault(m.node, m.round)
    return {str(offender): {"by": sorted(nodes), "by_all_honest": set(nodes) >= honest,
                            "first_round": min(nodes.values()),
                            "rounds_to_exclude": max(nodes.values()) - min(nodes.values())}
            for offender, nodes in sorted(by.items())}


def membership(metrics: MetricLog, byzantine: set[int]) -> list[dict[str, Any]]:
    """The agreed membership changes, each once: from which round, who, and the members."""
    seen: dict[tuple[int, int], dict[str, Any]] = {}
    for m, _ in metrics.membership:
        if m.node not in byzantine:
            seen.setdefault((m.round, m.subject), {"from_round": m.round, "op": m.op,
                                                   "node": m.subject, "members": list(m.members)})
    return [seen[k] for k in sorted(seen)]


def members_at_end(scenario: Scenario, world: SimWorld) -> list[list[int]]:
    """The distinct memberships the running honest nodes end with (one list when they agree)."""
    ends = {tuple(h.node.members) for h in world.hosts
            if h.node is not None and h.id not in scenario.byzantine_nodes()}
    return [list(m) for m in sorted(ends)]


def reputation(scenario: Scenario, world: SimWorld) -> dict[str, float]:
    """Each peer's reputation at the end (a moving average of its gradient making the round,
    lowered by rejected messages, zero once excluded), averaged over the running honest nodes."""
    judges = [h.node for h in world.hosts
              if h.node is not None and h.id not in scenario.byzantine_nodes()]
    peers = range(scenario.nodes.count)
    return {str(p): round(sum(j.reputation.get(p, 1.0) for j in judges if j.id != p)
                          / max(1, sum(1 for j in judges if j.id != p)), 3) for p in peers}


def curation(scenario: Scenario, world: SimWorld) -> dict[str, Any]:
    """Each curation node's log at the end (round, snapshot root, committed and pending
    records, refusals by reason), the rounds at which honest nodes held different roots
    (none, unless something is wrong: the `curation` invariant reads them), and with
    `curation.safety` how many tasks the safety filter withheld from annotators."""
    nodes: dict[str, Any] = {}
    for host in world.hosts:
        desk = world.desk(host.id)
        if desk is not None:
            nodes[str(host.id)] = {"round": desk.round, "root": desk.root.hex(),
                                   "committed": desk.committed, "pending": desk.pending,
                                   "refused": dict(sorted(desk.counts.items()))}
    byz = scenario.byzantine_nodes()
    roots: dict[int, dict[str, set[int]]] = {}
    for m in world.metrics.curation:
        if m.node not in byz:
            roots.setdefault(m.round, {}).setdefault(m.root.hex(), set()).add(m.node)
    splits = [{"round": r, "roots": {root: sorted(ids) for root, ids in sorted(held.items())}}
              for r, held in sorted(roots.items()) if len(held) > 1]
    out = {"nodes": nodes, "root_splits": splits[:SPLITS_SHOWN], "rounds_split": len(splits)}
    if scenario.curation is not None and scenario.curation.safety is not None:
        out["tasks_withheld"] = scenario.curation.withheld(scenario.seed)  # by the filter
    return out


SPLITS_SHOWN = 10


def preference_sets(scenario: Scenario, world: SimWorld) -> list[dict[str, Any]]:
    """The preference sets the running honest nodes' RLHF services took (none before the
    snapshot, or without the service)."""
    sets = []
    for host in world.hosts:
        service = host.node.service("rlhf") if host.node is not None else None
        if (isinstance(service, RlhfService) and service.preferences is not None
                and host.id not in scenario.byzantine_nodes()):
            sets.append(service.preferences.identity())
    return sets


def run_sim(scenario: Scenario, printer: RoundPrinter,
            costs: CostModel | None = None) -> RunResult:
    world = SimWorld(scenario, on_commit=printer.commit, costs=costs)
    with printer:
        stats = world.run()
    byz = scenario.byzantine_nodes()
    metrics = world.metrics
    rows = [commit_row(m, t, order, world.hosts[m.node].bytes_sent.get(m.round, 0),
                       m.node in byz) for m, t, order in metrics.commits]
    params = {h.hex(): p for h, p in metrics.params.items()}
    rounds = rounds_table(rows, world.workload, params, scenario.training.eval_every,
                          scenario.training.rounds - 1)
    log = world.log
    committed_rounds = max(1, rounds["round"].n_unique()) if len(rounds) else 1
    extra = {
        "mode": "sim",
        "sim_seconds": stats.sim_seconds,
        "wall_seconds": stats.wall_seconds,
        "sim_events": stats.events,
        "sim_events_per_wall_second": stats.events / max(stats.wall_seconds, 1e-9),
        "messages_delivered": log.delivered,
        "messages_dropped": log.dropped,
        "dropped_by_reason": dict(sorted(log.dropped_by_reason.items())),
        "messages_per_round": (log.delivered + log.dropped) / committed_rounds,
        "rejected_by_reason": dict(sorted(metrics.rejections.items())),
        "exclusions": exclusions(scenario, metrics, {h.id for h in world.hosts if h.up}),
        "view_changes": len(metrics.view_changes),
        # the failure detector's: (node, peer, reason) -> times it began suspecting
        "suspicions": suspicions(metrics),
        "membership_changes": membership(metrics, byz),
        "members_at_end": members_at_end(scenario, world),
        "reputation": reputation(scenario, world),
        "verify_cache_hits": world.verify_cache.hits,
        "verify_cache_misses": world.verify_cache.misses,
        "peak_memory_mb": peak_memory_mb(),
    }
    if costs is not None:  # the measured cost model (sim/costs.py), opt-in
        extra["cost_model"] = costs.source
    if scenario.curation is not None:
        extra["curation"] = curation(scenario, world)
    tables = {}
    if world.crowd is not None:  # the simulated crowd's labels against their hidden truth
        extra["labels"] = world.crowd.summary()
        extra["label_accuracy"] = extra["labels"]["label_accuracy"]
        tables = {"labels.parquet": world.crowd.recorder.rounds_frame(),
                  "task_labels.parquet": world.crowd.recorder.labels_frame()}
    staged, figures = staged_outputs(world.workload, rounds, params, scenario.training.rounds,
                                     _title(scenario), preference_sets(scenario, world))
    extra.update(staged)
    summary = summarize(scenario, rounds, extra, {h.id for h in world.hosts if not h.up},
                        world.workload)
    events = log.frame({k: cls.__name__ for k, cls in world.opener.messages.kinds.items()})
    return RunResult(scenario, rounds, events, summary,
                     disks={h.id: h.disk for h in world.hosts} if scenario.node_logs else {},
                     tables=tables, figures=figures)


def _title(scenario: Scenario) -> str:
    return f"{scenario.name}: {scenario.nodes.count} nodes, seed {scenario.seed}"


def suspicions(metrics: MetricLog) -> dict[str, int]:
    """How often each node began suspecting each peer, and why ("2->3 silent": 4)."""
    return {f"{node}->{peer} {reason}": count
            for (node, peer, reason), count in sorted(metrics.suspicions.items())}


def run_scenario(scenario: str | Path | Scenario, *, seed: int | None = None,
                 out: str | Path | None = None, real: bool = False, progress: bool = False,
                 console: Console | None = None, costs: CostModel | None = None) -> RunResult:
    """Run one scenario; write its outputs to `out` when given; never exits the process.
    `costs`: simulate with the measured cost model (sim/costs.py) instead of step_time."""
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario, seed)
    elif seed is not None:
        scenario = with_seed(scenario, seed)
    torch.set_num_threads(1)  # bit-identical gradients in every process (and fair CI timing)
    console = console or Console(stderr=True, emoji=False)
    printer = RoundPrinter(scenario, console, progress)
    if real:
        from phalanx.apps.real import run_real

        result = run_real(scenario, printer, Path(out) if out is not None else None)
    else:
        result = run_sim(scenario, printer, costs)
    result.failures = check_expectations(scenario, result.rounds, result.summary)
    if out is not None:
        result.out = Path(out)
        write_outputs(result.out, result)
    return result
