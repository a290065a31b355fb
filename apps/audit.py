"""`phalanx audit RUN_DIR`: re-verify every node's log of a finished run, as any peer would.

Each node's `nodes/<id>.sqlite` (or, in a `phalanx cluster` folder, `node-<id>/node.sqlite`,
with the keys of its `members.json`) is replayed by a fresh node built from the run's scenario, through the same path state sync uses: the leader's signature on each proposal, every
gradient's signature and digest against the set, the commit certificate (a quorum of distinct
members' signed commit votes for that set and model), and the model hash recomputed from the
signed gradients with the bit-exact aggregate and optimizer step. The logs must also agree with
each other round by round.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from phalanx.apps.node_log import NodeLog
from phalanx.apps.node_settings import load_members
from phalanx.engine.consensus import equivocations, signed_in
from phalanx.engine.events import Started
from phalanx.engine.node import Node
from phalanx.net.crypto import Identity
from phalanx.net.envelope import FrameOpener
from phalanx.net.messages import RoundRecord
from phalanx.scenario.build import member_keys, node_config, workload_for
from phalanx.scenario.schema import Scenario, ScenarioError, load_scenario


@dataclass(frozen=True)
class NodeAudit:
    node: int
    since: int  # the first round verified: 0, or the round of the checkpoint the node adopted
    rounds: int
    model_hash: str | None  # after the last verified round
    problem: str | None  # why replaying the log stopped, None if every record verified


Found = tuple[Scenario, FrameOpener, dict[int, Path], tuple[int, ...]]  # ... and observers


def _simulated_run(run_dir: Path) -> Found:
    resolved = run_dir / "scenario.resolved.yaml"
    if not resolved.exists():
        raise ScenarioError(f"{run_dir}: no scenario.resolved.yaml or members.json (not a run "
                            f"or cluster folder?)")
    scenario = load_scenario(resolved)
    _, opener, _ = member_keys(scenario)
    return (scenario, opener, {int(p.stem): p for p in (run_dir / "nodes").glob("*.sqlite")},
            tuple(scenario.nodes.observers))


def _real_cluster(run_dir: Path) -> Found:
    members, observers = load_members(run_dir / "members.json")
    keyring = {i: key for i, (key, _) in {**members, **observers}.items()}
    logs = {int(p.parent.name.removeprefix("node-")): p
            for p in run_dir.glob("node-*/node.sqlite")}
    # observers may have joined: the file lists those added while the cluster ran too
    return (load_scenario(run_dir / "scenario.yaml"), FrameOpener(keyring), logs,
            tuple(sorted(observers)))


def audit_run(run_dir: Path) -> tuple[list[NodeAudit], list[str]]:
    """Per-node results, and the rounds in which verified logs disagree."""
    cluster = (run_dir / "members.json").exists()
    scenario, opener, logs, observers = (_real_cluster if cluster else _simulated_run)(run_dir)
    if not logs:
        raise ScenarioError(f"{run_dir}: no node logs")
    from phalanx.engine.rng import RngStreams

    workload = workload_for(scenario, RngStreams(scenario.seed))
    audits, hashes = [], {}
    for node_id, path in sorted(logs.items()):
        log = NodeLog(path)
        records, base = log.records(), log.read_all().get("base")
        log.close()
        # verifying signs nothing: any key does for the auditing node's own; it keeps every
        # record it replays in memory (their outcomes are compared across nodes below)
        config = replace(node_config(scenario, node_id), observers=observers,
                         history_window=len(records) + 1)
        node = Node(config, Identity.generate(), workload, opener)
        node.handle(Started(), 0.0)
        problem = None
        if isinstance(base, bytes):  # the node joined from a checkpoint: audit from there
            problem = node.replay_from(base)
            records = [r for r in records if r.round >= node.round]
        problem = problem or node.replay(records)
        for record in node.history:
            hashes.setdefault(record.round, {})[node_id] = record
        since = node.history[0].round if node.history else 0
        audits.append(NodeAudit(node_id, since, len(node.history), node.model_hash.hex(), problem))
    split = []
    for r, logged in sorted(hashes.items()):
        outcomes = {_outcome(opener, rec.certificate): rec for rec in logged.values()}
        if len(outcomes) > 1:
            culprits = _culprits(opener, list(outcomes.values()))
            split.append(f"round {r}: nodes name {len(outcomes)} different outcomes; members "
                         f"proven to equivocate: {culprits or 'none in this round'}")
    return audits, split


def _culprits(opener: FrameOpener, records: list[RoundRecord]) -> list[int]:
    """Members the records of one round prove equivocated (two messages in one slot, or a
    broken lock): the same proofs a node accuses with online."""
    return sorted({first.sender for first, _ in equivocations(
        env for record in records for env in signed_in(record, opener))})


def _outcome(opener: FrameOpener, certificate: tuple[bytes, ...]) -> tuple[bytes, bytes]:
    vote = opener(certificate[0]).message
    return vote.set_digest, vote.model_hash  # type: ignore[union-attr]
