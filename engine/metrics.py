"""What a driver keeps of the metrics its nodes emit: the same record in every world."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np

from phalanx.engine.events import (
    CurationCommitted,
    Excluded,
    Finished,
    MembershipChanged,
    Metric,
    Rejected,
    RoundCommitted,
    Suspicion,
    ViewChanged,
)


class MetricLog:
    """Commits (with the time the driver saw them), rejections by reason, exclusions of
    equivocating peers, view changes, membership changes, the failure detector's suspicions,
    and one copy of every committed model keyed by hash, for evaluation after the run."""

    def __init__(self) -> None:
        # (metric, time seen, order): `order` counts every metric recorded, so commits of one
        # simulated instant keep the order they were made in
        self.commits: list[tuple[RoundCommitted, float, int]] = []
        self.rejections: Counter[str] = Counter()
        self.params: dict[bytes, np.ndarray] = {}
        self.finished: set[int] = set()
        self.exclusions: list[tuple[Excluded, float]] = []
        self.view_changes: list[tuple[ViewChanged, float]] = []
        self.membership: list[tuple[MembershipChanged, float]] = []
        # (node, peer, reason) -> times the node began suspecting the peer: bounded by n^2
        self.suspicions: Counter[tuple[int, int, str]] = Counter()
        self.curation: list[CurationCommitted] = []  # curation scenarios only
        self.recorded = 0

    def record(self, metric: Metric, now: float) -> None:
        self.recorded += 1
        match metric:
            case RoundCommitted():
                model = self.params.setdefault(metric.model_hash, metric.params)
                if model is not metric.params:  # the same model (one hash): keep one copy,
                    metric = replace(metric, params=model)  # not every node's, of each round
                self.commits.append((metric, now, self.recorded))
            case Rejected(reason=reason):
                self.rejections[reason] += 1
            case Finished(node=node):
                self.finished.add(node)
            case Excluded():
                self.exclusions.append((metric, now))
            case ViewChanged():
                self.view_changes.append((metric, now))
            case MembershipChanged():
                self.membership.append((metric, now))
            case CurationCommitted():
                self.curation.append(metric)
            case Suspicion(node=node, peer=peer, suspected=True, reason=reason):
                self.suspicions[node, peer, reason] += 1
