"""The desk's snapshot as the API's models: the one place that turns desk values into
response bodies (hex for bytes, lists for tuples, usernames beside keys)."""

from __future__ import annotations

from collections.abc import Callable

from phalanx.engine.curation.desk import AnnotatorView, CurationDesk, PlatformStats
from phalanx.engine.curation.tasks import Task

from .models import AnnotatorStats, Platform, RoundPoint, TaskView

NameOf = Callable[[bytes], str | None]  # public key -> username on this node


def task_view(task: Task) -> TaskView:
    return TaskView(digest=task.digest.hex(), id=task.id, kind=task.kind,  # type: ignore[arg-type]
                    text=task.text, options=list(task.options),
                    completions=list(task.completions), scale=list(task.scale),
                    max_length=task.max_length)


def annotator_stats(view: AnnotatorView, name_of: NameOf) -> AnnotatorStats:
    return AnnotatorStats(public_key=view.annotator.hex(), username=name_of(view.annotator),
                          committed=view.committed, pending=view.pending,
                          gold_seen=view.gold_seen, gold_correct=view.gold_correct,
                          weight=view.weight, reward=view.reward, suspended=view.suspended,
                          flags=list(view.flags))


def platform(stats: PlatformStats) -> Platform:
    return Platform(round=stats.round, snapshot_root=stats.root.hex(), tasks=stats.tasks,
                    gold=stats.gold, records=stats.records, pending=stats.pending,
                    annotators=stats.annotators, labelled=stats.labelled,
                    mean_confidence=stats.mean_confidence, alpha=stats.alpha)


def history(stats: PlatformStats) -> list[RoundPoint]:
    return [RoundPoint(round=p.round, records=p.records, alpha=p.alpha) for p in stats.history]


def rank_of(desk: CurationDesk, annotator: bytes) -> int | None:
    """1-based place on the full leaderboard, or None without committed records."""
    for place, view in enumerate(desk.leaderboard(limit=1 << 30), start=1):
        if view.annotator == annotator:
            return place
    return None
