"""`phalanx run --real`: the scenario's nodes as real processes over TCP on loopback.

A throwaway local cluster (`apps/cluster.py`): one `phalanx node --real` process per member,
Byzantine members running their attack. The launcher waits until every honest node has
written its results (or the scenario's wall-clock deadline passes), stops the cluster with
SIGTERM and builds the same result tables as the simulator. Scheduled faults are the
simulator's; real nodes are killed or cut from outside (see tests/test_cluster.py).

With an output folder, each node's SQLite log and its own log (stdout, stderr and the log
lines of apps/node_logging.py) are kept as `nodes/<id>.sqlite` and `nodes/<id>.log`, with the
nodes' public keys in `members.json`, finished or not: `phalanx audit` verifies them.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from phalanx.apps.cluster import NodeProc, alive, cluster_down, cluster_up
from phalanx.apps.emulate import describe, emulates, for_run
from phalanx.apps.numerics import node_numerics
from phalanx.apps.results import RunResult, rounds_table, summarize
from phalanx.apps.rlhf_report import staged_outputs
from phalanx.engine.rng import RngStreams
from phalanx.scenario.build import workload_for
from phalanx.scenario.rlhf import RlhfWorkload
from phalanx.scenario.schema import Scenario


class RealRunError(RuntimeError):
    """A real run that could not complete; the message is one line."""


def run_real(scenario: Scenario, printer: Any, out: Path | None = None) -> RunResult:
    """Run the scenario's nodes as processes; keep their logs under `out` when given."""
    problem = unlabelled_rlhf(scenario)
    if problem is not None:
        raise RealRunError(problem)
    scenario = for_run(scenario)  # the nodes emulate the scenario's network unless it says host
    honest = set(range(scenario.nodes.count)) - scenario.byzantine_nodes()
    with tempfile.TemporaryDirectory(prefix="phalanx-real-") as tmp:
        folder = Path(tmp)
        start = time.time()
        nodes = cluster_up(scenario, folder)
        try:
            results = _wait([n for n in nodes if n.id in honest], start + scenario.real.deadline)
        except RealRunError as err:
            if out is None:
                raise
            raise RealRunError(f"{err} (the nodes' logs: {out / 'nodes'}/<id>.log)") from None
        finally:
            cluster_down(folder, grace=10.0)
            if out is not None:
                keep_nodes(folder, nodes, out)
        wall = time.time() - start
        params: dict[str, np.ndarray] = {}
        for node in nodes:
            if node.id in results:
                with np.load(node.folder / "models.npz") as archive:
                    params.update({k: archive[k] for k in archive.files})
    rows = [{**row, "time": row["time"] - start, "byzantine": False}
            for r in results.values() for row in r["commits"]]
    for row in sorted(rows, key=lambda r: (r["round"], r["node"])):
        printer.commit(_Commit(row), row["time"])
    printer.flush(final=True)
    workload = workload_for(scenario, RngStreams(scenario.seed))
    rounds = rounds_table(rows, workload, params, scenario.training.eval_every,
                          scenario.training.rounds - 1)
    rejections: dict[str, int] = {}
    for r in results.values():
        for reason, count in r["rejections"].items():
            rejections[reason] = rejections.get(reason, 0) + count
    times = rounds["time"]
    span = float(times.max() - times.min()) if len(times) else 0.0  # type: ignore[operator]
    extra = {"mode": "real-tcp", "wall_seconds": wall,
             # from the first commit to the last: process start-up (seconds of torch imports)
             # is reported apart
             "startup_seconds": float(times.min()) if len(times) else wall,  # type: ignore[arg-type]
             "rounds_per_second": (rounds["round"].n_unique() - 1) / span if span else 0.0,
             "bytes_sent": sum(r["transport_bytes_sent"] for r in results.values()),
             "rejected_by_reason": rejections,
             "node_numerics": node_numerics(r.get("numerics") for r in results.values()),
             "members_at_end": [list(m) for m in sorted(
                 {tuple(r["members"]) for r in results.values()})],
             "network": network_summary(scenario, results)}
    staged, figures = staged_outputs(workload, rounds, params, scenario.training.rounds,
                                     f"{scenario.name}: {scenario.nodes.count} real nodes",
                                     [r["preferences"] for r in results.values()
                                      if "preferences" in r])
    extra.update(staged)
    return RunResult(scenario, rounds, pl.DataFrame(),
                     summarize(scenario, rounds, extra, workload=workload), figures=figures)


