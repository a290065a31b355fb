"""The vocabulary between a Node and its driver: events in, actions out (the sans-IO seam).

A driver (SimPy in `sim/`, asyncio TCP in `apps/`) turns the world into events, feeds them to
`Node.handle(event, now)`, and carries out the returned actions. Nothing here touches I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from phalanx.net.messages import RoundRecord


class Job(Protocol):
    """Pure compute a node asks its driver to run (really, in both worlds)."""

    round: int
    cost: float  # work in units of one gradient step; the simulator turns it into time

    def run(self) -> Any: ...


# ---- events -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Started:
    """The node (re)starts; `disk` is what it persisted before, empty on a fresh start."""

    disk: Mapping[str, Stored] = field(default_factory=dict)
    # a restart whose disk was lost: the node cannot know what it signed before, so it abstains
    # from voting until it commits a round (an empty disk that survived means it signed nothing:
    # votes are persisted before they are sent)
    lost_disk: bool = False


@dataclass(frozen=True, slots=True)
class Received:
    frame: bytes


@dataclass(frozen=True, slots=True)
class TimerFired:
    name: str


@dataclass(frozen=True, slots=True)
class ComputeDone:
    job: Job
    result: Any


@dataclass(frozen=True, slots=True)
class RequestChange:
    """The node's operator asks it to join the members ("join", from an observer) or to leave
    them ("leave"); `Node.change_problem` says beforehand why a request would be refused."""

    op: str


@dataclass(frozen=True, slots=True)
class LinkConditions:
    """What the driver measured of the node's uplink: bits per second it can put on the wire
    towards all its peers together (``math.inf`` while no rate could be measured: the link is
    then taken as no limit), and the one-way latency (s) to the farthest. The adaptive
    compression controller sizes each gradient from the latest (engine/compress/adaptive)."""

    bandwidth: float
    latency: float


@dataclass(frozen=True, slots=True)
class PeerReachability:
    """What the driver's transport knows of a peer's connection: `reachable` False when the
    link to it went down (refused, reset, silent past its heartbeat), True when it is back.
    A hint to the failure detector (engine/node/detector.py), never a safety input."""

    peer: int
    reachable: bool


@dataclass(frozen=True, slots=True)
class Loaded:
    """The driver's answer to `Load(token, keys)`: what its durable storage holds under each
    key, in the same order (None where it holds nothing). A deterministic driver (the
    simulator, Twins, the tests' pump) hands it back at once, at the same time."""

    token: int
    values: tuple[Stored | None, ...]


@dataclass(frozen=True, slots=True)
class LocalRequest:
    """Someone at the node's own door (its web app, its API) asks service `service` to do
    `op` with `data`, e.g. the curation service to take an annotator's signed record. The
    node answers with a `LocalAnswer` metric among the actions of this event (`answer_of`),
    after the Persist actions that make what it took durable."""

    service: str
    op: str
    data: bytes
    token: int = 0  # handed back in the answer, for a caller matching answers to requests


Event = (Started | Received | TimerFired | ComputeDone | RequestChange | LinkConditions
         | PeerReachability | Loaded | LocalRequest)


# ---- actions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    peer: int
    frame: bytes
    kind: int  # message kind and round ride along so drivers can account without decoding
    round: int


@dataclass(frozen=True, slots=True)
class Broadcast:
    frame: bytes
    kind: int
    round: int


@dataclass(frozen=True, slots=True)
class SetTimer:
    """Arm (or re-arm, replacing the previous one) the timer called `name`."""

    name: str
    delay: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    name: str


@dataclass(frozen=True, slots=True)
class Compute:
    job: Job


class Durable(Protocol):
    """A typed record a node persists (engine/node/persisted.py): a driver keeping its disk
    in memory (the simulator) stores the record itself, one writing to a file encodes it."""

    def to_bytes(self) -> bytes: ...


Stored = bytes | RoundRecord | Durable  # what a node's disk holds under one key


@dataclass(frozen=True, slots=True)
class Persist:
    """Write `value` under `key` on the node's durable storage (survives a crash with disk)."""

    key: str
    value: Stored


@dataclass(frozen=True, slots=True)
class Emit:
    metric: Metric


@dataclass(frozen=True, slots=True)
class Load:
    """Read `keys` back from the node's durable storage and answer with `Loaded(token, ...)`:
    what the node no longer keeps in memory (committed rounds beyond its history window,
    asked for by a peer that syncs from them)."""

    token: int
    keys: tuple[str, ...]


Action = Send | Broadcast | SetTimer | CancelTimer | Compute | Persist | Emit | Load


# ---- metrics a node emits -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoundCommitted:
    node: int
    round: int
    view: int
    contributors: int
    train_loss: float
    model_hash: bytes
    via_sync: bool
    params: Any = field(repr=False, compare=False)  # the model after the round (never mutated)
    ratio: float | None = None  # the top-k ratio of the node's own gradient, when adaptive
    # figures of the node's own gradient of the round (GradientResult.metrics: an RLHF policy
    # step's reward, KL, ...); empty when it sent none or its workload reports none
    metrics: Mapping[str, float] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class Rejected:
    node: int
    reason: str
    sender: int | None


@dataclass(frozen=True, slots=True)
class Excluded:
    """`node` verified a proof that `offender` equivocated and excludes it from now on."""

    node: int
    offender: int
    round: int
    proof: bytes  # the signed Evidence frame, kept in the log


@dataclass(frozen=True, slots=True)
class ViewChanged:
    """`node` moved to `view` of `round` (a timeout, or f + 1 peers already had)."""

    node: int
    round: int
    view: int


@dataclass(frozen=True, slots=True)
class Finished:
    node: int
    rounds: int
    model_hash: bytes


@dataclass(frozen=True, slots=True)
class MembershipChanged:
    """`node` committed a change: from `round` on the members are `members`."""

    node: int
    round: int
    op: str  # "join" or "leave"
    subject: int
    members: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Suspicion:
    """`node` began (`suspected`) or stopped suspecting that `peer` is down, at `round`;
    `reason` says what it went by: "link down" or "silent" when it begins, "link up" or
    "heard" when it stops (engine/node/detector.py)."""

    node: int
    peer: int
    round: int
    suspected: bool
    reason: str


@dataclass(frozen=True, slots=True)
class CurationCommitted:
    """`node` committed `round` with its curation log at `root`, holding `records` (the
    curation service emits it at each commit: honest nodes at one round hold one root)."""

    node: int
    round: int
    root: bytes
    records: int


@dataclass(frozen=True, slots=True)
class LocalAnswer:
    """A service's answer to a `LocalRequest`: `result` when `ok` (e.g. a record's digest),
    else `reason` (a short refusal code) and `detail` (one line, never echoing the input)."""

    node: int
    service: str
    op: str
    token: int
    ok: bool
    result: bytes = b""
    reason: str = ""
    detail: str = ""


def answer_of(actions: list[Action], token: int | None = None) -> LocalAnswer | None:
    """The LocalAnswer among a node's actions (the one for `token`, if given)."""
    for action in actions:
        if isinstance(action, Emit) and isinstance(action.metric, LocalAnswer) and (
                token is None or action.metric.token == token):
            return action.metric
    return None


Metric = (RoundCommitted | Rejected | Excluded | ViewChanged | Finished | MembershipChanged
          | Suspicion | LocalAnswer | CurationCommitted)
