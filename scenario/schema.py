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
from phalanx.scenario.curation import CurationSection
from phalanx.scenario.errors import InputsRefused, ScenarioError
from phalanx.scenario.errors import ScenarioRefused as ScenarioRefused  # (re-exported)
from phalanx.scenario.explain import describe_error, flagged, invalid
from phalanx.scenario.rlhf import RlhfWorkload

if TYPE_CHECKING:
    from phalanx.engine.aggregate import Need

NodeId = Annotated[int, Field(ge=0)]
Seconds = Annotated[float, Field(ge=0)]
Probability = Annotated[float, Field(ge=0, le=1)]


class Strict(BaseModel):
    # no inf/nan anywhere: a scenario of infinite bandwidth says `null`, not `.inf`
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_flag_as_number(cls, data: Any) -> Any:
        """`count: true` is a mistake, not 1 (pydantic's lax mode takes a bool as a number):
        a true/false where the field takes no bool becomes a `Flag`, which every validator
        refuses, so the error names the field and the other errors are still collected."""
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        return {key: flagged(value, fields[key].annotation) if key in fields else value
                for key, value in data.items()}


# ---- nodes, topology, links ----------------------------------------------------------------


class NodesSpec(Strict):
    """The nodes of the run, numbered 0 to count − 1, and how fast each one computes."""

    count: Annotated[int, Field(ge=1, le=100_000, description=(
        "How many nodes take part, members and observers together; node ids run from 0 to "
        "count − 1. The members (every node but the observers) set n, and f = ⌊(n − 1)/3⌋ is "
        "how many Byzantine or faulty members the run tolerates."))]
    speed: Annotated[float, Field(gt=0, description=(
        "Relative compute speed of every node: a simulated gradient step takes "
        "training.step_time / speed seconds (2.0: twice as fast)."))] = 1.0
    speeds: Annotated[dict[NodeId, Annotated[float, Field(gt=0)]], Field(description=(
        "Per-node overrides of `speed`, node id to speed, e.g. {3: 0.25} for one slow "
        "node."))] = {}
    observers: Annotated[list[NodeId], Field(description=(
        "Nodes that start outside the membership: they follow the committed chain without a "
        "vote and may ask to join it (faults: kind join). n, f and the quorum count the "
        "other nodes."))] = []


class CompleteTopology(Strict):
    """Every node linked directly to every other (the default)."""

    kind: Annotated[Literal["complete"], Field(description="`complete`.")] = "complete"


class RingTopology(Strict):
    """Each node linked to its two neighbours (i − 1 and i + 1, wrapping around)."""

    kind: Annotated[Literal["ring"], Field(description="`ring`.")]


class RandomRegularTopology(Strict):
    """A random graph in which every node has `degree` links, redrawn from the seed until
    connected."""

    kind: Annotated[Literal["random_regular"], Field(description="`random_regular`.")]
    degree: Annotated[int, Field(ge=2, description=(
        "Links per node; below count, and count × degree must be even."))] = 4


class WattsStrogatzTopology(Strict):
    """A small world (Watts–Strogatz): a ring lattice whose links are rewired at random."""

    kind: Annotated[Literal["watts_strogatz"], Field(description="`watts_strogatz`.")]
    k: Annotated[int, Field(ge=2, description=(
        "Each node starts linked to its k nearest ring neighbours; below count."))] = 4
    p: Annotated[Probability, Field(description=(
        "Probability that each lattice link is rewired to a random node (0: the plain "
        "lattice, 1: close to a random graph)."))] = 0.1


class BarabasiAlbertTopology(Strict):
    """A scale-free graph (Barabási–Albert preferential attachment): a few hubs, many leaves."""

    kind: Annotated[Literal["barabasi_albert"], Field(description="`barabasi_albert`.")]
    m: Annotated[int, Field(ge=1, description=(
        "Links each newly added node makes to existing ones; below count."))] = 2


class GeoClustersTopology(Strict):
    """Regional clusters: nodes dealt round-robin into `clusters` complete clusters whose
    gateways (nodes 0 .. clusters − 1) are linked to each other; other traffic between
    clusters is relayed through them."""

    kind: Annotated[Literal["geo_clusters"], Field(description="`geo_clusters`.")]
    clusters: Annotated[int, Field(ge=1, description=(
        "How many clusters; at most count."))] = 3
    intra_latency: Annotated[Seconds, Field(description=(
        "One-way latency of a link inside a cluster, in seconds (replaces links.latency)."
        ))] = 0.002
    inter_latency: Annotated[Seconds, Field(description=(
        "One-way latency of a link between two gateways, in seconds."))] = 0.05


Topology = Annotated[
    CompleteTopology | RingTopology | RandomRegularTopology | WattsStrogatzTopology
    | BarabasiAlbertTopology | GeoClustersTopology,
    Field(discriminator="kind"),
]


