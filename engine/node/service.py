"""The service interface: how a part of the node plugs into it, sans-IO.

The round protocol, view changes, accountability, membership and state sync are services of
the node, and so will be curation and RLHF. A service declares:

- the message kinds it owns (`routes`): the node's codec decodes them (`Node.messages`), the
  node hands each frame of such a kind to its handler after the checks every frame passes
  (signature, sender, replay window), and a kind no service of the node owns is refused and
  counted ("unknown_kind"), as any unknown kind always was;
- its timers, armed with `node.set_timer(service, name, delay)`: the driver sees them as
  "<service>/<name>" and the node hands `name` back to `on_timer`;
- its say in a round: `contribution()` is what a leader's fresh proposal carries for it (a
  digest, e.g. the root of a replicated log's snapshot, or a signed request), voters accept a
  proposal only if `contribution_problem(data)` finds nothing wrong, so the commit certificate
  covers it (through the set digest), and `on_commit(data)` runs at every node that commits
  the round, by voting or by state sync, in the same order;
- requests from the node's own door (`on_local`: a web app or API handing it work, e.g. an
  annotator's signed record), answered with a LocalAnswer the node emits;
- its part of the node's store (`persist`, keys "<service>/<key>"), what it reads back from
  it on a (re)start (`restore`, `stored`), what it does once the node has started (`start`),
  and what follows from a new membership (`on_members`).

Everything it does goes out through the node's helpers (`send`, `broadcast`, `persist`,
`emit`, `reject`, `set_timer`), so a service is as deterministic as the node itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from phalanx.engine.events import LocalAnswer, LocalRequest, Stored
from phalanx.net.envelope import Envelope

if TYPE_CHECKING:
    from phalanx.engine.node.node import Node

Disk = Mapping[str, Stored]


class ProtocolError(RuntimeError):
    """The node reached a state its protocol forbids (a bug, never a peer's doing): it fails
    loudly rather than sign or apply anything more."""


@dataclass(frozen=True, slots=True)
class Route:
    """A message kind a service owns, and who may send it."""

    message: type  # the message class; its KIND is what the wire carries
    handle: Callable[[Envelope], None]
    from_observers: bool = False  # observers (non-members) may send it to members
    to_followers: bool = False  # a node that follows the chain (not a member) takes it


class Service:
    """A part of the node with its own messages, timers and say in a round. Subclasses set
    `name` (the namespace of their timers and their key in a proposal's contributions) and
    `messages` (the message classes they own: `routes` gives each its handler)."""

    name: ClassVar[str]
    messages: ClassVar[tuple[type, ...]] = ()

    def __init__(self, node: Node) -> None:
        self.node = node

    def routes(self) -> Iterable[Route]:
        return ()

    def on_timer(self, name: str) -> None:
        raise ProtocolError(f"service {self.name!r} armed no timer {name!r}")

    def persist(self, key: str, value: bytes) -> None:
        """Write `value` to this service's part of the node's store (key "<name>/<key>"),
        before anything the service sends next leaves."""
        self.node.persist(f"{self.name}/{key}", value)

    def stored(self, disk: Disk, key: str) -> bytes | None:
        """What `persist(key, ...)` last wrote, as found on `disk` at a restart."""
        value = disk.get(f"{self.name}/{key}")
        return value if isinstance(value, bytes) else None

    def restore(self, disk: Disk) -> None:
        """Read back what this service persisted (a restart with the node's disk)."""

    def start(self) -> None:
        """The node has (re)started and entered its round."""

    def on_members(self, members: tuple[int, ...]) -> None:
        """The members are now `members` (start, a committed change, a restart, a checkpoint)."""

    def on_local(self, request: LocalRequest) -> LocalAnswer:
        """Answer a request from the node's own door (engine/events.py, LocalRequest); what
        it must make durable it persists first, the node emits the answer after."""
        return self.refuse(request, "unknown_op", f"service {self.name!r} takes no such request")

    def refuse(self, request: LocalRequest, reason: str, detail: str) -> LocalAnswer:
        return LocalAnswer(self.node.id, self.name, request.op[:40], request.token, False,
                           reason=reason, detail=detail)

    def contribution(self) -> bytes:
        """What a leader's fresh proposal of the current round carries for this service."""
        return b""

    def contribution_problem(self, data: bytes) -> str | None:
        """Why a proposal of the current round carrying `data` (b"" for nothing) for this
        service must not be voted for; None if it may."""
        return None

    def workload_inputs(self) -> Mapping[str, object]:
        """Committed state of this service the workload reads when it computes a gradient
        (an RLHF run's preference set): a pure function of committed data, never of what
        this node alone holds."""
        return {}

    def on_commit(self, data: bytes) -> None:
        """The round before `node.round` committed with `data` for this service (b"" for
        nothing)."""
