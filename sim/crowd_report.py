"""What a simulated curation run reports: the labels against the hidden truth, agreement and
the annotators' weights after every committed round that changed the curation snapshot
(labels.parquet), the final label of every task (task_labels.parquet) and a summary.

Everything is read from one honest curation node's desk (its committed snapshot, the same
on every honest node) and the crowd's hidden truth and kinds, which no node ever sees.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import polars as pl

from phalanx.engine.curation.agreement import AgreementError, krippendorff_alpha
from phalanx.engine.curation.crowd import SimulatedCrowd
from phalanx.engine.curation.desk import CurationDesk
from phalanx.engine.curation.labels import Annotations
from phalanx.engine.curation.log import AnswerRow

__all__ = ["CurationRecorder", "LabelPoint"]


@dataclass(frozen=True, slots=True)
class LabelPoint:
    """One row of labels.parquet: the snapshot after `round` committed."""

    round: int
    time: float
    records: int  # committed records
    labelled: int  # regular (non-gold) tasks with a label
    accuracy: float | None  # share of the labelled regular tasks whose label is the truth
    coverage: float  # labelled / regular tasks
    mean_confidence: float | None
    alpha: float | None  # Krippendorff's alpha (nominal) over every committed answer
    alpha_honest: float | None  # ... over the honest annotators' answers only
    weight_honest_mean: float | None
    weight_honest_median: float | None
    weight_adversarial_mean: float | None  # every annotator who is not honest
    weight_colluder_mean: float | None
    colluder_answers_mean: float | None  # committed answers per colluder so far
    suspended: int


def _mean(values: list[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def _alpha(rows: list[AnswerRow]) -> float | None:
    records = [(r.task.hex(), r.annotator.hex(), r.answer.choice[0]) for r in rows
               if len(r.answer.choice) == 1 and not r.answer.text]
    if not records:
        return None
    try:
        return krippendorff_alpha(Annotations.from_records(records))
    except AgreementError:
        return None


class CurationRecorder:
    """Collects a `LabelPoint` whenever the reference desk's snapshot root changes."""

    def __init__(self, crowd: SimulatedCrowd, kinds: Mapping[bytes, str],
                 desk: Callable[[], CurationDesk | None], every: int = 1) -> None:
        """`kinds`: annotator key -> its kind (honest, random, constant, permuter, colluder);
        `desk`: the reference node's desk, None while it is down; a row every `every`
        rounds at most (and one at `close`)."""
        self.crowd = crowd
        self.kinds = dict(kinds)
        self._desk = desk
        self.every = every
        self.points: list[LabelPoint] = []
        self._root: bytes | None = None

    def on_commit(self, round: int, time: float) -> None:
        if round % self.every == 0:
            self._record(round, time)

    def close(self, time: float) -> None:
        """The run is over: a last row for what changed since the last one."""
        desk = self._desk()
        if desk is not None:
            self._record(desk.round, time)

    def _record(self, round: int, time: float) -> None:
        desk = self._desk()
        if desk is None or desk.round != round or desk.root == self._root:
            return
        self._root = desk.root
        self.points.append(self._point(desk, round, time))

    def _regular(self, desk: CurationDesk) -> set[str]:
        gold = {desk.tasks.tasks[d].id for d in desk.tasks.gold}
        # the tasks offered: none the safety filter withheld (curation.safety)
        return {t for t in self.crowd.tasks if t in desk.tasks.by_id and t not in gold}

    def _point(self, desk: CurationDesk, round: int, time: float) -> LabelPoint:
        regular = self._regular(desk)
        labelled = [row for row in desk.labels()
                    if row.task_id in regular and row.answer is not None]
        right = sum(1 for row in labelled if row.answer.choice == (self.crowd.truth[row.task_id],))
        answers = desk.answers()
        standings = desk.standings()
        weights: dict[str, list[float]] = {}
        for key, standing in standings.items():
            weights.setdefault(self.kinds.get(key, "other"), []).append(standing.weight)
        honest = weights.get("honest", [])
        adversarial = [w for kind, ws in weights.items() if kind != "honest" for w in ws]
        per_annotator = Counter(r.annotator for r in answers)
        colluders = [k for k, kind in self.kinds.items() if kind == "colluder"]
        return LabelPoint(
            round=round, time=time, records=desk.committed, labelled=len(labelled),
            accuracy=right / len(labelled) if labelled else None,
            coverage=len(labelled) / max(1, len(regular)),
            mean_confidence=_mean([row.confidence for row in labelled
                                   if row.confidence is not None]),
            alpha=_alpha(answers),
            alpha_honest=_alpha([r for r in answers if self.kinds.get(r.annotator) == "honest"]),
            weight_honest_mean=_mean(honest),
            weight_honest_median=statistics.median(honest) if honest else None,
            weight_adversarial_mean=_mean(adversarial),
            weight_colluder_mean=_mean(weights.get("colluder", [])),
            colluder_answers_mean=_mean([float(per_annotator[k]) for k in colluders]),
            suspended=sum(1 for s in standings.values() if s.suspended))

    # --- outputs -------------------------------------------------------------------------

    def rounds_frame(self) -> pl.DataFrame:
        """labels.parquet: one row per recorded round."""
        schema = {name: (pl.Int64 if name in ("round", "records", "labelled", "suspended")
                         else pl.Float64) for name in LabelPoint.__slots__}
        return pl.DataFrame([asdict(p) for p in self.points], schema=schema, orient="row")

    def labels_frame(self) -> pl.DataFrame:
        """task_labels.parquet: every task, its final label (null: none yet) and the truth."""
        desk = self._desk()
        rows = {row.task_id: row for row in (desk.labels() if desk is not None else [])}
        gold = set() if desk is None else {desk.tasks.tasks[d].id for d in desk.tasks.gold}
        out = []
        for task in self.crowd.tasks:
            row = rows.get(task)
            label = None if row is None or row.answer is None else row.answer.choice[0]
            truth = self.crowd.truth[task]
            out.append({"task": task, "gold": task in gold, "truth": truth, "label": label,
                        "correct": label == truth if label is not None else None,
                        "confidence": None if row is None else row.confidence,
                        "answers": 0 if row is None else row.answers,
                        "method": None if row is None else row.method})
        return pl.DataFrame(out, schema={"task": pl.String, "gold": pl.Boolean,
                                         "truth": pl.Int64, "label": pl.Int64,
                                         "correct": pl.Boolean, "confidence": pl.Float64,
                                         "answers": pl.Int64, "method": pl.String})

    def colluders_below_after(self) -> float | None:
        """Committed answers per colluder by the first recorded round from which the
        colluders' mean weight stays below the honest median; None if it never does (or
        there are no colluders)."""
        since: LabelPoint | None = None
        for p in self.points:
            below = (p.weight_colluder_mean is not None and p.weight_honest_median is not None
                     and p.weight_colluder_mean < p.weight_honest_median)
            if not below:
                since = None
            elif since is None:
                since = p
        return None if since is None else since.colluder_answers_mean

    def summary(self) -> dict[str, Any]:
        last = self.points[-1] if self.points else None
        final = self.labels_frame().filter(~pl.col("gold") & pl.col("label").is_not_null())
        kinds = Counter(self.kinds.values())
        return {
            "label_accuracy": (final["correct"].sum() / len(final)) if len(final) else None,
            "labelled_tasks": len(final),
            "tasks": len(self.crowd.tasks),
            "annotators": dict(sorted(kinds.items())),
            "records_committed": None if last is None else last.records,
            "alpha": None if last is None else last.alpha,
            "alpha_honest": None if last is None else last.alpha_honest,
            "weight_honest_median": None if last is None else last.weight_honest_median,
            "weight_colluder_mean": None if last is None else last.weight_colluder_mean,
            "colluders_below_honest_median_after_answers": self.colluders_below_after(),
            "suspended": None if last is None else last.suspended,
        }