class LinksSpec(Strict):
    """What every link of the topology does to a message: delay, queueing, loss, duplication
    and reordering (simulation; under --real, see real.network)."""

    latency: Annotated[Seconds, Field(description=(
        "One-way propagation delay per hop, in seconds; a message between nodes that are not "
        "linked crosses several hops (geo_clusters sets its own latencies)."))] = 0.005
    jitter: Annotated[Seconds, Field(description=(
        "Scale of a random extra delay per message, in seconds; its shape is "
        "`jitter_dist`."))] = 0.001
    jitter_dist: Annotated[Literal["uniform", "normal", "exponential"], Field(description=(
        "Distribution of the extra delay: uniform in [0, jitter], |normal(0, jitter)|, or "
        "exponential with mean jitter."))] = "uniform"
    bandwidth: Annotated[Annotated[float, Field(gt=0)] | None, Field(description=(
        "Bits per second of each directed link: a message queues behind earlier ones for "
        "size × 8 / bandwidth seconds; null: infinite (no queueing)."))] = 1e9
    loss: Annotated[Probability, Field(description=(
        "Probability that a message is lost on a hop."))] = 0.0
    duplicate: Annotated[Probability, Field(description=(
        "Probability that a message arrives twice (the copy has its own jitter)."))] = 0.0
    reorder: Annotated[Probability, Field(description=(
        "Probability that a message is held back by `reorder_delay`, so later ones overtake "
        "it."))] = 0.0
    reorder_delay: Annotated[Seconds, Field(description=(
        "Extra delay of a reordered message, in seconds."))] = 0.01


# ---- workload and training -----------------------------------------------------------------


class IidSplit(Strict):
    """Shards drawn IID (the default; engine/workloads/splits.py has every split)."""

    kind: Annotated[Literal["iid"], Field(description="`iid`.")] = "iid"


class DirichletSplit(Strict):
    """Each class shared among the nodes in proportions drawn from Dirichlet(alpha)."""

    kind: Annotated[Literal["dirichlet"], Field(description="`dirichlet`.")]
    alpha: Annotated[float, Field(gt=0, description=(
        "Concentration: small (0.1) puts each class on few nodes, large (100) is close to "
        "IID."))] = 0.5


class ExtremeSplit(Strict):
    """The samples sorted by label and cut into one contiguous shard per node."""

    kind: Annotated[Literal["extreme"], Field(description="`extreme`.")]


class GammaSimilaritySplit(Strict):
    """A fraction gamma of the samples spread IID, the rest sorted by label and cut."""

    kind: Annotated[Literal["gamma_similarity"], Field(description="`gamma_similarity`.")]
    gamma: Annotated[Probability, Field(description=(
        "Fraction of the samples spread IID: 1 is the iid split, 0 the extreme one."))] = 0.5


Split = Annotated[IidSplit | DirichletSplit | ExtremeSplit | GammaSimilaritySplit,
                  Field(discriminator="kind")]
SPLIT_HELP = ("How the training samples are shared among the nodes: a kind name "
              "(`split: extreme`) or a mapping of `kind` and its parameters.")


class _SplitByName(Strict):
    """Lets a workload's `split` be a bare kind (`split: extreme`), like `aggregator: krum`."""

    @model_validator(mode="before")
    @classmethod
    def _split_from_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("split"), str):
            return {**data, "split": {"kind": data["split"]}}
        return data


class LinearWorkload(Strict):
    """Least squares on synthetic data, y = X·w* + noise: tiny and fast, for runs at scale
    (the loss floor is noise²/2; it reports loss only)."""

    kind: Annotated[Literal["linear"], Field(description="`linear`.")]
    dim: Annotated[int, Field(ge=1, le=1_000_000, description=(
        "Number of model parameters (features of x)."))] = 16
    samples_per_node: Annotated[int, Field(ge=1, description=(
        "Training samples each node draws for its own shard."))] = 256
    noise: Annotated[float, Field(ge=0, description=(
        "Standard deviation of the noise added to the targets."))] = 0.1
    eval_samples: Annotated[int, Field(ge=1, description=(
        "Held-out samples the final and periodic evaluations score."))] = 1000


class MlpWorkload(_SplitByName):
    """A one-hidden-layer classifier on a synthetic task whose labels come from a random
    teacher network (engine/workloads/mlp.py); reports loss and accuracy."""

    kind: Annotated[Literal["mlp"], Field(description="`mlp`.")]
    features: Annotated[int, Field(ge=1, description="Input features per sample.")] = 16
    classes: Annotated[int, Field(ge=2, description="Number of classes.")] = 4
    hidden: Annotated[int, Field(ge=1, description=(
        "Width of the classifier's hidden layer."))] = 32
    samples_per_node: Annotated[int, Field(ge=1, description=(
        "Training samples per node."))] = 512
    label_noise: Annotated[Probability, Field(description=(
        "Probability that a sample's label is replaced by a random class."))] = 0.05
    eval_samples: Annotated[int, Field(ge=1, description=(
        "Held-out samples the evaluations score."))] = 2000
    skew: Annotated[Probability, Field(description=(
        "The older non-IID knob: share of node i's shard drawn from its home class "
        "(i mod classes) on top of an IID share; 0: off. Give either skew or a non-iid "
        "split, not both."))] = 0.0
    split: Annotated[Split, Field(description=SPLIT_HELP + (
        " Any split but iid deals out one pool of count × samples_per_node samples."
        ))] = IidSplit()

    @model_validator(mode="after")
    def _one_skew(self) -> MlpWorkload:
        if self.skew > 0 and self.split.kind != "iid":
            raise ValueError(f"skew ({self.skew}) and split ({self.split.kind}) both make the "
                             f"shards non-IID: give one of them")
        return self


