"""The scenario file: one YAML document describes a whole run (pydantic schema, strict).

Every model forbids unknown fields and every error becomes one line naming the field path, the
problem and the value given (`ScenarioError`). `Scenario.resolved_yaml()` echoes the config with
every default filled in, so a result folder always says exactly what ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)

from phalanx.engine.model.config import FFN, GPTConfig

if TYPE_CHECKING:
    from phalanx.engine.aggregate import Need

NodeId = Annotated[int, Field(ge=0)]
Seconds = Annotated[float, Field(ge=0)]
Probability = Annotated[float, Field(ge=0, le=1)]


class ScenarioError(ValueError):
    """A scenario that cannot run; `str()` is one line naming the field and what is allowed."""

    def __init__(self, message: str) -> None:
        # user text (a key, a tag, a path) may hold line breaks: escape them to stay one line
        super().__init__(message.replace("\r", "\\r").replace("\n", "\\n"))


class ScenarioRefused(ScenarioError):
    """A well-formed scenario that could not stay live: its aggregation rule needs more
    gradients than the members are sure to send (the Byzantine matrix reports such a cell as
    refused instead of running it)."""


class InputsRefused(ValueError):
    """Raised inside validation for what `parse_scenario` turns into `ScenarioRefused`."""


class Strict(BaseModel):
    # no inf/nan anywhere: a scenario of infinite bandwidth says `null`, not `.inf`
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# ---- nodes, topology, links ----------------------------------------------------------------


class NodesSpec(Strict):
    count: Annotated[int, Field(ge=1, le=100_000)]
    speed: Annotated[float, Field(gt=0)] = 1.0  # relative compute speed of every node
    speeds: dict[NodeId, Annotated[float, Field(gt=0)]] = {}  # per-node overrides
    # nodes that start outside the membership: they follow the chain without a vote, and may
    # ask to join it (faults: kind join); n, f and the quorum count the other nodes
    observers: list[NodeId] = []


class CompleteTopology(Strict):
    kind: Literal["complete"] = "complete"


class RingTopology(Strict):
    kind: Literal["ring"]


class RandomRegularTopology(Strict):
    kind: Literal["random_regular"]
    degree: Annotated[int, Field(ge=2)] = 4


class WattsStrogatzTopology(Strict):
    kind: Literal["watts_strogatz"]
    k: Annotated[int, Field(ge=2)] = 4
    p: Probability = 0.1


class BarabasiAlbertTopology(Strict):
    kind: Literal["barabasi_albert"]
    m: Annotated[int, Field(ge=1)] = 2


class GeoClustersTopology(Strict):
    kind: Literal["geo_clusters"]
    clusters: Annotated[int, Field(ge=1)] = 3
    intra_latency: Seconds = 0.002
    inter_latency: Seconds = 0.05


Topology = Annotated[
    CompleteTopology | RingTopology | RandomRegularTopology | WattsStrogatzTopology
    | BarabasiAlbertTopology | GeoClustersTopology,
    Field(discriminator="kind"),
]


class LinksSpec(Strict):
    latency: Seconds = 0.005  # one-way propagation per hop (geo_clusters sets its own)
    jitter: Seconds = 0.001
    jitter_dist: Literal["uniform", "normal", "exponential"] = "uniform"
    bandwidth: Annotated[float, Field(gt=0)] | None = 1e9  # bits/s per link; null = infinite
    loss: Probability = 0.0
    duplicate: Probability = 0.0
    reorder: Probability = 0.0
    reorder_delay: Seconds = 0.01


# ---- workload and training -----------------------------------------------------------------


class IidSplit(Strict):
    """Shards drawn IID (the default; engine/workloads/splits.py has every split)."""

    kind: Literal["iid"] = "iid"


class DirichletSplit(Strict):
    """Each class shared among the nodes in proportions drawn from Dirichlet(alpha)."""

    kind: Literal["dirichlet"]
    alpha: Annotated[float, Field(gt=0)] = 0.5  # small: a class on few nodes; large: IID


class ExtremeSplit(Strict):
    """The samples sorted by label and cut into one contiguous shard per node."""

    kind: Literal["extreme"]


class GammaSimilaritySplit(Strict):
    """A fraction gamma of the samples spread IID, the rest sorted by label and cut."""

    kind: Literal["gamma_similarity"]
    gamma: Probability = 0.5  # 1: IID, 0: extreme


Split = Annotated[IidSplit | DirichletSplit | ExtremeSplit | GammaSimilaritySplit,
                  Field(discriminator="kind")]


class _SplitByName(Strict):
    """Lets a workload's `split` be a bare kind (`split: extreme`), like `aggregator: krum`."""

    @model_validator(mode="before")
    @classmethod
    def _split_from_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("split"), str):
            return {**data, "split": {"kind": data["split"]}}
        return data


