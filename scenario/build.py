"""What a scenario builds for one node: its `NodeConfig`, the run's workload, and the members'
identities with a frame opener over their keys. Shared by the simulator, Twins, the audit and
the real node, so all of them run the node a scenario describes in exactly the same way."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from phalanx.engine.byzantine.curation import RecordAttack, annotation_attack
from phalanx.engine.curation.crowd_records import crowd_records
from phalanx.engine.curation.log import Verify
from phalanx.engine.curation.service import CurationService, CurationSetup
from phalanx.engine.curation.tasks import TaskSet
from phalanx.engine.node import NodeConfig
from phalanx.engine.node.service import Service
from phalanx.engine.rng import RngStreams
from phalanx.engine.workloads import Workload, make_workload
from phalanx.net.codec import CORE, MessageSet
from phalanx.net.crypto import Identity, VerifyCache
from phalanx.net.envelope import FrameOpener
from phalanx.scenario.curation import PreferenceTasks
from phalanx.scenario.rlhf import RlhfWorkload
from phalanx.scenario.schema import Scenario, ScenarioError

if TYPE_CHECKING:
    from phalanx.engine.rlhf.service import RlhfSetup


def workload_for(scenario: Scenario, rngs: RngStreams) -> Workload:
    """The run's workload; ScenarioError when the workload cannot serve this many nodes (e.g.
    the digits' training images shared among more nodes than there are images)."""
    params = scenario.workload.model_dump(exclude={"kind"})
    params["batch"] = scenario.training.batch
    if isinstance(scenario.workload, RlhfWorkload):  # the toy and the filter: curation's
        params.update(_rlhf_params(scenario))
    try:
        return make_workload(scenario.workload.kind, params, scenario.nodes.count, rngs)
    except ValueError as e:
        raise ScenarioError(f"{scenario.name}: workload: {e}") from None


# A checkpoint carries the model, not the curation log: nodes of a curation run catch up by
# the round records themselves (whose proposals carry the batches), however far behind.
CURATION_CHECKPOINT_GAP = 2**62


def node_config(scenario: Scenario, node: int, round_timeout: float | None = None,
                view_timeout: float | None = None) -> NodeConfig:
    t = scenario.training
    curated = {"checkpoint_gap": CURATION_CHECKPOINT_GAP} if scenario.curation else {}
    return NodeConfig(node_id=node, members=scenario.members,
                      observers=scenario.followers, rounds=t.rounds,
                      lr=t.lr, momentum=t.momentum, aggregator=t.aggregator.kind,
                      aggregator_params=tuple(sorted(t.aggregator.params.items())),
                      pre_aggregation=t.aggregator.frozen_steps(),
                      aggregator_f=t.aggregator.f,
                      max_gradient_norm=t.max_gradient_norm,
                      votes_to_leader=t.votes == "leader",
                      detect_failures=t.failure_detector,
                      worker_momentum=t.worker_momentum, optimizer=t.optimizer,
                      round_timeout=round_timeout or t.round_timeout,
                      view_timeout=view_timeout or t.view_timeout,
                      compression=scenario.compression.method,
                      compression_params=tuple(sorted(scenario.compression.params.items())),
                      error_feedback=scenario.compression.error_feedback,
                      adaptive=scenario.compression.bounds,
                      feedback_decay=scenario.compression.feedback_decay,
                      worker_optimizer=t.worker_optimizer,
                      privacy=(scenario.privacy.clip, scenario.privacy.noise_multiplier)
                      if scenario.privacy else None, **curated)


def member_keys(scenario: Scenario, messages: MessageSet = CORE,
                ) -> tuple[list[Identity], FrameOpener, VerifyCache]:
    """The members' identities (derived from the seed), and a frame opener over their public
    keys that verifies each signature once (shared by every simulated node of a run) and
    decodes `messages` (the core kinds, plus those of the nodes' extra services)."""
    identities = [Identity.derive(scenario.seed, i) for i in range(scenario.nodes.count)]
    cache = VerifyCache()
    keyring = {i: ident.public_key for i, ident in enumerate(identities)}
    # decoding and verifying a frame is a pure function of its bytes: memoize it across the
    # simulated nodes (a forged frame has other bytes, so it is still checked and rejected)
    return identities, FrameOpener(keyring, verify=cache.verify, messages=messages), cache