class DigitsWorkload(_SplitByName):
    """scikit-learn's bundled 8×8 digits (engine/workloads/digits.py): 1438 training images
    shared among the nodes by `split`, 359 held out; a one-hidden-layer classifier."""

    kind: Annotated[Literal["digits"], Field(description="`digits`.")]
    hidden: Annotated[int, Field(ge=1, description=(
        "Width of the classifier's hidden layer."))] = 64
    samples_per_node: Annotated[Annotated[int, Field(ge=1)] | None, Field(description=(
        "null: share out every training image; a number: a seeded subset of count × "
        "samples_per_node images (at most the 1438 there are)."))] = None
    split: Annotated[Split, Field(description=SPLIT_HELP)] = IidSplit()


class TransformerWorkload(Strict):
    """A small GPT on the synthetic Markov corpus (engine/workloads/transformer.py)."""

    kind: Annotated[Literal["transformer"], Field(description="`transformer`.")]
    vocab: Annotated[int, Field(ge=2, le=62, description=(
        "Symbols of the synthetic corpus, and the model's vocabulary size."))] = 16
    order: Annotated[int, Field(ge=0, le=4, description=(
        "Order of the Markov chain that generates the corpus: each symbol depends on the "
        "`order` symbols before it."))] = 2
    concentration: Annotated[float, Field(gt=0, description=(
        "Dirichlet concentration of the chain's next-symbol distributions: small is peaky "
        "(low entropy, easy to learn), large is close to uniform."))] = 0.3
    block_size: Annotated[int, Field(ge=2, description=(
        "Context length in tokens of each training window."))] = 32
    n_layer: Annotated[int, Field(ge=1, description="Transformer blocks.")] = 2
    n_head: Annotated[int, Field(ge=1, description=(
        "Attention heads per block; must divide n_embd."))] = 2
    n_embd: Annotated[int, Field(ge=2, description="Embedding width.")] = 32
    ffn: Annotated[FFN, Field(description=(
        "Feed-forward layer of each block: swiglu, gelu (GPT-2's MLP) or moe (a mixture of "
        "`n_experts` experts, `top_k` per token)."))] = "swiglu"
    n_experts: Annotated[int, Field(ge=1, description=(
        "Experts per block when ffn is moe."))] = 4
    top_k: Annotated[int, Field(ge=1, description=(
        "Experts each token is routed to when ffn is moe (capped at n_experts)."))] = 2
    tokens_per_node: Annotated[int, Field(ge=64, description=(
        "Length of each node's own training shard, in tokens; at least block_size + 2."
        ))] = 20_000
    val_tokens: Annotated[int, Field(ge=64, description=(
        "Length of the held-out stream the evaluations score, in tokens."))] = 8_192

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
    kind: Annotated[str, Field(description=(
        "The workload's entry point name in `phalanx.workloads`, or `module:Class`."))]

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


_BUILTIN_WORKLOADS = ("linear", "mlp", "digits", "transformer", "rlhf")


def _workload_tag(value: Any) -> str:
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return kind if kind in _BUILTIN_WORKLOADS else "kind"  # the tag names the field at fault