class LinearWorkload(Strict):
    kind: Literal["linear"]
    dim: Annotated[int, Field(ge=1, le=1_000_000)] = 16
    samples_per_node: Annotated[int, Field(ge=1)] = 256
    noise: Annotated[float, Field(ge=0)] = 0.1
    eval_samples: Annotated[int, Field(ge=1)] = 1000


class MlpWorkload(_SplitByName):
    kind: Literal["mlp"]
    features: Annotated[int, Field(ge=1)] = 16
    classes: Annotated[int, Field(ge=2)] = 4
    hidden: Annotated[int, Field(ge=1)] = 32
    samples_per_node: Annotated[int, Field(ge=1)] = 512
    label_noise: Probability = 0.05
    eval_samples: Annotated[int, Field(ge=1)] = 2000
    skew: Probability = 0.0  # non-IID: share of a node's shard drawn from its home class
    split: Split = IidSplit()  # non-IID splits share one pool of n × samples_per_node

    @model_validator(mode="after")
    def _one_skew(self) -> MlpWorkload:
        if self.skew > 0 and self.split.kind != "iid":
            raise ValueError(f"skew ({self.skew}) and split ({self.split.kind}) both make the "
                             f"shards non-IID: give one of them")
        return self


class DigitsWorkload(_SplitByName):
    """scikit-learn's bundled 8×8 digits (engine/workloads/digits.py): 1438 training images
    shared among the nodes by `split`, 359 held out; a one-hidden-layer classifier."""

    kind: Literal["digits"]
    hidden: Annotated[int, Field(ge=1)] = 64
    # null: share out every training image; a number: a seeded subset of n × samples_per_node
    samples_per_node: Annotated[int, Field(ge=1)] | None = None
    split: Split = IidSplit()


class TransformerWorkload(Strict):
    """A small GPT on the synthetic Markov corpus (engine/workloads/transformer.py)."""

    kind: Literal["transformer"]
    vocab: Annotated[int, Field(ge=2, le=62)] = 16
    order: Annotated[int, Field(ge=0, le=4)] = 2
    concentration: Annotated[float, Field(gt=0)] = 0.3
    block_size: Annotated[int, Field(ge=2)] = 32
    n_layer: Annotated[int, Field(ge=1)] = 2
    n_head: Annotated[int, Field(ge=1)] = 2
    n_embd: Annotated[int, Field(ge=2)] = 32
    ffn: FFN = "swiglu"
    n_experts: Annotated[int, Field(ge=1)] = 4
    top_k: Annotated[int, Field(ge=1)] = 2
    tokens_per_node: Annotated[int, Field(ge=64)] = 20_000
    val_tokens: Annotated[int, Field(ge=64)] = 8_192

    def gpt_config(self) -> GPTConfig:
        return GPTConfig(vocab_size=self.vocab, block_size=self.block_size,
                         n_layer=self.n_layer, n_head=self.n_head, n_embd=self.n_embd,
                         ffn=self.ffn, n_experts=self.n_experts,
                         top_k=min(self.top_k, self.n_experts))

    @model_validator(mode="after")
    def _buildable(self) -> TransformerWorkload:
        self.gpt_config()  # ConfigError (a ValueError) names the bad field
        if self.tokens_per_node < self.block_size + 2:
            raise ValueError(f"tokens_per_node {self.tokens_per_node} cannot fill a window of "
                             f"block_size {self.block_size} + 1")
        return self