def curation_setup(scenario: Scenario, verify: Verify | None = None) -> CurationSetup | None:
    """What the scenario's curation nodes share (None without a `curation:` section);
    ScenarioError when its task file cannot be read or has bad rows."""
    c = scenario.curation
    if c is None:
        return None
    try:
        tasks = c.task_set(scenario.seed)
    except ValueError as e:
        raise ScenarioError(f"{scenario.name}: {e}") from None
    return CurationSetup(tasks, c.policy(scenario.seed), max_records=c.batch.max_records,
                         max_bytes=c.batch.max_bytes,
                         offer_interval=scenario.training.round_timeout, verify=verify,
                         reputation=c.reputation.policy() if c.reputation else None,
                         crowd_records=batch_crowd_records(scenario, tasks),
                         crowd_node=crowd_node(scenario))


def crowd_node(scenario: Scenario) -> int:
    """The node that submits a batch crowd's records: the first member that is not one of
    the scenario's Byzantine members (one of those could drop them all)."""
    return min(set(scenario.members) - scenario.byzantine_nodes(), default=scenario.members[0])


def batch_crowd_records(scenario: Scenario, tasks: TaskSet) -> tuple[bytes, ...]:
    """The signed records of the scenario's batch crowd on `tasks` (the screened task set);
    none for a live crowd or without one."""
    c = scenario.curation
    crowd = c.simulated_crowd(scenario.seed) if c is not None else None
    if c is None or c.crowd is None or c.crowd.delivery != "batch" or crowd is None:
        return ()
    return crowd_records(crowd, tasks, c.redundancy, scenario.seed)


def _rlhf_params(scenario: Scenario) -> dict[str, Any]:
    c = scenario.curation
    assert c is not None and isinstance(c.tasks, PreferenceTasks)  # Scenario._rlhf_fits
    toy = c.tasks.toy()
    return {"vocab": toy.vocab, "prompt_length": toy.prompt_length,
            "completion_length": toy.completion_length, "target": toy.target,
            "max_target_share": toy.max_target_share,
            "completion_filter": c.safety.filter() if c.safety is not None else None,
            # a run's preferences are what its curation committed, never stand-ins
            "synthetic_pairs": 0}


def rlhf_setup(scenario: Scenario) -> RlhfSetup | None:
    """What the nodes of an RLHF run share (None for any other workload)."""
    w, c = scenario.workload, scenario.curation
    if not isinstance(w, RlhfWorkload):
        return None
    assert c is not None and isinstance(c.tasks, PreferenceTasks)  # Scenario._rlhf_fits
    # here: it loads the RLHF code
    from phalanx.engine.rlhf.service import RlhfSetup
    from phalanx.engine.rlhf.workload import RlhfWorkload as EngineRlhfWorkload

    def probe() -> EngineRlhfWorkload:
        workload = workload_for(scenario, RngStreams(scenario.seed))
        assert isinstance(workload, EngineRlhfWorkload)  # workload kind rlhf
        return workload

    return RlhfSetup(c.tasks.toy(), w.collect_rounds, w.collect_rounds + w.reward_rounds,
                     w.kl_coef, w.kl_target, w.kl_horizon,
                     kl_steps=scenario.training.batch * len(scenario.members),
                     kl_probe=probe if w.kl_target is not None else None)


def node_services(scenario: Scenario, verify: Verify | None = None
                  ) -> tuple[type[Service], ...]:
    """The services every node of the run adds to the built-in ones: curation with a
    `curation:` section, RLHF (after it: it reads the curation log) for workload rlhf."""
    services: list[type[Service]] = []
    setup = curation_setup(scenario, verify)
    if setup is not None:
        services.append(CurationService.configured(setup))
    rlhf = rlhf_setup(scenario)
    if rlhf is not None:
        from phalanx.engine.rlhf.service import RlhfService

        services.append(RlhfService.configured(rlhf))
    return tuple(services)


def annotation_attack_of(scenario: Scenario, node: int) -> RecordAttack | None:
    """The misbehaviour `curation.byzantine` gives annotation node `node` (None: honest), as
    the simulator and a real node both wrap it around the node."""
    attack = scenario.curation.misbehaving().get(node) if scenario.curation else None
    if attack is None:
        return None
    seed = RngStreams(scenario.seed).seed("annotation-attacks")
    return annotation_attack(attack.behaviour, seed, **attack.params())