Workload = Annotated[
    Annotated[LinearWorkload, Tag("linear")] | Annotated[MlpWorkload, Tag("mlp")]
    | Annotated[DigitsWorkload, Tag("digits")] | Annotated[TransformerWorkload, Tag("transformer")]
    | Annotated[RlhfWorkload, Tag("rlhf")]
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

    kind: Annotated[str, Field(description=(
        "The robust rule every honest node applies to the agreed gradient set: a built-in "
        "name below, or a user's rule (an entry point in `phalanx.aggregators`, or "
        "`module:Class`). It must work on the n − f gradients a round is sure to receive, "
        "or the scenario is refused."))] = "mean"
    pre: Annotated[list[Annotated[Any, AfterValidator(_pre_step)]], Field(description=(
        "Pre-aggregation steps applied in order before the rule, each a name (`nnm`) or a "
        "mapping of `name` and the step's parameters (`{name: bucketing, s: 3}`)."))] = []
    params: Annotated[dict[str, float | int | str], Field(description=(
        "The rule's own parameters, e.g. {m: 4} for multi_krum; each rule lists its "
        "own."))] = {}
    f: Annotated[Annotated[int, Field(ge=0, strict=True)] | None, Field(description=(
        "How many Byzantine inputs the rule is built to tolerate, 0 to the scenario's f. "
        "null: the scenario's f, and after membership changes ⌊(n − 1)/3⌋ of the round's "
        "members. Lowering it lets a rule that needs many inputs (krum) run with fewer "
        "members."))] = None

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
    """The BFT training rounds: how many, the optimizer step every honest node applies to the
    agreed aggregate, the robust rule, and the protocol's timeouts."""

    rounds: Annotated[int, Field(ge=1, description=(
        "Rounds to train: each commits one agreed gradient set and one optimizer step."))]
    lr: Annotated[float, Field(gt=0, description="Learning rate of the shared step.")] = 0.05
    momentum: Annotated[float, Field(ge=0, lt=1, description=(
        "Heavy-ball momentum of sgd, or Adam's beta1 (with optimizer adam or "
        "worker_optimizer adam)."))] = 0.9
    optimizer: Annotated[Literal["sgd", "adam"], Field(description=(
        "The step every honest node applies identically to the aggregate: sgd (heavy-ball "
        "momentum) or adam (beta2 0.99)."))] = "sgd"
    batch: Annotated[int, Field(ge=1, description=(
        "Samples (sequences, for the transformer) per gradient step on each node."))] = 32
    aggregator: Annotated[AggregatorSpec, Field(description=(
        "The robust aggregation rule: a bare name (`aggregator: krum`) or a mapping of kind, "
        "params, pre and f."))] = AggregatorSpec()
    max_gradient_norm: Annotated[Annotated[float, Field(gt=0)] | None, Field(description=(
        "A received gradient with a larger L2 norm is invalid: nodes refuse to vote for a "
        "set holding it; null: no bound."))] = None
    votes: Annotated[Literal["broadcast", "leader"], Field(description=(
        "broadcast: every vote to everyone (O(n²) messages per phase, fastest for small n); "
        "leader: votes to the view's leader, which broadcasts each quorum (O(n) messages, one "
        "more message delay, for large n)."))] = "broadcast"
    worker_momentum: Annotated[float, Field(ge=0, lt=1, description=(
        "Honest nodes send beta × momentum + (1 − beta) × gradient instead of the gradient "
        "(worker momentum, which helps robust rules); 0: off."))] = 0.0
    worker_optimizer: Annotated[Literal["none", "adam"], Field(description=(
        "adam: each honest node sends its own Adam direction (beta1 = momentum, beta2 0.99) "
        "and the shared step is plain SGD at lr; needs optimizer sgd and worker_momentum 0. "
        "Top-k compression under Adam wants it."))] = "none"
    step_time: Annotated[Seconds, Field(description=(
        "Simulated seconds one gradient step takes on a node of speed 1.0."))] = 0.05
    round_timeout: Annotated[float, Field(gt=0, description=(
        "Seconds a leader waits for every gradient before proposing the quorum it has."
        ))] = 1.0
    failure_detector: Annotated[bool, Field(description=(
        "Suspect crashed or silent members: the leader stops waiting for them, and a member "
        "that missed the last committed set does not lead (engine/node/detector.py). false: "
        "the fixed waits of round_timeout and view_timeout only."))] = True
    view_timeout: Annotated[float, Field(gt=0, description=(
        "Seconds a member waits in a view for its round to commit before it moves to the next "
        "leader (a view change); must exceed round_timeout."))] = 3.0
    eval_every: Annotated[int, Field(ge=1, description=(
        "Score the model on held-out data every this many rounds (and after the last)."
        ))] = 1
    max_time: Annotated[Annotated[float, Field(gt=0)] | None, Field(description=(
        "Simulated seconds after which the run stops, finished or not; null: derived from "
        "rounds, timeouts and the faults' end."))] = None

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
    """Nodes that attack: one behaviour given to a list of nodes, active from a round on.
    More than f Byzantine nodes need `unsafe: true`."""

    nodes: Annotated[list[NodeId], Field(description=(
        "Ids of the attacking nodes; they collude (the colluding attacks share what they "
        "know)."))]
    behaviour: Annotated[str, AfterValidator(_known_behaviour), Field(description=(
        "What they do: a built-in behaviour below, or a user's attack (an entry point in "
        "`phalanx.attacks`, or `module:Class`)."))]
    from_round: Annotated[int, Field(ge=0, description=(
        "First round in which they misbehave; before it they are honest."))] = 0
    params: Annotated[dict[str, float | int | str | bool], Field(description=(
        "The behaviour's own parameters, e.g. {epsilon: 100} for ipm; gradient attacks also "
        "take `wait`, the simulated seconds they wait for the honest gradients (default 1)."
        ))] = {}

    @model_validator(mode="after")
    def _params_fit(self) -> ByzantineSpec:
        from phalanx.engine.byzantine import make_behaviour

        make_behaviour(self.behaviour, self.from_round, frozenset(self.nodes), 0, **self.params)
        return self


# ---- faults --------------------------------------------------------------------------------


class FaultBase(Strict):
    """When a fault of the timeline starts and how long it lasts (every fault kind has these)."""

    at: Annotated[Seconds | None, Field(description=(
        "Simulated second at which the fault starts; give this or at_round."))] = None
    at_round: Annotated[Annotated[int, Field(ge=0)] | None, Field(description=(
        "Start when the first node commits this round; give this or at."))] = None
    duration: Annotated[Annotated[float, Field(gt=0)] | None, Field(description=(
        "Seconds until the fault heals; null: never."))] = None

    @model_validator(mode="after")
    def _one_trigger(self) -> FaultBase:
        if (self.at is None) == (self.at_round is None):
            raise ValueError("give exactly one of 'at' (seconds) or 'at_round'")
        return self

    def nodes_involved(self) -> set[int]:
        return set()


class CrashFault(FaultBase):
    """Nodes stop; when the fault heals they restart and catch up by state sync."""

    kind: Annotated[Literal["crash"], Field(description="`crash`.")]
    nodes: Annotated[list[NodeId], Field(min_length=1, description="Ids of the nodes that crash.")]
    keep_disk: Annotated[bool, Field(description=(
        "true: a node restarts from its checkpoint and log; false: from nothing."))] = True

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

    kind: Annotated[Literal["partition"], Field(description="`partition`.")]
    groups: Annotated[list[list[NodeId]], Field(min_length=1), AfterValidator(_disjoint),
                      Field(description=(
                          "Disjoint groups of node ids, e.g. [[0, 1], [2, 3]]; the nodes "
                          "listed in no group form one more group."))]

    def nodes_involved(self) -> set[int]:
        return {n for g in self.groups for n in g}


class IsolateFault(FaultBase):
    """The listed nodes are cut off from every node outside the list."""

    kind: Annotated[Literal["isolate"], Field(description="`isolate`.")]
    nodes: Annotated[list[NodeId], Field(min_length=1, description=(
        "Ids of the isolated nodes (they still reach each other)."))]

    def nodes_involved(self) -> set[int]:
        return set(self.nodes)


class OneWayFault(FaultBase):
    """Traffic from `source` to `target` is dropped; the other direction still flows."""

    kind: Annotated[Literal["one_way"], Field(description="`one_way`.")]
    source: Annotated[list[NodeId], Field(min_length=1, description=(
        "Nodes whose messages to `target` are dropped."))]
    target: Annotated[list[NodeId], Field(min_length=1, description=(
        "Nodes that no longer hear from `source`."))]

    def nodes_involved(self) -> set[int]:
        return set(self.source) | set(self.target)


class BridgeFault(FaultBase):
    """Two sides cut apart; the nodes in neither side (the bridge) still reach both."""

    kind: Annotated[Literal["bridge"], Field(description="`bridge`.")]
    sides: Annotated[list[list[NodeId]], Field(min_length=2, max_length=2),
                     AfterValidator(_disjoint), Field(description=(
                         "Exactly two disjoint lists of node ids that cannot reach each "
                         "other."))]

    def nodes_involved(self) -> set[int]:
        return {n for g in self.sides for n in g}


class DegradeFault(FaultBase):
    """Extra latency and loss on every link touching `nodes` (all links when omitted)."""

    kind: Annotated[Literal["degrade"], Field(description="`degrade`.")]
    nodes: Annotated[list[NodeId] | None, Field(description=(
        "Nodes whose links are degraded; null: every link."))] = None
    extra_latency: Annotated[Seconds, Field(description=(
        "Seconds added to each affected link's latency."))] = 0.0
    loss: Annotated[Probability, Field(description=(
        "Loss probability added to each affected link's (capped at 1)."))] = 0.0

    def nodes_involved(self) -> set[int]:
        return set(self.nodes or [])


class SlowFault(FaultBase):
    """Nodes compute slower (a straggler)."""

    kind: Annotated[Literal["slow"], Field(description="`slow`.")]
    nodes: Annotated[list[NodeId], Field(min_length=1, description="Ids of the slowed nodes.")]
    factor: Annotated[float, Field(gt=1, description=(
        "Their gradient steps take this many times longer."))] = 10.0

    def nodes_involved(self) -> set[int]:
        return set(self.nodes)


class ChangeRequest(FaultBase):
    """Not a fault but a step of the membership's timeline: each listed node asks to join the
    members (an observer) or to leave them, and the round that commits the request applies it
    from its next round on (engine/consensus/membership.py)."""

    nodes: Annotated[list[NodeId], Field(min_length=1, description=(
        "Ids of the nodes that ask: observers (nodes.observers) to join, members to "
        "leave."))]

    @model_validator(mode="after")
    def _no_duration(self) -> ChangeRequest:
        if self.duration is not None:
            raise ValueError("a membership change has no duration (a node that joined "
                             "leaves with a 'leave' of its own)")
        return self


class JoinRequest(ChangeRequest):
    """Observers ask to become members."""

    kind: Annotated[Literal["join"], Field(description="`join`.")]


class LeaveRequest(ChangeRequest):
    """Members ask to leave the membership."""

    kind: Annotated[Literal["leave"], Field(description="`leave`.")]


Fault = Annotated[
    CrashFault | PartitionFault | IsolateFault | OneWayFault | BridgeFault | DegradeFault
    | SlowFault | JoinRequest | LeaveRequest,
    Field(discriminator="kind"),
]


class NemesisSpec(Strict):
    """Seeded random faults: every `interval` seconds one fault of a random kind, never more
    than `max_faulty` nodes faulty at once (default: f)."""

    kinds: Annotated[
        list[Literal["crash", "isolate", "partition", "slow", "degrade"]], Field(
            min_length=1, description=(
                "Fault kinds to draw from (slow: 10× slower; degrade: 10 × links.latency "
                "extra and 0.2 loss on the chosen nodes' links)."))]
    interval: Annotated[float, Field(gt=0, description=(
        "Simulated seconds between two draws."))] = 5.0
    duration: Annotated[float, Field(gt=0, description=(
        "Seconds each drawn fault lasts."))] = 2.0
    start: Annotated[Seconds, Field(description="Simulated second of the first draw.")] = 1.0
    stop: Annotated[Seconds | None, Field(description=(
        "Simulated second after which nothing more is drawn; null: never."))] = None
    max_faulty: Annotated[Annotated[int, Field(ge=1)] | None, Field(description=(
        "Most nodes faulty at once, Byzantine nodes and timeline faults included; null: f. "
        "Above f needs `unsafe: true`."))] = None
    keep_disk: Annotated[bool, Field(description=(
        "Crashed nodes restart from their checkpoint and log (false: from nothing)."))] = True


# ---- gradients on the wire -------------------------------------------------------------------


class AdaptiveSpec(Strict):
    """Top-k whose ratio each node picks per gradient from its measured uplink: as many entries
    as reach its peers within `target_seconds`, clamped to [min_ratio, max_ratio]."""

    target_seconds: Annotated[float, Field(gt=0, description=(
        "Seconds a gradient should take to reach the node's peers over its measured uplink."))]
    min_ratio: Annotated[float, Field(gt=0, le=1, description=(
        "Smallest fraction of the entries sent, however slow the link."))]
    max_ratio: Annotated[float, Field(gt=0, le=1, description=(
        "Largest fraction of the entries sent (and the most a receiver accepts); at least "
        "min_ratio."))]

    @model_validator(mode="after")
    def _ordered(self) -> AdaptiveSpec:
        if self.min_ratio > self.max_ratio:
            raise ValueError(f"min_ratio {self.min_ratio} is above max_ratio {self.max_ratio}")
        return self


class CompressionSpec(Strict):
    """How gradients go on the wire (engine/compress): every member uses this method, and a
    gradient in another encoding is refused."""

    method: Annotated[str, Field(description=(
        "The encoding of every gradient on the wire (methods below); none: dense float32."
        ))] = "none"
    params: Annotated[dict[str, float | int | str], Field(description=(
        "The method's own parameters, e.g. {ratio: 0.01} for topk."))] = {}
    error_feedback: Annotated[bool, Field(description=(
        "Each sender carries what compression dropped into its next gradient (biased "
        "methods such as topk and sign need it to converge); ignored for none."))] = True
    adaptive: Annotated[AdaptiveSpec | None, Field(description=(
        "topk only, without a ratio parameter: each node picks the ratio per gradient from "
        "its measured uplink; null: the fixed params.ratio."))] = None
    feedback_decay: Annotated[float, Field(ge=0, le=1, description=(
        "Below 1: leaky error feedback, the carried residual shrinks by this factor each "
        "round."))] = 1.0

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

    clip: Annotated[float, Field(gt=0, description=(
        "L2 norm each gradient is clipped to before anything else touches it."))]
    noise_multiplier: Annotated[float, Field(gt=0, description=(
        "Gaussian noise of standard deviation noise_multiplier × clip is added per "
        "coordinate."))]
    delta: Annotated[float, Field(gt=0, lt=1, description=(
        "The δ of the (ε, δ) guarantee the summary reports for the run's releases."))] = 1e-5


# ---- expectations, real mode, the scenario -------------------------------------------------


class ExpectSpec(Strict):
    """Assertions the run must satisfy: `phalanx run` exits with code 1 and names each one that
    fails; null (the default) checks nothing."""

    final_loss_below: Annotated[float | None, Field(description=(
        "The final held-out loss must be below this."))] = None
    final_accuracy_above: Annotated[Probability | None, Field(description=(
        "The final held-out accuracy (classifiers) must be above this, 0 to 1."))] = None
    honest_hashes_equal: Annotated[bool | None, Field(description=(
        "true: honest nodes hold the same model hash after every round they committed "
        "(safety)."))] = None
    rounds_committed_at_least: Annotated[Annotated[int, Field(ge=0)] | None, Field(description=(
        "Every running honest node committed at least this many rounds (liveness)."))] = None
    dropped_messages_at_least: Annotated[Annotated[int, Field(ge=0)] | None, Field(description=(
        "At least this many messages were dropped (shows a fault really bit)."))] = None
    excluded: Annotated[list[NodeId] | None, Field(description=(
        "Exactly these nodes end excluded (for equivocation) by every running honest node."
        ))] = None
    excluded_within_rounds: Annotated[Annotated[int, Field(ge=0)] | None, Field(description=(
        "Each excluded node is excluded within this many rounds of its first offence."
        ))] = None
    members_at_end: Annotated[list[NodeId] | None, Field(description=(
        "Every running honest node ends with exactly these members."))] = None
    label_accuracy_above: Annotated[Probability | None, Field(description=(
        "The share of labelled (non-gold) tasks whose final label is their hidden truth must "
        "be above this, 0 to 1 (needs curation.crowd)."))] = None
    final_eval_above: Annotated[dict[str, float] | None, Field(description=(
        "Held-out figure name -> bound: each honest node's final `eval_<name>` in "
        "rounds.parquet must be above it (e.g. `{true_score: 0.37, reward_accuracy: 0.93}` "
        "for an RLHF run)."))] = None
    final_eval_below: Annotated[dict[str, float] | None, Field(description=(
        "Held-out figure name -> bound: each honest node's final `eval_<name>` must be "
        "below it (e.g. `{kl: 4.0}`)."))] = None


class RealSpec(Strict):
    """Settings for `--real`: wall-clock timeouts replace the simulated ones."""

    host: Annotated[str, Field(description=(
        "Address the node processes listen on and connect to."))] = "127.0.0.1"
    base_port: Annotated[int, Field(ge=0, le=65535, description=(
        "First of the consecutive ports the nodes listen on (node i's protocol port is "
        "base_port + i); 0: pick free ports."))] = 0
    round_timeout: Annotated[float, Field(gt=0, description=(
        "Wall-clock seconds in place of training.round_timeout."))] = 5.0
    view_timeout: Annotated[float, Field(gt=0, description=(
        "Wall-clock seconds in place of training.view_timeout."))] = 15.0
    patience_floor: Annotated[float, Field(ge=0, description=(
        "Wall-clock seconds a leader holding a quorum waits at least for the members it does "
        "not suspect, however fast they were before (capped by round_timeout): a load spike "
        "on a busy machine is not taken for a failure, so the round's set, and the model, stay "
        "those of the simulation. Suspected members (link down, silent) are not waited for."
        ))] = 1.0
    deadline: Annotated[float, Field(gt=0, description=(
        "Wall-clock seconds the whole run may take before it is stopped as failed."))] = 300.0
    start_wait: Annotated[float, Field(ge=0, description=(
        "Seconds a starting node waits for every peer before it starts with those it reached "
        "(the rest join late and catch up by state sync)."))] = 60.0
    network: Annotated[Literal["auto", "emulate", "host"], Field(description=(
        "The scenario's topology and links on real sockets (apps/emulate.py): emulate "
        "always; host never (loopback as it is, or netem set up from outside); auto: under "
        "`phalanx run --real` but not in a `phalanx cluster up` cluster."))] = "auto"


class Scenario(Strict):
    """One run: nodes, network, workload, training, attacks, faults and expectations. A
    simulated run is a pure function of the scenario and its seed."""

    name: Annotated[str, Field(description=(
        "Name of the run; results go to runs/<name> unless --out says otherwise."))]
    description: Annotated[str, Field(description=(
        "Free text saying what the scenario shows."))] = ""
    seed: Annotated[int, Field(ge=0, lt=2**63, description=(
        "Every random choice (data, topology, losses, keys, attacks) derives from it; "
        "`--seed` overrides it."))] = 0
    nodes: Annotated[NodesSpec, Field(description=(
        "How many nodes, their compute speeds, and which start as observers."))]
    topology: Annotated[Topology, Field(description=(
        "Which nodes are linked; messages between others are relayed along the "
        "lowest-latency path."))] = CompleteTopology()
    links: Annotated[LinksSpec, Field(description=(
        "Latency, jitter, bandwidth, loss, duplication and reordering of every link."
        ))] = LinksSpec()
    workload: Annotated[Workload, Field(description=(
        "The model and data each node trains on, chosen by `kind`."))]
    training: Annotated[TrainingSpec, Field(description=(
        "Rounds, optimizer, aggregation rule and protocol timeouts."))]
    compression: Annotated[CompressionSpec, Field(description=(
        "How gradients travel on the wire."))] = CompressionSpec()
    privacy: Annotated[PrivacySpec | None, Field(description=(
        "Differential privacy of each node's gradients; null: off."))] = None
    byzantine: Annotated[list[ByzantineSpec], Field(description=(
        "Which nodes attack, how, and from which round; at most f nodes unless unsafe."
        ))] = []
    faults: Annotated[list[Fault], Field(description=(
        "The fault timeline: crashes, cuts, degraded links, slow nodes and membership "
        "changes, each started at a simulated time or a round."))] = []
    nemesis: Annotated[NemesisSpec | None, Field(description=(
        "Seeded random faults on top of the timeline; null: none."))] = None
    expect: Annotated[ExpectSpec, Field(description=(
        "Assertions the run must satisfy."))] = ExpectSpec()
    record: Annotated[Literal["all", "drops", "none"], Field(description=(
        "Which message events go to events.parquet: all (every delivery and drop), drops "
        "only, or none; faults and membership events are always recorded."))] = "all"
    node_logs: Annotated[bool, Field(description=(
        "Write each node's SQLite log (nodes/<id>.sqlite) with the outputs: every committed "
        "round with its signed gradients, about 2 GB for a 1000-node run."))] = True
    real: Annotated[RealSpec, Field(description=(
        "Settings that apply only under --real (processes over TCP)."))] = RealSpec()
    unsafe: Annotated[bool, Field(description=(
        "Allow more than f Byzantine or faulty nodes, to show what breaks."))] = False
    curation: Annotated[CurationSection | None, Field(description=(
        "Crowdsourced labelling on the run's nodes: annotation nodes, tasks, assignment and "
        "what a round commits (docs/curation.md); null: none."))] = None

    @property
    def annotation_nodes(self) -> tuple[int, ...]:
        """The annotation nodes: the last `curation.annotation_nodes` ids, never members."""
        count = self.curation.annotation_nodes if self.curation else 0
        return tuple(range(self.nodes.count - count, self.nodes.count))

    @property
    def followers(self) -> tuple[int, ...]:
        """The nodes outside the initial membership: observers and annotation nodes."""
        return tuple(sorted({*self.nodes.observers, *self.annotation_nodes}))

    @property
    def members(self) -> tuple[int, ...]:
        """The initial members: every node but the observers and the annotation nodes."""
        outside = set(self.followers)
        return tuple(i for i in range(self.nodes.count) if i not in outside)

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

    def _rlhf_fits(self) -> None:
        """An RLHF run labels preference tasks first and lasts its three stages."""
        w = self.workload
        if not isinstance(w, RlhfWorkload):
            return
        kind = getattr(getattr(self.curation, "tasks", None), "kind", None)
        if kind != "preferences":
            raise ValueError("workload rlhf takes its preferences from the curation platform: "
                             "give curation.tasks {kind: preferences, ...}")
        if self.training.rounds != w.total_rounds:
            raise ValueError(f"training.rounds: {self.training.rounds}, but the RLHF stages "
                             f"last collect {w.collect_rounds} + reward {w.reward_rounds} + "
                             f"policy {w.policy_rounds} = {w.total_rounds} rounds")
        per_round = self.training.batch * len(self.members)
        if w.kl_target is not None and w.kl_horizon < per_round:
            raise ValueError(f"workload.kl_horizon: {w.kl_horizon} rollouts is less than one "
                             f"PPO round's {per_round} (training.batch × members)")
        records = self.curation.batch_records()  # type: ignore[union-attr]
        per_batch = self.curation.batch.max_records  # type: ignore[union-attr]
        if records > w.collect_rounds * per_batch:
            raise ValueError(f"workload.collect_rounds: the batch crowd's {records} records "
                             f"need at least {-(-records // per_batch)} rounds at "
                             f"curation.batch.max_records {per_batch}; collect_rounds is "
                             f"{w.collect_rounds}")

    def _annotation_nodes_fit(self) -> None:
        annotation = set(self.annotation_nodes)
        attacked = sorted(set(self.curation.misbehaving()) - annotation) if self.curation else []
        if attacked:
            ids = (f"ids {min(annotation)}..{max(annotation)}" if annotation else "none: "
                   "set curation.annotation_nodes")
            raise ValueError(f"curation.byzantine: nodes {attacked} are not annotation nodes "
                             f"({ids})")
        if not annotation:
            return
        if len(annotation) >= self.nodes.count:
            raise ValueError(f"curation.annotation_nodes: {len(annotation)} of "
                             f"{self.nodes.count} nodes leaves no member")
        taken = sorted(annotation & {*self.nodes.observers, *self.byzantine_nodes()})
        if taken:
            raise ValueError(f"curation.annotation_nodes: nodes {taken} (the last ids) are "
                             f"also observers or Byzantine members; annotation nodes are the "
                             f"last {len(annotation)} ids, neither")

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        n = self.nodes.count

        def check_ids(where: str, ids: set[int]) -> None:
            bad = sorted(i for i in ids if i >= n)
            if bad:
                raise ValueError(f"{where}: node ids {bad} out of range 0..{n - 1}")

        check_ids("nodes.speeds", set(self.nodes.speeds))
        check_ids("nodes.observers", set(self.nodes.observers))
        self._annotation_nodes_fit()
        self._rlhf_fits()
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


def parse_scenario(data: Any, source: str = "scenario") -> Scenario:
    """The validated scenario; ScenarioError with one line per mistake, all of them at once."""
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: expected a mapping of fields at the top level")
    try:
        return Scenario.model_validate(data)
    except ValidationError as err:
        raise invalid(err, source, Scenario) from None


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