def unlabelled_rlhf(scenario: Scenario) -> str | None:
    """Why an RLHF run cannot get its preferences over TCP (its crowd works only in the
    simulator, so its reward rounds would find nothing to train on), or None."""
    crowd = scenario.curation.crowd if scenario.curation is not None else None
    if isinstance(scenario.workload, RlhfWorkload) and crowd is not None and (
            crowd.delivery == "live"):
        return ("curation.crowd.delivery live: simulated annotators work only in the "
                "simulator, so no preference would be labelled; set curation.crowd.delivery: "
                "batch to submit their answers from the first honest member")
    return None


def keep_nodes(folder: Path, nodes: list[NodeProc], out: Path) -> None:
    """Move each stopped node's SQLite log (with its WAL, if a node was killed before it
    checkpointed) and its log to `out/nodes/`, and the members' keys to `out/members.json`;
    files an earlier run left there for nodes are replaced, not mixed in."""
    kept = out / "nodes"
    kept.mkdir(parents=True, exist_ok=True)
    for old in kept.iterdir():
        if old.name.split(".", 1)[0].isdigit() and old.suffix in (".log", ".sqlite",
                                                                  ".sqlite-wal", ".sqlite-shm"):
            old.unlink()
    for node in nodes:
        for path in node.folder.glob("node.sqlite*"):
            shutil.move(path, kept / path.name.replace("node", str(node.id), 1))
        if (node.folder / "node.log").exists():
            shutil.move(node.folder / "node.log", kept / f"{node.id}.log")
    shutil.copy(folder / "members.json", out / "members.json")


def network_summary(scenario: Scenario, results: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The network the real nodes ran on: the emulated links and what the emulation did to
    the honest nodes' frames, or the host's own network."""
    if not emulates(scenario):
        return {"method": "host network (loopback; real.network: host): the scenario's "
                          "topology and links are not applied"}
    stats = [r["emulation"] for r in results.values() if "emulation" in r]
    links = [x for s in stats for x in s["links"].values()]
    return {**describe(scenario), "frames_sent": sum(x["frames"] for x in links),
            "frames_lost": sum(x["lost"] for x in links),
            "frames_duplicated": sum(x["duplicated"] for x in links),
            "frames_relayed": sum(s["relayed"] for s in stats)}


class _Commit:
    """Adapter so the live round printer can show rows read back from the node processes."""

    def __init__(self, row: dict[str, Any]) -> None:
        self.round, self.train_loss = row["round"], row["train_loss"]
        self.model_hash = bytes.fromhex(row["model_hash"])


def finished_result(node: NodeProc) -> dict[str, Any] | None:
    """The node's result.json once it has committed the last round."""
    try:
        result: dict[str, Any] = json.loads((node.folder / "result.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return result if result.get("finished") else None


def _wait(nodes: list[NodeProc], deadline: float) -> dict[int, dict[str, Any]]:
    results: dict[int, dict[str, Any]] = {}
    while len(results) < len(nodes):
        for node in nodes:
            if node.id in results:
                continue
            if (result := finished_result(node)) is not None:
                results[node.id] = result
            elif not alive(node.pid):
                log = (node.folder / "node.log").read_text(errors="replace").strip()
                last = log.splitlines()[-1] if log else "no output"
                raise RealRunError(f"node {node.id} exited before finishing: {last}")
        if time.time() > deadline:
            raise RealRunError(f"not finished within real.deadline; finished nodes: "
                               f"{sorted(results)}")
        time.sleep(0.05)
    return results
