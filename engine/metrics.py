"""What a driver keeps of the metrics its nodes emit: the same record in every world."""

from __future__ import annotations

from collections import Counter

import numpy as np

from phalanx.engine.events import Finished, Metric, Rejected, RolledBack, RoundCommitted


class MetricLog:
    """Commits (with the time the driver saw them), rejections by reason, rollbacks, and one
    copy of every committed model keyed by hash, for evaluation after the run."""

    def __init__(self) -> None:
        self.commits: list[tuple[RoundCommitted, float]] = []
        self.rejections: Counter[str] = Counter()
        self.rollbacks: list[tuple[int, int, float]] = []  # (node, first round undone, time)
        self.params: dict[bytes, np.ndarray] = {}
        self.finished: set[int] = set()

    def record(self, metric: Metric, now: float) -> None:
        match metric:
            case RoundCommitted():
                self.params.setdefault(metric.model_hash, metric.params)
                self.commits.append((metric, now))
            case Rejected(reason=reason):
                self.rejections[reason] += 1
            case RolledBack(node=node, round=round):
                self.rollbacks.append((node, round, now))
            case Finished(node=node):
                self.finished.add(node)
