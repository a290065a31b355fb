"""A scenario's `curation:` section: annotation nodes, the tasks, assignment and batch bounds.

With the section, every node of the run runs the curation service (engine/curation/service.py):
members are full nodes (they train, vote and curate), and the last `annotation_nodes` node
ids are annotation nodes, outside the membership: they follow the chain like observers, take
submissions and forward them to the members. Without it a run is exactly as before.

Models here are the schema's kind (unknown fields refused, frozen, no inf/nan, no bool taken
for a number) but live beside it, so sections others add (scenario/crowd.py) stay apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from phalanx.engine.curation.assignment import AssignmentPolicy
from phalanx.engine.curation.crowd import SimulatedCrowd
from phalanx.engine.curation.messages import MAX_BATCH_RECORDS
from phalanx.engine.curation.synthetic import SCHEMAS, synthetic_tasks
from phalanx.engine.curation.tasks import TaskSet
from phalanx.engine.rlhf.safety import filter_tasks
from phalanx.engine.rlhf.toy import ToyTask, preference_tasks
from phalanx.scenario.crowd import CrowdFields
from phalanx.scenario.safety import SafetySection
from phalanx.scenario.section import Section

Count = Annotated[int, Field(strict=True)]


class SyntheticTasks(Section):
    """Generated tasks with a hidden true answer (drawn from the seed): the truth of the
    first `gold` tasks is also their gold answer."""

    kind: Annotated[Literal["synthetic"], Field(description="`synthetic`.")] = "synthetic"
    count: Annotated[Count, Field(ge=1, le=100_000, description="How many tasks.")] = 100
    classes: Annotated[Count, Field(ge=2, le=64, description=(
        "Options of a single_choice task, points of a rating scale (1 to classes); pairwise "
        "tasks always have two completions."))] = 3
    schema_kind: Annotated[Literal[SCHEMAS], Field(description=(  # type: ignore[valid-type]
        "The tasks' schema kind: single_choice, rating or pairwise."))] = "single_choice"
    gold: Annotated[Count, Field(ge=0, description=(
        "How many tasks are gold (honeypots with a known answer)."))] = 10

    @property
    def answers(self) -> int:
        """How many answers a task has: its classes, or left and right for pairwise."""
        return 2 if self.schema_kind == "pairwise" else self.classes

    @model_validator(mode="after")
    def _gold_fits(self) -> SyntheticTasks:
        if self.gold > self.count:
            raise ValueError(f"gold: {self.gold} gold tasks but only {self.count} tasks")
        return self


_TOY = ToyTask()  # the defaults of the preference task fields


class PreferenceTasks(Section):
    """Pairwise tasks on the RLHF toy (engine/rlhf/toy.py): a prompt and two completions of
    letter tokens; the hidden truth prefers the completion with the larger share of the
    `target` token (drawn from the seed, the first `gold` tasks carry it as gold answer)."""

    kind: Annotated[Literal["preferences"], Field(description="`preferences`.")]
    count: Annotated[Count, Field(ge=1, le=100_000, description="How many tasks.")] = 100
    gold: Annotated[Count, Field(ge=0, description=(
        "How many tasks are gold (honeypots with a known answer)."))] = 10
    vocab: Annotated[Count, Field(ge=2, le=26, description=(
        "Tokens in the vocabulary, written a, b, c, ..."))] = _TOY.vocab
    prompt_length: Annotated[Count, Field(ge=1, le=256, description=(
        "Tokens in a prompt."))] = _TOY.prompt_length
    completion_length: Annotated[Count, Field(ge=2, le=256, description=(
        "Tokens in a completion."))] = _TOY.completion_length
    target: Annotated[Count, Field(ge=0, le=25, description=(
        "The token whose share in a completion the hidden preference rewards (below "
        "vocab)."))] = _TOY.target
    # the floor keeps drawing two completions of different scores quick: below it nearly
    # every completion holds no target token and the draw would retry for a long time
    max_target_share: Annotated[float, Field(ge=0.05, le=1, description=(
        "A completion draws the target token with a probability uniform in [0, this]."
        ))] = _TOY.max_target_share

    answers: ClassVar[int] = 2  # left or right (a simulated annotator never answers a tie)

    @model_validator(mode="after")
    def _fits(self) -> PreferenceTasks:
        if self.gold > self.count:
            raise ValueError(f"gold: {self.gold} gold tasks but only {self.count} tasks")
        if self.target >= self.vocab:
            raise ValueError(f"target: token {self.target} is not below vocab {self.vocab}")
        return self

    def toy(self) -> ToyTask:
        return ToyTask(self.vocab, self.prompt_length, self.completion_length, self.target,
                       self.max_target_share)


class TaskFile(Section):
    """Tasks from a JSONL or CSV file (engine/curation/io.py's columns), by its suffix."""

    kind: Annotated[Literal["file"], Field(description="`file`.")]
    path: Annotated[str, Field(min_length=1, description=(
        "The file, .jsonl or .csv; a relative path is taken from the working directory."))]

    @model_validator(mode="after")
    def _suffix(self) -> TaskFile:
        if Path(self.path).suffix.lower() not in (".jsonl", ".csv"):
            raise ValueError("path: a task file ends in .jsonl or .csv")
        return self


class BatchBounds(Section):
    """What one round may commit (a voter refuses a proposal carrying more)."""

    max_records: Annotated[Count, Field(ge=1, le=MAX_BATCH_RECORDS, description=(
        "Records per round at most."))] = 512
    max_bytes: Annotated[Count, Field(ge=1024, le=64 * 1024 * 1024, description=(
        "Bytes of records per round at most."))] = 256 * 1024


class CurationSection(CrowdFields):
    """Crowdsourced labelling on the run's nodes (docs/curation.md)."""

    annotation_nodes: Annotated[Count, Field(ge=0, le=1000, description=(
        "How many of the last node ids are annotation nodes: outside the membership, they "
        "follow the chain, take submissions and forward them to the members."))] = 0
    tasks: Annotated[SyntheticTasks | PreferenceTasks | TaskFile, Field(
        discriminator="kind", description=(
            "The tasks every curation node starts with, chosen by `kind`."))] = SyntheticTasks()
    redundancy: Annotated[Count, Field(ge=1, le=100, description=(
        "Answers wanted per task (k)."))] = 3
    gold_rate: Annotated[float, Field(ge=0, le=1, description=(
        "Share of an annotator's tasks that are gold."))] = 0.1
    lease_rounds: Annotated[Count, Field(ge=1, description=(
        "Committed rounds a task assignment (lease) lasts."))] = 20
    batch: Annotated[BatchBounds, Field(description=(
        "What one round may commit."))] = BatchBounds()
    safety: Annotated[SafetySection | None, Field(description=(
        "The safety filter: tasks with refused text are withheld from annotators; null: "
        "none."))] = None

    @model_validator(mode="after")
    def _crowd_fits(self) -> CurationSection:
        if self.crowd is None:
            return self
        if isinstance(self.tasks, TaskFile):
            raise ValueError("crowd: simulated annotators answer synthetic or preference "
                             "tasks (tasks: {kind: synthetic} or {kind: preferences}); a task "
                             "file has no hidden truth")
        problem = self.crowd.classes_problem(self.tasks.answers)
        if problem is not None:
            raise ValueError(problem)
        annotators = sum(self.crowd.counts())
        if self.crowd.delivery == "batch" and self.redundancy > annotators:
            raise ValueError(f"redundancy: {self.redundancy} answers per task, but a batch "
                             f"crowd has only {annotators} annotators to give them")
        return self

    def batch_records(self) -> int:
        """How many records a batch crowd delivers at most (every task times redundancy;
        0 without one)."""
        if self.crowd is None or self.crowd.delivery != "batch" or isinstance(
                self.tasks, TaskFile):
            return 0
        return self.tasks.count * self.redundancy

    def simulated_crowd(self, seed: int) -> SimulatedCrowd | None:
        """The simulated annotators on the synthetic or preference tasks (None without a
        crowd): both draw their hidden truth as the crowd does, from the seed's "truth"."""
        if self.crowd is None or isinstance(self.tasks, TaskFile):
            return None
        return self.crowd.simulated(self.tasks.count, self.tasks.answers, seed)

    def policy(self, seed: int) -> AssignmentPolicy:
        return AssignmentPolicy(self.redundancy, self.gold_rate, self.lease_rounds, seed)

    def task_set(self, seed: int) -> TaskSet:
        """The tasks annotators are offered: those the safety filter leaves; ValueError (one
        line: the file's bad rows, `;`-separated, or the safety hook's failure) otherwise."""
        return self.screened_tasks(seed)[0]

    def withheld(self, seed: int) -> int:
        """How many tasks the safety filter withholds (0 without `safety`)."""
        return self.screened_tasks(seed)[1] if self.safety is not None else 0

    def screened_tasks(self, seed: int) -> tuple[TaskSet, int]:
        """The tasks after the safety filter, and how many it withheld."""
        tasks = self._all_tasks(seed)
        return (tasks, 0) if self.safety is None else filter_tasks(tasks, self.safety.filter())

    def _all_tasks(self, seed: int) -> TaskSet:
        spec = self.tasks
        if isinstance(spec, SyntheticTasks):
            return synthetic_tasks(spec.count, spec.classes, spec.schema_kind, spec.gold,
                                   seed).tasks
        if isinstance(spec, PreferenceTasks):
            return preference_tasks(spec.toy(), spec.count, spec.gold, seed).tasks
        try:
            data = Path(spec.path).read_bytes()
        except OSError as e:
            raise ValueError(f"curation.tasks.path: cannot read {spec.path[:200]} "
                             f"({e.strerror})") from None
        # here, not at the top: the task files' reader brings polars, which `phalanx validate`
        # and `--help` must not pay for (tests/test_cli_startup.py)
        from phalanx.engine.curation.io import TaskImportError, tasks_from_csv, tasks_from_jsonl

        parse = tasks_from_csv if spec.path.lower().endswith(".csv") else tasks_from_jsonl
        try:
            return parse(data)
        except TaskImportError as e:
            raise ValueError(f"curation.tasks.path {spec.path[:200]}: "
                             f"{'; '.join(e.problems)}") from None
