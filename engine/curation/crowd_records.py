"""A simulated crowd's answers as signed records, fixed in advance (`curation.crowd.delivery:
batch`).

A live crowd (sim/crowd.py) works through the nodes while the run goes on, so who answers
which task depends on timing, which a real cluster cannot reproduce. A batch crowd's answers
are a pure function of the crowd and its seed: each task is answered by `redundancy`
distinct annotators drawn by `SimulatedCrowd.label` (gold tasks are answered as ordinary
tasks: the assignment policy's gold_rate does not apply), and each annotator signs their
answers with their own key (`annotator_identity`) as one chain (seq 0, 1, ... each naming its
predecessor), in task order, with client times that add up the seconds the crowd drew for
each answer. The same scenario gives the same bytes in the simulator and on a real node.
"""

from __future__ import annotations

from phalanx.engine.rng import RngStreams
from phalanx.net.crypto import Identity

from .client import AnnotatorClient
from .crowd import SimulatedCrowd
from .tasks import Answer, TaskSet

__all__ = ["annotator_identity", "annotator_kinds", "crowd_records"]


def annotator_identity(seed: int, index: int) -> Identity:
    """The key of the scenario's `index`-th simulated annotator (in the crowd's order)."""
    return Identity.derive(RngStreams(seed).seed("curation", "annotator-keys"), index)


def annotator_kinds(crowd: SimulatedCrowd, seed: int) -> dict[bytes, str]:
    """Annotator public key -> kind (honest, colluder, ...), for the run's report only."""
    return {annotator_identity(seed, i).public_key: a.kind
            for i, a in enumerate(crowd.annotators)}


def crowd_records(crowd: SimulatedCrowd, tasks: TaskSet, redundancy: int,
                  seed: int) -> tuple[bytes, ...]:
    """Every answer of the crowd as an encoded signed record: annotator after annotator (in
    the crowd's order), each one's chain in seq order, so a node can take them one by one.
    Tasks the crowd labels but `tasks` lacks (withheld by a safety filter) are skipped.
    CrowdError when `redundancy` is not in 1..annotators."""
    index = {a.id: i for i, a in enumerate(crowd.annotators)}
    clients = [AnnotatorClient(annotator_identity(seed, i)) for i in range(len(index))]
    chains: list[list[bytes]] = [[] for _ in clients]
    clock_ms = [0] * len(clients)  # each annotator's own clock, from their first answer
    for label in crowd.label(redundancy):
        task = tasks.by_id.get(label.task)
        if task is None:
            continue
        i = index[label.worker]
        clock_ms[i] += round(label.seconds * 1000)
        record = clients[i].sign(task, Answer((label.label,)), client_time_ms=clock_ms[i])
        chains[i].append(record.encode())
    return tuple(record for chain in chains for record in chain)
