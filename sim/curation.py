"""The crowd side of a simulated curation run: the scenario's simulated annotators working
through the curation nodes, and the report of what the committed labels are worth.

`SimWorld` builds one when the scenario has `curation.crowd`, starts it with the run and
hands it every `CurationCommitted` metric; a live crowd's annotators submit through
`SimWorld.submit` as a web or API client would through a node's door, a batch crowd's records
are submitted by the first honest member's curation service itself (engine/curation/crowd_records.py),
as on a real node.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from phalanx.engine.curation.crowd_records import annotator_kinds
from phalanx.engine.curation.desk import CurationDesk
from phalanx.engine.curation.records import RecordRefused
from phalanx.engine.events import CurationCommitted
from phalanx.sim.crowd import SimulatedAnnotators
from phalanx.sim.crowd_report import CurationRecorder

if TYPE_CHECKING:
    from phalanx.sim.world import SimWorld

__all__ = ["SimulatedCuration"]


class _Door:
    """The world as simulated annotators see it (sim/crowd.py's CurationPort)."""

    def __init__(self, world: SimWorld) -> None:
        self.world = world

    @property
    def now(self) -> float:
        return self.world.now

    @property
    def closed(self) -> bool:
        members = self.world.scenario.members
        return all(h.finished for h in self.world.hosts if h.up and h.id in members)

    def call_at(self, at: float, fn: Callable[..., None], *args: Any) -> None:
        self.world.call_at(at, fn, *args)

    def desk(self, node: int) -> CurationDesk | None:
        return self.world.desk(node)

    def submit(self, node: int, record: bytes) -> bytes | None:
        answer = self.world.submit(node, record)
        if answer is None:
            return None
        if not answer.ok:
            reason = answer.reason if answer.reason in RecordRefused.REASONS else "malformed"
            raise RecordRefused(reason, answer.detail)
        return answer.result


class SimulatedCuration:
    def __init__(self, world: SimWorld) -> None:
        scenario = world.scenario
        section = scenario.curation
        crowd = section.simulated_crowd(scenario.seed) if section is not None else None
        if section is None or section.crowd is None or crowd is None:
            raise ValueError("a simulated crowd needs curation.crowd in the scenario")
        self.annotators: SimulatedAnnotators | None = None  # a live crowd's
        if section.crowd.delivery == "live":
            # annotators start at an annotation node (the platform's doors; any member when
            # the run has none) and move on through the others, then the members
            doors = [*scenario.annotation_nodes, *scenario.members]
            self.annotators = SimulatedAnnotators(_Door(world), crowd, section.crowd, doors,
                                                  scenario.seed,
                                                  doors=len(scenario.annotation_nodes) or None)
        # a batch crowd's records are the curation service's to submit (crowd_records.py)
        kinds = (self.annotators.kinds if self.annotators is not None
                 else annotator_kinds(crowd, scenario.seed))
        honest = [m for m in scenario.members if m not in scenario.byzantine_nodes()]
        self.reference = honest[0] if honest else scenario.members[0]
        self.recorder = CurationRecorder(crowd, kinds, lambda: world.desk(self.reference),
                                         section.crowd.report_every)
        self.world = world

    def start(self) -> None:
        if self.annotators is not None:
            self.annotators.start()

    def on_commit(self, metric: CurationCommitted) -> None:
        if metric.node == self.reference:
            self.recorder.on_commit(metric.round, self.world.now)

    def refusals(self) -> dict[str, int]:
        """Records refused by the honest curation nodes, by reason, summed over them."""
        byzantine = {*self.world.scenario.byzantine_nodes(),
                     *(self.world.scenario.curation.misbehaving() if
                       self.world.scenario.curation else {})}
        total: dict[str, int] = {}
        for host in self.world.hosts:
            desk = self.world.desk(host.id) if host.id not in byzantine else None
            for reason, count in (desk.counts.items() if desk is not None else ()):
                total[reason] = total.get(reason, 0) + count
        return dict(sorted(total.items()))

    def close(self) -> None:
        """The run is over."""
        self.recorder.close(self.world.now)

    def summary(self) -> dict[str, Any]:
        actions = self.annotators.counts if self.annotators is not None else {}
        return {**self.recorder.summary(), "refused_by_honest_nodes": self.refusals(),
                "annotator_actions": dict(sorted(actions.items()))}
