"""RLHF as a service of the node (engine/node/service.py): what fixes the preference data,
the KL coefficient, and the lineage every round certifies.

- **The preference snapshot**: when the last collect round (`collect_rounds - 1`) commits,
  every node builds the preference set from its curation desk's committed labels
  (engine/rlhf/preferences.py). The curation log is committed data, so the set, and the root
  that names it, are the same at every node, by vote or by state sync.
- **The KL coefficient** a PPO round uses: fixed, or the adaptive controller of Ziegler et
  al. (2019) fed, at each policy round's commit, the KL of the committed policy measured on
  the workload's fixed evaluation rollouts: a pure function of committed parameters, so
  every node holds the same coefficient without exchanging it. It is measured on the
  setup's `kl_probe`, a workload of its own: a real node's compute thread may be running a
  job on the node's workload (loading other parameters into its models) at that moment.
- **Lineage**: a leader's proposal of round r carries the state after round r - 1 — the
  preferences' root and digest, the reward model's hash, the policy's hash and the KL
  coefficient — and a voter refuses a proposal whose lineage differs from its own
  (`proposal_rlhf_lineage`). The commit certificate therefore covers preferences root →
  reward-model hash → policy hash, round by round, and `phalanx audit` (which replays a log
  through the same checks) verifies the chain.
- **Store** (keys under "rlhf/"): `preferences` the encoded set, `kl` the coefficients of
  the last two rounds (a restart picks the one of its checkpoint's round).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from phalanx.engine.node.service import Disk, ProtocolError, Service
from phalanx.net.codec import decode_record, encode_record
from phalanx.net.crypto import sha256
from phalanx.net.errors import DecodeError

from .data import PreferenceSet
from .kl import AdaptiveKL, FixedKL
from .preferences import PreferenceReport, collect_preferences
from .toy import ToyTask

if TYPE_CHECKING:
    from phalanx.engine.curation.service import CurationService
    from phalanx.engine.node.node import Node
    from phalanx.engine.rlhf.workload import RlhfWorkload

__all__ = ["Lineage", "RlhfService", "RlhfSetup"]

NO_DIGEST = bytes(32)


@dataclass(frozen=True, slots=True)
class Lineage:
    """What round r's proposal certifies: the state after round r - 1."""

    preferences_root: bytes  # the curation snapshot's root (zeros before the snapshot)
    preferences_digest: bytes  # PreferenceSet.digest() (zeros before the snapshot)
    preferences: int  # how many pairs
    reward_hash: bytes  # SHA-256 of the reward model's parameters
    policy_hash: bytes  # SHA-256 of the policy's (and value head's) parameters
    kl_coef: float  # the KL coefficient round r's PPO gradients use


@dataclass(frozen=True)
class KlEntry:
    round: int
    value: float


@dataclass(frozen=True)
class KlLog:
    entries: tuple[KlEntry, ...]


@dataclass(frozen=True)
class RlhfSetup:
    """What every node of an RLHF run shares."""

    toy: ToyTask
    collect_rounds: int  # the preference snapshot is taken when round collect_rounds-1 commits
    policy_first: int  # the first policy round
    kl_coef: float
    kl_target: float | None = None  # adaptive when set
    kl_horizon: int = 10_000
    kl_steps: int = 1  # what one round counts as in the controller's horizon
    # a fresh workload of the run: the KL at each commit is measured on its models, never on
    # those a real node's compute thread may be running a job with at that moment
    kl_probe: Callable[[], RlhfWorkload] | None = None


class RlhfService(Service):
    name = "rlhf"
    setup: ClassVar[RlhfSetup]
    _probe: ClassVar[RlhfWorkload | None] = None  # built at first need, shared by the run's nodes

    @classmethod
    def configured(cls, setup: RlhfSetup) -> type[RlhfService]:
        return type("RlhfService", (cls,), {"setup": setup})

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        self.preferences: PreferenceSet | None = None
        self.report: PreferenceReport | None = None  # of the snapshot this process took
        self.kl = self._controller()
        self.kl_log: list[KlEntry] = []

    def _controller(self) -> FixedKL | AdaptiveKL:
        s = self.setup
        if s.kl_target is None:
            return FixedKL(s.kl_coef)
        return AdaptiveKL(s.kl_coef, s.kl_target, s.kl_horizon)

    @property
    def workload(self) -> RlhfWorkload:
        return self.node.workload  # type: ignore[return-value]

    # --- restart ---------------------------------------------------------------------------

    def restore(self, disk: Disk) -> None:
        data = self.stored(disk, "preferences")
        if data is not None:
            pref = decode_record(PreferenceSet, data)
            if pref.round < self.node.round:  # taken at a round its checkpoint covers
                self.preferences = pref
        data = self.stored(disk, "kl")
        if data is not None:
            entries = decode_record(KlLog, data).entries
            self.kl_log = [e for e in entries if e.round <= self.node.round]
            if self.kl_log:
                self.kl = self._controller()
                self.kl.value = self.kl_log[-1].value

    # --- the round -------------------------------------------------------------------------

    def lineage(self) -> Lineage:
        """The lineage of the node's current state (after round `node.round - 1`)."""
        prefs, params = self.preferences, self.node.params
        groups = {g.name: g for g in self.workload.parameter_groups()}
        reward, policy = groups["reward"], groups["policy"]
        return Lineage(prefs.root if prefs else NO_DIGEST,
                       prefs.digest() if prefs else NO_DIGEST, len(prefs) if prefs else 0,
                       sha256(params[reward.start:reward.stop].tobytes()),
                       sha256(params[policy.start:policy.stop].tobytes()),
                       float(self.kl.value))

    def contribution(self) -> bytes:
        return encode_record(self.lineage())

    def contribution_problem(self, data: bytes) -> str | None:
        if not data:
            return "proposal_rlhf_lineage_missing"
        try:
            given = decode_record(Lineage, data)
        except DecodeError:
            return "proposal_rlhf_lineage_malformed"
        return None if given == self.lineage() else "proposal_rlhf_lineage"

    def workload_inputs(self) -> dict[str, object]:
        inputs: dict[str, object] = {"kl_coef": float(self.kl.value)}
        if self.preferences is not None:
            inputs["preferences"] = self.preferences
        return inputs

    def on_commit(self, data: bytes) -> None:
        round, s = self.node.round - 1, self.setup
        if round == s.collect_rounds - 1:
            self._take_snapshot()
        if round >= s.policy_first and s.kl_target is not None:
            kl = self._kl_workload().kl_value(self.node.params)
            self.kl.update(float(kl), s.kl_steps)
            self.kl_log = [*self.kl_log[-1:], KlEntry(self.node.round, float(self.kl.value))]
            self.persist("kl", encode_record(KlLog(tuple(self.kl_log))))

    def _kl_workload(self) -> RlhfWorkload:
        """Where the KL is measured: the setup's probe (a workload of its own), else the
        node's workload (a driver that runs no compute beside the node, e.g. a test's)."""
        make = self.setup.kl_probe
        if make is None:
            return self.workload
        cls = type(self)
        if cls._probe is None:
            cls._probe = make()
        return cls._probe

    def _take_snapshot(self) -> None:
        curation: CurationService | None = self.node.service("curation")  # type: ignore[assignment]
        if curation is None:
            raise ProtocolError("an RLHF run takes its preferences from the curation service")
        self.preferences, self.report = collect_preferences(curation.desk, self.setup.toy)
        self.persist("preferences", encode_record(self.preferences))
