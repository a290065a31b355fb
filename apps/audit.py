"""`phalanx audit RUN_DIR`: re-verify every node's log of a finished run, as any peer would.

The folder is one of:
- a run's output folder (`phalanx run --out`): `nodes/<id>.sqlite` with the scenario in
  `scenario.resolved.yaml`; the keys are the scenario's (derived from its seed) for a
  simulated run, those of its `members.json` for a `--real` run (`summary.json` says which);
- a `phalanx cluster` folder: `node-<id>/node.sqlite`, `scenario.yaml`, `members.json`;
- an MPI run's folder (apps/mpi_run.py): `mpi.json` (each rank's key and folder) and
  `scenario.yaml`.

Each node's log is replayed by a fresh node built from the run's scenario, through the same path state sync uses: the leader's signature on each proposal, every
gradient's signature and digest against the set, the commit certificate (a quorum of distinct
members' signed commit votes for that set and model), and the model hash recomputed from the
signed gradients with the bit-exact aggregate and optimizer step. The logs must also agree with
each other round by round.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from phalanx.apps.mpi_run import MPI_FILE, load_ranks
from phalanx.apps.node_log import NodeLog
from phalanx.apps.node_settings import load_members
from phalanx.engine.consensus import equivocations, signed_in
from phalanx.engine.events import Started
from phalanx.engine.node import Node
from phalanx.engine.node.persisted import StoreError
from phalanx.net.crypto import Identity
from phalanx.net.envelope import FrameOpener
from phalanx.net.messages import RoundRecord
from phalanx.scenario.build import member_keys, node_config, node_services, workload_for
from phalanx.scenario.schema import Scenario, ScenarioError, load_scenario


@dataclass(frozen=True)
class NodeAudit:
    node: int
    since: int  # the first round verified: 0, or the round of the checkpoint the node adopted
    rounds: int
    model_hash: str | None  # after the last verified round
    problem: str | None  # why replaying the log stopped, None if every record verified
    # an RLHF run's lineage after the last verified round ("preferences <root> (<n> pairs) ->
    # reward model <hash> -> policy <hash>"): every replayed proposal certified it, and the
    # replay recomputed each hash from the signed gradients
    lineage: str | None = None


Found = tuple[Scenario, FrameOpener, dict[int, Path], tuple[int, ...]]  # ... and observers


def _simulated_run(run_dir: Path) -> Found:
    scenario = load_scenario(run_dir / "scenario.resolved.yaml")
    logs = {int(p.stem): p for p in (run_dir / "nodes").glob("*.sqlite") if p.stem.isdigit()}
    if _mode(run_dir) != "real-tcp":
        _, opener, _ = member_keys(scenario)
        return scenario, opener, logs, scenario.followers
    if not (run_dir / "members.json").exists():
        raise ScenarioError(f"{run_dir}: a --real run's folder needs its members.json (the "
                            f"nodes' public keys)")
    keyring, observers = _members(run_dir)
    return scenario, FrameOpener(keyring), logs, observers


def _mode(run_dir: Path) -> str | None:
    """How the run in `run_dir` ran ("sim", "real-tcp"), from its summary.json."""
    try:
        mode = json.loads((run_dir / "summary.json").read_text()).get("mode")
    except (OSError, ValueError, AttributeError):
        return None
    return mode if isinstance(mode, str) else None


def _members(run_dir: Path) -> tuple[dict[int, bytes], tuple[int, ...]]:
    """(everyone's keys, the observers) of a members.json."""
    members, observers = load_members(run_dir / "members.json")
    keyring = {i: key for i, (key, _) in {**members, **observers}.items()}
    # observers may have joined: the file lists those added while the cluster ran too
    return keyring, tuple(sorted(observers))


def _real_cluster(run_dir: Path) -> Found:
    keyring, observers = _members(run_dir)
    logs = {int(p.parent.name.removeprefix("node-")): p
            for p in run_dir.glob("node-*/node.sqlite")
            if p.parent.name.removeprefix("node-").isdigit()}
    return load_scenario(run_dir / "scenario.yaml"), FrameOpener(keyring), logs, observers


def _mpi_run(run_dir: Path) -> Found:
    keyring, logs = load_ranks(run_dir)
    return load_scenario(run_dir / "scenario.yaml"), FrameOpener(keyring), logs, ()


def find_run(run_dir: Path) -> Found:
    """The scenario, the keys and the node logs of a run, cluster or MPI folder."""
    if (run_dir / MPI_FILE).exists():
        return _mpi_run(run_dir)
    if (run_dir / "members.json").exists() and (run_dir / "scenario.yaml").exists():
        return _real_cluster(run_dir)
    if (run_dir / "scenario.resolved.yaml").exists():
        return _simulated_run(run_dir)
    raise ScenarioError(f"{run_dir}: not a run, cluster or MPI folder (no "
                        f"scenario.resolved.yaml, scenario.yaml with members.json, or {MPI_FILE})")


def audit_run(run_dir: Path) -> tuple[list[NodeAudit], list[str]]:
    """Per-node results, and the rounds in which verified logs disagree."""
    scenario, opener, logs, observers = find_run(run_dir)
    if not logs:
        raise ScenarioError(f"{run_dir}: no node logs")
    from phalanx.engine.rng import RngStreams

    workload = workload_for(scenario, RngStreams(scenario.seed))
    # curation batches and RLHF lineages are checked and replayed as nodes do
    services = node_services(scenario)
    audits, hashes = [], {}
    frames: dict[bytes, bytes] = {}
    for node_id, path in sorted(logs.items()):
        try:
            log = NodeLog(path)
        except StoreError as e:
            raise ScenarioError(str(e)) from None
        # each gradient frame is kept once however many logs hold it (read, then swapped for
        # the copy already kept): memory for one log's frames, not one per log
        records = [replace(r, gradients=tuple(frames.setdefault(f, f) for f in r.gradients))
                   for r in log.each_record()]
        base = log.get("base")
        log.close()
        # verifying signs nothing: any key does for the auditing node's own; it keeps every
        # record it replays in memory (their outcomes are compared across nodes below)
        config = replace(node_config(scenario, node_id), observers=observers,
                         history_window=len(records) + 1)
        node = Node(config, Identity.generate(), workload, opener, services=services)
        node.handle(Started(), 0.0)
        problem = None
        if isinstance(base, bytes):  # the node joined from a checkpoint: audit from there
            problem = node.replay_from(base)
            records = [r for r in records if r.round >= node.round]
        problem = problem or node.replay(records)
        for record in node.history:
            hashes.setdefault(record.round, {})[node_id] = record
        since = node.history[0].round if node.history else 0
        audits.append(NodeAudit(node_id, since, len(node.history), node.model_hash.hex(),
                                problem, _lineage(node)))
    split = []
    for r, logged in sorted(hashes.items()):
        outcomes = {_outcome(opener, rec.certificate): rec for rec in logged.values()}
        if len(outcomes) > 1:
            culprits = _culprits(opener, list(outcomes.values()))
            split.append(f"round {r}: nodes name {len(outcomes)} different outcomes; members "
                         f"proven to equivocate: {culprits or 'none in this round'}")
    return audits, split


def _lineage(node: Node) -> str | None:
    service = node.service("rlhf")
    if service is None:
        return None
    line = service.lineage()  # type: ignore[attr-defined]
    return (f"preferences {line.preferences_root.hex()[:16]} ({line.preferences} pairs) -> "
            f"reward model {line.reward_hash.hex()[:16]} -> policy {line.policy_hash.hex()[:16]}")


def _culprits(opener: FrameOpener, records: list[RoundRecord]) -> list[int]:
    """Members the records of one round prove equivocated (two messages in one slot, or a
    broken lock): the same proofs a node accuses with online."""
    return sorted({first.sender for first, _ in equivocations(
        env for record in records for env in signed_in(record, opener))})


def _outcome(opener: FrameOpener, certificate: tuple[bytes, ...]) -> tuple[bytes, bytes]:
    vote = opener(certificate[0]).message
    return vote.set_digest, vote.model_hash  # type: ignore[union-attr]
