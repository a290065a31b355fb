"""The crowd part of a scenario's `curation:` section: simulated annotators, Byzantine
annotation nodes and the reputation policy.

`CrowdFields` is the mixin the curation section is built on, so its three fields sit at the
top of `curation:`:

    curation:
      crowd:                       # simulated annotators on the synthetic tasks
        annotators: 20
        groups:
          - {kind: honest, share: 0.8, accuracy: [0.65, 0.9]}
          - {kind: colluder, share: 0.2}
      byzantine:                   # annotation nodes that misbehave with records
        - {nodes: [5], behaviour: drop}
      reputation: {decay: 0.99}    # null: every annotator weighs 1
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from phalanx.engine.curation.crowd import AnnotatorGroup, CrowdSpec, SimulatedCrowd
from phalanx.engine.curation.reputation import FLAGS, ReputationPolicy
from phalanx.scenario.section import Section

NodeId = Annotated[int, Field(ge=0)]
Seconds = Annotated[float, Field(ge=0)]
Probability = Annotated[float, Field(ge=0, le=1)]

__all__ = ["ANNOTATION_BEHAVIOURS", "AnnotationNodeAttack", "AnnotatorGroupSpec",
           "CrowdFields", "CrowdSection", "ReputationSpec"]

ANNOTATION_BEHAVIOURS = ("drop", "delay", "forge", "equivocate")
Range = Annotated[list[Probability], Field(min_length=2, max_length=2)]
Positive = Annotated[float, Field(gt=0)]


class AnnotatorGroupSpec(Section):
    """Simulated annotators of one kind who behave alike; give `count` or `share`."""

    kind: Annotated[Literal["honest", "random", "constant", "colluder", "permuter"], Field(
        description=(
            "honest: right with their accuracy, errors leaning to a favourite class (`bias`); "
            "random: click uniformly; constant: always one class; colluder: every colluder "
            "gives a task the same wrong label; permuter: relabels consistently through a "
            "permutation (`adversary_accuracy` of the time)."))]
    count: Annotated[Annotated[int, Field(ge=0)] | None, Field(description=(
        "How many annotators the group has; give this or share."))] = None
    share: Annotated[Probability | None, Field(description=(
        "The group's share of crowd.annotators (shares are rounded to whole annotators by "
        "largest remainder); give this or count."))] = None
    accuracy: Annotated[Range, Field(default_factory=lambda: [0.6, 0.9], description=(
        "honest: [low, high]; each annotator's mean accuracy is drawn uniformly from it."))]
    per_class: Annotated[list[Probability], Field(default_factory=list, description=(
        "honest: one fixed accuracy per class (as many as crowd.classes) instead of "
        "`accuracy`; empty: drawn."))]
    class_spread: Annotated[Probability, Field(description=(
        "honest: each class's accuracy is the annotator's mean ± up to this."))] = 0.05
    bias: Annotated[Probability, Field(description=(
        "honest: share of their errors that go to their favourite wrong class."))] = 0.5
    adversary_accuracy: Annotated[Probability, Field(description=(
        "permuter: probability that an answer follows the permutation (else random)."
        ))] = 0.9
    seconds: Annotated[Annotated[list[Positive], Field(min_length=2, max_length=2)] | None,
                       Field(description=(
                           "[low, high]: each annotator's mean seconds per task is drawn "
                           "uniformly from it; null: 8 to 20 for honest annotators, 1 to 4 "
                           "for the others (they do not read the text)."))] = None
    spread: Annotated[float, Field(ge=0, le=3, description=(
        "Each task takes the annotator's mean seconds × lognormal(0, spread)."))] = 0.3

    @model_validator(mode="after")
    def _one_size(self) -> AnnotatorGroupSpec:
        if (self.count is None) == (self.share is None):
            raise ValueError("give exactly one of 'count' or 'share'")
        if self.accuracy[0] > self.accuracy[1]:
            raise ValueError(f"accuracy [{self.accuracy[0]}, {self.accuracy[1]}]: low is "
                             f"above high")
        if self.seconds is not None and self.seconds[0] > self.seconds[1]:
            raise ValueError(f"seconds [{self.seconds[0]}, {self.seconds[1]}]: low is above "
                             f"high")
        return self

    def engine_group(self, count: int) -> AnnotatorGroup:
        return AnnotatorGroup(
            self.kind, count, accuracy=(self.accuracy[0], self.accuracy[1]),
            per_class=tuple(self.per_class), class_spread=self.class_spread, bias=self.bias,
            adversary_accuracy=self.adversary_accuracy,
            seconds=None if self.seconds is None else (self.seconds[0], self.seconds[1]),
            spread=self.spread)


def _largest_remainder(total: int, shares: list[float]) -> list[int]:
    """Whole numbers summing to round(total × sum(shares)) in proportion to `shares`; ties in
    the remainders go to the earlier group."""
    exact = [total * s for s in shares]
    counts = [int(x) for x in exact]
    wanted = round(sum(exact))
    order = sorted(range(len(shares)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:max(0, wanted - sum(counts))]:
        counts[i] += 1
    return counts


class CrowdSection(Section):
    """Simulated annotators labelling the synthetic tasks (curation.tasks), whose true
    answers are hidden from everyone but the run's report. Each annotator asks a curation node for tasks,
    answers them at the pace of their speed, signs each answer with their own key and submits
    it; an answer not committed within `patience` seconds is submitted again through another
    node, as a real client would."""

    annotators: Annotated[Annotated[int, Field(ge=1, le=100_000)] | None, Field(description=(
        "Annotators in all, shared among the groups that give a `share`; null: only groups "
        "with a `count`."))] = None
    groups: Annotated[list[AnnotatorGroupSpec], Field(
        min_length=1, default_factory=lambda: [AnnotatorGroupSpec(kind="honest", count=10)],
        description="The kinds of annotators, each with its size and skill.")]
    start: Annotated[Seconds, Field(description=(
        "Simulated second at which the first annotators begin; the others begin within "
        "`stagger` seconds after it."))] = 0.0
    stagger: Annotated[Seconds, Field(description=(
        "Annotators' start times are spread uniformly over this many seconds."))] = 5.0
    batch: Annotated[int, Field(ge=1, le=100, description=(
        "Tasks an annotator asks a node for at once."))] = 5
    patience: Annotated[Positive, Field(description=(
        "Seconds an annotator waits for a submitted answer to be committed before submitting "
        "it again through another node (the first one may have dropped it)."))] = 30.0
    report_every: Annotated[int, Field(ge=1, le=10_000, description=(
        "labels.parquet gets a row every this many committed rounds (when the snapshot "
        "changed since the last row) and one after the last."))] = 1
    idle: Annotated[Positive, Field(description=(
        "Seconds an annotator waits before asking again when a node has no task for them."
        ))] = 10.0
    delivery: Annotated[Literal["live", "batch"], Field(description=(
        "live: annotators work through the nodes while the run goes on (who answers what "
        "depends on timing; simulation only). batch: the answers are fixed in advance by the "
        "seed (each task, gold included, by `redundancy` distinct annotators, each "
        "annotator's records signed as one chain) and the first honest member submits them "
        "all when it starts, so a --real run commits the same records as the simulation."))] = "live"

    @model_validator(mode="after")
    def _sizes(self) -> CrowdSection:
        if any(g.share is not None for g in self.groups) and self.annotators is None:
            raise ValueError("groups give a share: say how many annotators in all "
                             "(annotators: N)")
        if sum(self.counts()) < 1:
            raise ValueError("the groups add up to no annotator")
        return self

    def counts(self) -> list[int]:
        """Annotators per group, in group order."""
        shared = [i for i, g in enumerate(self.groups) if g.share is not None]
        rounded = _largest_remainder(self.annotators or 0,
                                     [self.groups[i].share or 0.0 for i in shared])
        by_share = dict(zip(shared, rounded, strict=True))
        return [by_share.get(i, g.count or 0) for i, g in enumerate(self.groups)]

    def classes_problem(self, classes: int) -> str | None:
        """Why the groups do not fit tasks of `classes` answers, or None."""
        for i, group in enumerate(self.groups):
            if group.per_class and len(group.per_class) != classes:
                return (f"crowd.groups.{i}.per_class: {len(group.per_class)} accuracies for "
                        f"tasks of {classes} answers")
        return None

    def simulated(self, tasks: int, classes: int, seed: int) -> SimulatedCrowd:
        """The crowd on the synthetic tasks t0000... drawn from `seed` (the scenario's, as
        engine/curation/synthetic.py draws them: the crowd's hidden truth is theirs), each
        with `classes` possible answers."""
        groups = [g.engine_group(n) for g, n in zip(self.groups, self.counts(), strict=True)]
        return SimulatedCrowd(CrowdSpec(tasks=tasks, classes=classes, seed=seed), groups)


class AnnotationNodeAttack(Section):
    """Annotation nodes that misbehave with the records their annotators submit: they
    acknowledge each submission, then drop it, forward it late, forward forged or altered
    records, or forward different records to different members. They cannot make a forged
    record count: every honest node verifies and refuses it."""

    nodes: Annotated[list[NodeId], Field(min_length=1, description=(
        "Ids of the misbehaving annotation nodes."))]
    behaviour: Annotated[Literal["drop", "delay", "forge", "equivocate"], Field(description=(
        "drop: never forward; delay: forward `delay` seconds late; forge: forward each record "
        "altered and a forged one in the annotator's name beside it; equivocate: forward each "
        "record to a different part of the members."))]
    delay: Annotated[Positive, Field(description=(
        "delay: seconds each record is held before it is forwarded."))] = 10.0
    at: Annotated[Seconds, Field(description=(
        "Simulated second from which they misbehave; honest before it."))] = 0.0
    duration: Annotated[Positive | None, Field(description=(
        "Seconds they misbehave for; null: to the end of the run."))] = None

    def params(self) -> dict[str, float | None]:
        """The attack's parameters as engine/byzantine/curation.py takes them."""
        timing = {"at": self.at, "duration": self.duration}
        return {**timing, "delay": self.delay} if self.behaviour == "delay" else timing


class ReputationSpec(Section):
    """How much each annotator's answers count (engine/curation/reputation.py): skill from
    gold accuracy and from agreement with the gold-weighted vote of the others, with decay;
    spam flags that lower the weight and can suspend; rewards per accepted answer."""

    decay: Annotated[float, Field(gt=0, le=1, description=(
        "Weight of an annotator's answer relative to their next one (the newest counts 1): "
        "0.99 halves evidence every ~69 answers; 1: nothing fades."))] = 0.99
    gold_share: Annotated[Probability, Field(description=(
        "Share of skill taken from gold accuracy; the rest from agreement with the others' "
        "gold-weighted vote."))] = 0.5
    prior_skill: Annotated[Probability, Field(description=(
        "Skill of a newcomer (0: chance level, 1: perfect): their weight before any "
        "evidence."))] = 0.5
    prior_strength: Annotated[Annotated[float, Field(ge=0)], Field(description=(
        "Pseudo-answers at prior_skill that each skill estimate starts with."))] = 4.0
    iterations: Annotated[int, Field(ge=1, le=20, description=(
        "Rounds of weights → the others' weighted vote → weights."))] = 3
    min_answers: Annotated[int, Field(ge=1, description=(
        "Answers before the too-fast and constant rules apply."))] = 10
    min_seconds: Annotated[Seconds, Field(description=(
        "too_fast: a median below this many seconds per task, as a node measured them."
        ))] = 2.0
    constant_share: Annotated[Probability, Field(description=(
        "constant: one answer makes up at least this share of an annotator's answers."
        ))] = 0.9
    min_gold: Annotated[int, Field(ge=1, description=(
        "Gold answers before the low-gold-accuracy rule applies."))] = 5
    min_gold_accuracy: Annotated[Probability, Field(description=(
        "low_gold_accuracy: decayed gold accuracy below this."))] = 0.4
    suspend_on: Annotated[list[Literal["too_fast", "constant", "low_gold_accuracy",
                                       "equivocation"]], Field(description=(
        "Flags that suspend by themselves (a suspended annotator weighs 0 and earns "
        "nothing)."), default_factory=lambda: ["low_gold_accuracy", "equivocation"])]
    suspend_flags: Annotated[int, Field(ge=1, description=(
        "This many flags at once suspend."))] = 2
    flag_penalty: Annotated[Probability, Field(description=(
        "The weight is multiplied by this for each flag."))] = 0.5
    reward_per_annotation: Annotated[Annotated[float, Field(ge=0)], Field(description=(
        "Reward for one accepted answer of an annotator of weight 1."))] = 1.0

    def policy(self) -> ReputationPolicy:
        values = self.model_dump()
        values["suspend_on"] = tuple(f for f in FLAGS if f in self.suspend_on)
        return ReputationPolicy(**values)


class CrowdFields(Section):
    """The crowd's fields of the `curation:` section (the section subclasses this)."""

    crowd: Annotated[CrowdSection | None, Field(description=(
        "Simulated annotators on synthetic tasks with a hidden truth; null: none."))] = None
    byzantine: Annotated[list[AnnotationNodeAttack], Field(default_factory=list, description=(
        "Annotation nodes that misbehave with the records they are given."))]
    reputation: Annotated[ReputationSpec | None, Field(description=(
        "Annotators' weights, spam flags and rewards; null: off, every annotator weighs 1."
        ))] = ReputationSpec()

    @model_validator(mode="after")
    def _one_attack_per_node(self) -> CrowdFields:
        seen: set[int] = set()
        for i, attack in enumerate(self.byzantine):
            twice = sorted(seen & set(attack.nodes))
            if twice:
                raise ValueError(f"byzantine.{i}: node ids {twice} already misbehave in an "
                                 f"earlier entry")
            seen |= set(attack.nodes)
        return self

    def misbehaving(self) -> dict[int, AnnotationNodeAttack]:
        """Node id -> its attack."""
        return {node: attack for attack in self.byzantine for node in attack.nodes}