class UserWorkload(BaseModel):
    """A workload from the user's own package (engine/plugins.py): `kind` is its entry point
    name in `phalanx.workloads` or `module:Class`; the other fields are the class's keyword
    parameters, checked against its constructor, `Class(n_nodes=, rngs=, batch=, **params)`.
    A class that declares a pydantic model `Params` has them validated by it as well."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)
    kind: str

    @model_validator(mode="after")
    def _buildable(self) -> UserWorkload:
        import inspect

        from phalanx.engine.workloads import workload_class

        cls = workload_class(self.kind)
        params = dict(self.model_extra or {})
        signature = inspect.signature(cls.__init__)
        takes = {name for name, p in signature.parameters.items()
                 if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)} - {"self"}
        if not any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values()):
            own = sorted(takes - {"n_nodes", "rngs", "batch"})
            for key in params:
                if key not in own:
                    raise ValueError(f"workload {self.kind!r} has no parameter {key!r}; its "
                                     f"parameters: {', '.join(own) or '(none)'}")
            if not {"n_nodes", "rngs", "batch"} <= takes:
                raise ValueError(f"workload {self.kind!r}: its constructor must take "
                                 f"n_nodes, rngs and batch as keywords")
        checker = getattr(cls, "Params", None)
        if isinstance(checker, type) and issubclass(checker, BaseModel):
            try:
                checker.model_validate(params)
            except ValidationError as err:
                raise ValueError(f"workload {self.kind!r}: "
                                 f"{describe_error(err.errors()[0])}") from None
        return self


_BUILTIN_WORKLOADS = ("linear", "mlp", "digits", "transformer")


def _workload_tag(value: Any) -> str:
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return kind if kind in _BUILTIN_WORKLOADS else "kind"  # the tag names the field at fault


Workload = Annotated[
    Annotated[LinearWorkload, Tag("linear")] | Annotated[MlpWorkload, Tag("mlp")]
    | Annotated[DigitsWorkload, Tag("digits")] | Annotated[TransformerWorkload, Tag("transformer")]
    | Annotated[UserWorkload, Tag("kind")],
    Discriminator(_workload_tag)]


PRE_STEP_SHAPE = "a step is a name or a mapping of `name` and its parameters ({name: bucketing, s: 3})"


def _pre_step(step: Any) -> str | dict[str, Any]:
    """One pre-aggregation step: a name (`nnm`) or a mapping of `name` and the step's
    parameters (`{name: bucketing, s: 3}`), checked by building the step."""
    from phalanx.engine.aggregate import make_aggregator

    if isinstance(step, str):
        name, params = step, {}
    elif isinstance(step, dict) and isinstance(step.get("name"), str):
        name, params = step["name"], {k: v for k, v in step.items() if k != "name"}
    else:
        # (the loader adds "(got ...)" to a value that is not a mapping)
        raise ValueError(PRE_STEP_SHAPE + (f"; got {step!r}" if isinstance(step, dict) else ""))
    for key, value in params.items():
        if not isinstance(value, int | float | str):
            raise ValueError(f"{name}: parameter {key!r} must be a number or a word; got {value!r}")
    make_aggregator("mean", 0, [(name, params)])  # unknown step, unknown parameter, bad value
    return step


class AggregatorSpec(Strict):
    """A robust rule with its parameters and pre-aggregation steps; a bare name also works
    (`aggregator: krum`)."""

    kind: str = "mean"
    # pre-aggregation steps applied in order: a name (bucketing, nnm) or {name: ..., param: ...}
    pre: list[Annotated[Any, AfterValidator(_pre_step)]] = []
    params: dict[str, float | int | str] = {}
    # how many Byzantine inputs the rule is built to tolerate (default: the scenario's f, and
    # through membership changes ⌊(n − 1)/3⌋ of the round's members); at most the scenario's f
    f: Annotated[int, Field(ge=0, strict=True)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"kind": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _buildable(self) -> AggregatorSpec:
        from phalanx.engine.aggregate import make_aggregator

        make_aggregator(self.kind, 0, self.steps(), **self.params)
        return self

    def steps(self) -> tuple[str | tuple[str, dict[str, Any]], ...]:
        """`pre` as make_aggregator takes it: a name, or (name, {param: value})."""
        return tuple(s if isinstance(s, str) else
                     (s["name"], {k: v for k, v in s.items() if k != "name"}) for s in self.pre)

    def frozen_steps(self) -> tuple[str | tuple[str, tuple[tuple[str, Any], ...]], ...]:
        """`pre` for the node's (hashable) config: a name, or (name, ((param, value), ...))."""
        return tuple(s if isinstance(s, str) else (s[0], tuple(sorted(s[1].items())))
                     for s in self.steps())

    def rule_f(self, n: int) -> int:
        """The rule's tolerance with n members: `f`, never above ⌊(n − 1)/3⌋."""
        return (n - 1) // 3 if self.f is None else min(self.f, (n - 1) // 3)

    def need(self, f_rule: int, most: int) -> Need | None:
        """The inputs the rule needs when built to tolerate `f_rule` (probed up to `most` for a
        rule that does not declare it)."""
        from phalanx.engine.aggregate import make_aggregator, required_inputs

        rule = make_aggregator(self.kind, f_rule, self.steps(), **self.params)
        return required_inputs(rule, f_rule, most)

    def fits(self, n: int) -> bool:
        """With n members, the n − f gradients sure to arrive are enough for the rule."""
        sure = n - (n - 1) // 3
        need = self.need(self.rule_f(n), sure)
        return need is not None and need.inputs <= sure

    def inputs_problem(self, n: int) -> str | None:
        """Why n members cannot be sure to feed the rule, in one line; None when they can.

        A round is sure to receive only n − f gradients (f members may be silent, crashed or
        excluded for equivocating), and a rule that needs more stalls the run in endless view
        changes. Refusing is the only safe answer: building the rule for a smaller f on the
        inputs that did arrive would let a Byzantine leader propose a set of n − f holding all
        f Byzantine gradients to a rule that tolerates fewer.
        """
        if self.fits(n):
            return None
        f = (n - 1) // 3
        sure = n - f
        f_rule = self.rule_f(n)
        need = self.need(f_rule, sure)
        from phalanx.engine.aggregate import describe, make_aggregator

        label = describe(make_aggregator(self.kind, f_rule, self.steps(), **self.params))
        needs = need.why if need is not None else f"more than {sure} inputs"
        if self.f is None:
            head = (f"{label} needs {needs} with f = {f_rule}, but only n − f = {sure} are sure "
                    f"to arrive (f members may be silent or crashed)")
        else:
            head = (f"{label} needs {needs} with training.aggregator.f = {f_rule}, but only "
                    f"n − f = {n} − {f} = {sure} are sure to arrive (f members may be silent "
                    f"or crashed)")
        lower = next((g for g in range(f_rule - 1, -1, -1)
                      if (k := self.need(g, sure)) is not None and k.inputs <= sure), None)
        alternative = (f"lower the rule's tolerance (training.aggregator.f: {lower})"
                       if lower is not None else None)
        smallest = self.smallest_n(n)
        if smallest is not None:
            tail = f"the smallest n that works is {smallest}" + (
                f", or {alternative}" if alternative else "")
        else:
            tail = "no n works while the rule tolerates f = ⌊(n − 1)/3⌋" + (
                f"; {alternative}" if alternative else "")
        return f"training.aggregator: {head}; {tail}"

    def smallest_n(self, n: int, most: int = 100_000) -> int | None:
        """The fewest members above n whose n − f sure gradients the rule can take, with
        f = ⌊(n − 1)/3⌋ (and the rule's own f when set); None if none up to `most` (or, with
        the rule's tolerance following f, none within 100 more tolerated faults)."""
        if self.f is not None:
            need = self.need(self.f, 4 * n + 16)  # fixed: a probed rule is tried this far
            if need is None:
                return None
            m = n + 1
            while m - (m - 1) // 3 < need.inputs:
                m += 1
            return m if m <= most else None
        for f in range((n - 1) // 3, (n - 1) // 3 + 100):  # n = 3f + 1 .. 3f + 3
            need = self.need(f, 2 * f + 3)
            if need is not None and need.inputs <= 2 * f + 3:
                m = max(n + 1, 3 * f + 1 + max(0, need.inputs - (2 * f + 1)))
                return m if m <= most else None
        return None


class TrainingSpec(Strict):
    rounds: Annotated[int, Field(ge=1)]
    lr: Annotated[float, Field(gt=0)] = 0.05
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9  # heavy ball, or Adam's beta1
    optimizer: Literal["sgd", "adam"] = "sgd"  # the step every node applies to the aggregate
    batch: Annotated[int, Field(ge=1)] = 32
    aggregator: AggregatorSpec = AggregatorSpec()
    max_gradient_norm: Annotated[float, Field(gt=0)] | None = None  # larger gradients: invalid
    # "broadcast": every vote to everyone (O(n^2) per phase, fastest for small n); "leader":
    # votes to the view's leader, which broadcasts each quorum (O(n), for large n)
    votes: Literal["broadcast", "leader"] = "broadcast"
    # honest nodes send beta * momentum + (1 - beta) * gradient (worker momentum, 0 = off)
    worker_momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    # "adam": honest nodes send their own Adam direction (beta1 = `momentum`, beta2 0.99) and
    # the shared step is plain SGD at `lr` (optimizer sgd): top-k's friend under Adam (issue 6)
    worker_optimizer: Literal["none", "adam"] = "none"
    step_time: Seconds = 0.05  # simulated seconds per gradient step at speed 1.0
    round_timeout: Annotated[float, Field(gt=0)] = 1.0  # leader: wait for all, then a quorum
    # suspect crashed or silent members: the leader stops waiting for them and a member that
    # missed the last committed set does not lead (engine/node/detector.py); off: the fixed
    # waits above, as before issue 16
    failure_detector: bool = True
    view_timeout: Annotated[float, Field(gt=0)] = 3.0  # others: wait this long for a proposal
    eval_every: Annotated[int, Field(ge=1)] = 1
    max_time: Annotated[float, Field(gt=0)] | None = None  # simulated-time cap; default derived

    @model_validator(mode="after")
    def _timeouts(self) -> TrainingSpec:
        if self.view_timeout <= self.round_timeout:
            raise ValueError(
                f"view_timeout ({self.view_timeout}) must exceed round_timeout "
                f"({self.round_timeout}): followers must outwait the leader's gather")
        if self.worker_optimizer == "adam" and (self.optimizer != "sgd" or self.worker_momentum):
            raise ValueError("worker_optimizer adam is the only optimizer: the shared step is "
                             "plain SGD (optimizer sgd, worker_momentum 0; momentum is the "
                             "senders' beta1)")
        return self


def _known_behaviour(name: str) -> str:
    """A built-in behaviour, or a user's attack (engine/plugins.py)."""
    from phalanx.engine.byzantine import behaviour_class

    behaviour_class(name)  # ValueError naming the known ones
    return name


class ByzantineSpec(Strict):
    nodes: list[NodeId]
    behaviour: Annotated[str, AfterValidator(_known_behaviour)]
    from_round: Annotated[int, Field(ge=0)] = 0
    params: dict[str, float | int | str | bool] = {}  # the behaviour's own, e.g. {epsilon: 100}

    @model_validator(mode="after")
    def _params_fit(self) -> ByzantineSpec:
        from phalanx.engine.byzantine import make_behaviour

        make_behaviour(self.behaviour, self.from_round, frozenset(self.nodes), 0, **self.params)
        return self


# ---- faults --------------------------------------------------------------------------------


class FaultBase(Strict):
    at: Seconds | None = None  # simulated time at which the fault starts ...
    at_round: Annotated[int, Field(ge=0)] | None = None  # ... or when a node first commits it
    duration: Annotated[float, Field(gt=0)] | None = None  # seconds until healed; null = never

    @model_validator(mode="after")
    def _one_trigger(self) -> FaultBase:
        if (self.at is None) == (self.at_round is None):
            raise ValueError("give exactly one of 'at' (seconds) or 'at_round'")
        return self

    def nodes_involved(self) -> set[int]:
        return set()


class CrashFault(FaultBase):
    kind: Literal["crash"]
    nodes: Annotated[list[NodeId], Field(min_length=1)]
    keep_disk: bool = True  # restart from the node's checkpoint and log, or from nothing

    def nodes_involved(self) -> set[int]:
        return set(self.nodes)


def _disjoint(groups: list[list[int]]) -> list[list[int]]:
    seen: set[int] = set()
    for group in groups:
        twice = seen & set(group) or {n for n in group if group.count(n) > 1}
        if twice:
            raise ValueError(f"node ids {sorted(twice)} appear in more than one place")
        seen |= set(group)
    return groups


class PartitionFault(FaultBase):
    """Clean split: nodes in different groups cannot talk (unlisted nodes form one more group)."""

    kind: Literal["partition"]
    groups: Annotated[list[list[NodeId]], Field(min_length=1), AfterValidator(_disjoint)]

    def nodes_involved(self) -> set[int]:
        return {n for g in self.groups for n in g}


class IsolateFault(FaultBase):
    kind: Literal["isolate"]
    nodes: Annotated[list[NodeId], Field(min_length=1)]

    def nodes_involved(self) -> set[int]:
        return set(self.nodes)


class OneWayFault(FaultBase):
    """Traffic from `source` to `target` is dropped; the other direction still flows."""

    kind: Literal["one_way"]
    source: Annotated[list[NodeId], Field(min_length=1)]
    target: Annotated[list[NodeId], Field(min_length=1)]

    def nodes_involved(self) -> set[int]:
        return set(self.source) | set(self.target)


class BridgeFault(FaultBase):
    """Two sides cut apart; the nodes in neither side (the bridge) still reach both."""

    kind: Literal["bridge"]
    sides: Annotated[list[list[NodeId]], Field(min_length=2, max_length=2),
                     AfterValidator(_disjoint)]

    def nodes_involved(self) -> set[int]:
        return {n for g in self.sides for n in g}


class DegradeFault(FaultBase):
    """Extra latency and loss on every link touching `nodes` (all links when omitted)."""

    kind: Literal["degrade"]
    nodes: list[NodeId] | None = None
    extra_latency: Seconds = 0.0
    loss: Probability = 0.0

    def nodes_involved(self) -> set[int]:
        return set(self.nodes or [])


class SlowFault(FaultBase):
    kind: Literal["slow"]
    nodes: Annotated[list[NodeId], Field(min_length=1)]
    factor: Annotated[float, Field(gt=1)] = 10.0  # compute takes this many times longer

    def nodes_involved(self) -> set[int]:
        return set(self.nodes)


class ChangeRequest(FaultBase):
    """Not a fault but a step of the membership's timeline: each listed node asks to join the
    members (an observer) or to leave them, and the round that commits the request applies it
    from its next round on (engine/consensus/membership.py)."""

    nodes: Annotated[list[NodeId], Field(min_length=1)]

    @model_validator(mode="after")
    def _no_duration(self) -> ChangeRequest:
        if self.duration is not None:
            raise ValueError("a membership change has no duration (a node that joined "
                             "leaves with a 'leave' of its own)")
        return self


class JoinRequest(ChangeRequest):
    kind: Literal["join"]


class LeaveRequest(ChangeRequest):
    kind: Literal["leave"]


Fault = Annotated[
    CrashFault | PartitionFault | IsolateFault | OneWayFault | BridgeFault | DegradeFault
    | SlowFault | JoinRequest | LeaveRequest,
    Field(discriminator="kind"),
]


class NemesisSpec(Strict):
    """Seeded random faults: every `interval` seconds one fault of a random kind, never more
    than `max_faulty` nodes faulty at once (default: f)."""

    kinds: Annotated[
        list[Literal["crash", "isolate", "partition", "slow", "degrade"]], Field(min_length=1)]
    interval: Annotated[float, Field(gt=0)] = 5.0
    duration: Annotated[float, Field(gt=0)] = 2.0
    start: Seconds = 1.0
    stop: Seconds | None = None
    max_faulty: Annotated[int, Field(ge=1)] | None = None
    keep_disk: bool = True


# ---- gradients on the wire -------------------------------------------------------------------


class AdaptiveSpec(Strict):
    """Top-k whose ratio each node picks per gradient from its measured uplink: as many entries
    as reach its peers within `target_seconds`, clamped to [min_ratio, max_ratio]."""

    target_seconds: Annotated[float, Field(gt=0)]
    min_ratio: Annotated[float, Field(gt=0, le=1)]
    max_ratio: Annotated[float, Field(gt=0, le=1)]

    @model_validator(mode="after")
    def _ordered(self) -> AdaptiveSpec:
        if self.min_ratio > self.max_ratio:
            raise ValueError(f"min_ratio {self.min_ratio} is above max_ratio {self.max_ratio}")
        return self


class CompressionSpec(Strict):
    """How gradients go on the wire (engine/compress): every member uses this method, and a
    gradient in another encoding is refused."""

    method: str = "none"  # none, topk, randomk, threshold, fp16, bf16, int8, sign, powersgd
    params: dict[str, float | int | str] = {}  # the method's own, e.g. {ratio: 0.1}
    error_feedback: bool = True  # the sender carries its compression error into the next one
    adaptive: AdaptiveSpec | None = None  # top-k only: the ratio follows the link
    # < 1: leaky error feedback, the residual shrinks by this factor each round
    feedback_decay: Annotated[float, Field(ge=0, le=1)] = 1.0

    @model_validator(mode="after")
    def _known(self) -> CompressionSpec:
        from phalanx.engine.encoding import GradientEncoding

        GradientEncoding(self.method, self.params, self.error_feedback, self.bounds)
        return self

    @property
    def bounds(self) -> tuple[float, float, float] | None:
        """(target seconds, min ratio, max ratio) when adaptive."""
        a = self.adaptive
        return None if a is None else (a.target_seconds, a.min_ratio, a.max_ratio)


class PrivacySpec(Strict):
    """Differential privacy of each node's releases (engine/privacy.py): its gradient clipped to
    L2 norm `clip` plus Gaussian noise of standard deviation `noise_multiplier * clip`."""

    clip: Annotated[float, Field(gt=0)]
    noise_multiplier: Annotated[float, Field(gt=0)]
    delta: Annotated[float, Field(gt=0, lt=1)] = 1e-5  # the (eps, delta) the summary reports


# ---- expectations, real mode, the scenario -------------------------------------------------


class ExpectSpec(Strict):
    final_loss_below: float | None = None
    final_accuracy_above: Probability | None = None
    honest_hashes_equal: bool | None = None
    rounds_committed_at_least: Annotated[int, Field(ge=0)] | None = None
    dropped_messages_at_least: Annotated[int, Field(ge=0)] | None = None
    # exactly these nodes end excluded (for equivocation) by every running honest node
    excluded: list[NodeId] | None = None
    excluded_within_rounds: Annotated[int, Field(ge=0)] | None = None  # of its first offence
    members_at_end: list[NodeId] | None = None  # every running honest node ends with these


class RealSpec(Strict):
    """Settings for `--real`: wall-clock timeouts replace the simulated ones."""

    host: str = "127.0.0.1"
    base_port: Annotated[int, Field(ge=0, le=65535)] = 0  # 0: pick free ports
    round_timeout: Annotated[float, Field(gt=0)] = 5.0
    view_timeout: Annotated[float, Field(gt=0)] = 15.0
    deadline: Annotated[float, Field(gt=0)] = 300.0  # whole run, wall seconds
    # how long a starting node waits for every peer before it starts with those it reached
    # (the rest join late and catch up by state sync)
    start_wait: Annotated[float, Field(ge=0)] = 60.0
    # the scenario's topology and links on real sockets (apps/emulate.py): emulate always,
    # host never (loopback as it is, or netem set up from outside), auto: under `phalanx run
    # --real` but not in a `phalanx cluster up` cluster
    network: Literal["auto", "emulate", "host"] = "auto"


class Scenario(Strict):
    name: str
    description: str = ""
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0
    nodes: NodesSpec
    topology: Topology = CompleteTopology()
    links: LinksSpec = LinksSpec()
    workload: Workload
    training: TrainingSpec
    compression: CompressionSpec = CompressionSpec()
    privacy: PrivacySpec | None = None
    byzantine: list[ByzantineSpec] = []
    faults: list[Fault] = []
    nemesis: NemesisSpec | None = None
    expect: ExpectSpec = ExpectSpec()
    record: Literal["all", "drops", "none"] = "all"  # which message events go to events.parquet
    # write each node's SQLite log (nodes/<id>.sqlite) with the outputs: every committed round
    # with its signed gradients, so a 1000-node run would write about 2 GB
    node_logs: bool = True
    real: RealSpec = RealSpec()
    unsafe: bool = False  # allow more than f Byzantine/faulty nodes (to show what breaks)

    @property
    def members(self) -> tuple[int, ...]:
        """The initial members: every node but the observers."""
        return tuple(i for i in range(self.nodes.count) if i not in set(self.nodes.observers))

    @property
    def n(self) -> int:
        return len(self.members)

    @property
    def f(self) -> int:
        """Faults tolerated: the largest f with n >= 3f + 1 (n: the initial members)."""
        return (self.n - 1) // 3

    def byzantine_nodes(self) -> set[int]:
        return {n for b in self.byzantine for n in b.nodes}

    def _aggregator_fits(self, n: int) -> None:
        """The rule must work on the n − f gradients a round is sure to get (sets smaller than
        it needs are never proposed, so a rule that needs more stalls the run): refuse it now
        rather than let the nodes change views forever (AggregatorSpec.inputs_problem)."""
        spec = self.training.aggregator
        if spec.f is not None and spec.f > self.f:
            raise ValueError(f"training.aggregator.f: {spec.f} is above the scenario's "
                             f"f = {self.f} (n = {n} members tolerate ⌊(n − 1)/3⌋ Byzantine); "
                             f"allowed: 0 to {self.f}")
        problem = spec.inputs_problem(n)
        if problem is not None:
            raise InputsRefused(problem)

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        n = self.nodes.count

        def check_ids(where: str, ids: set[int]) -> None:
            bad = sorted(i for i in ids if i >= n)
            if bad:
                raise ValueError(f"{where}: node ids {bad} out of range 0..{n - 1}")

        check_ids("nodes.speeds", set(self.nodes.speeds))
        check_ids("nodes.observers", set(self.nodes.observers))
        if not self.members:
            raise ValueError("nodes.observers: every node is an observer; a run needs members")
        for i, fault in enumerate(self.faults):
            if isinstance(fault, ChangeRequest):
                check_ids(f"faults.{i}", set(fault.nodes))
            if isinstance(fault, JoinRequest) and not set(fault.nodes) <= set(
                    self.nodes.observers):
                raise ValueError(f"faults.{i}: only observers join (nodes.observers: "
                                 f"{sorted(self.nodes.observers)})")
        for i, b in enumerate(self.byzantine):
            check_ids(f"byzantine.{i}.nodes", set(b.nodes))
        for i, fault in enumerate(self.faults):
            check_ids(f"faults.{i}", fault.nodes_involved())
        byz = len(self.byzantine_nodes())
        if byz > self.f and not self.unsafe:
            raise ValueError(
                f"byzantine: {byz} Byzantine nodes but n={n} tolerates f={self.f} "
                f"(n >= 3f+1); set 'unsafe: true' to run it anyway")
        self._aggregator_fits(self.n)
        if self.real.base_port and self.real.base_port + n - 1 > 65535:
            raise ValueError(f"real.base_port: {self.real.base_port} + {n} nodes runs past "
                             f"port 65535")
        if self.nemesis and (self.nemesis.max_faulty or 0) > self.f and not self.unsafe:
            raise ValueError(f"nemesis.max_faulty: {self.nemesis.max_faulty} exceeds f={self.f}")
        return self

    def resolved_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# ---- loading ---------------------------------------------------------------------------------


def describe_error(error: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in error["loc"] if not str(p).startswith("function-after"))
    msg = error["msg"].removeprefix("Value error, ")
    value = error.get("input")
    shown = "" if isinstance(value, dict | list) or error["type"] == "missing" else (
        f" (got {value!r})")
    return f"{loc}: {msg}{shown}" if loc else f"{msg}"


def parse_scenario(data: Any, source: str = "scenario") -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: expected a mapping of fields at the top level")
    try:
        return Scenario.model_validate(data)
    except ValidationError as err:
        errors = err.errors()
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        refused = isinstance(errors[0].get("ctx", {}).get("error"), InputsRefused)
        raise (ScenarioRefused if refused else ScenarioError)(
            f"{source}: {describe_error(errors[0])}{more}") from None


def read_yaml(path: Path, what: str = "scenario") -> Any:
    """The parsed YAML document at `path`; ScenarioError with one line naming the problem."""
    try:
        text = path.read_text()
    except OSError as err:
        raise ScenarioError(f"{path}: cannot read {what} ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise ScenarioError(
            f"{path}: cannot read {what} (not UTF-8 text: byte {err.start})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ScenarioError(f"{path}: {where}invalid YAML ({problem})") from None


def load_scenario(path: str | Path, seed: int | None = None) -> Scenario:
    path = Path(path)
    data = read_yaml(path)
    if seed is not None and isinstance(data, dict):
        data = {**data, "seed": seed}  # validated like the file's own seed
    return parse_scenario(data, str(path))


def with_seed(scenario: Scenario, seed: int) -> Scenario:
    """The same scenario under another seed, validated."""
    return parse_scenario({**scenario.model_dump(mode="json"), "seed": seed}, scenario.name)
