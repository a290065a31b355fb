"""Byzantine annotation nodes: what a node that takes annotators' submissions can do to them.

Such a node acknowledges every submission (its own desk verifies and holds it as an honest
node's would) and then misbehaves with the `CurationRecords` it forwards to the members:

- ``drop``: forwards nothing, so what it took never commits; the annotator resubmits
  through another node once their patience runs out;
- ``delay``: forwards everything `delay` seconds late (released on the node's next event
  after that);
- ``forge``: forwards, in place of each record, the record altered (another answer under the
  annotator's signature) and a record forged in the annotator's name (signed by a key of its
  own): every honest node refuses both as "bad_signature" and counts them;
- ``equivocate``: forwards each record to only one half of the members (by its digest), so
  members hold different pending sets; the round commits each once a leader holds it.

It cannot make a forged or altered record count: records are signed by their annotator.
The attack runs on the scenario's timeline, from `at` for `duration` seconds (None: to the
end), a node's `now` deciding.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

from phalanx.engine.byzantine.base import Behaviour, NodeView
from phalanx.engine.curation.messages import CurationRecords
from phalanx.engine.curation.records import (
    RecordRefused,
    SignedAnnotation,
    decode_annotation,
    signed_message,
)
from phalanx.engine.events import Action, Broadcast, Send
from phalanx.net.codec import encode_record
from phalanx.net.crypto import Identity, sha256

__all__ = ["ANNOTATION_ATTACKS", "DelayRecords", "DropRecords", "EquivocateRecords",
           "ForgeRecords", "RecordAttack", "annotation_attack"]


class RecordAttack(Behaviour):
    """Rewrites the node's `CurationRecords` broadcasts while the attack is on; everything
    else it sends passes as an honest node's would."""

    name: ClassVar[str] = "records"

    def __init__(self, at: float = 0.0, duration: float | None = None, seed: int = 0) -> None:
        super().__init__(0, frozenset(), seed)
        if not at >= 0 or (duration is not None and not duration > 0):
            raise ValueError(f"{self.name}: at must be >= 0 and duration > 0 seconds")
        self.at, self.until = at, None if duration is None else at + duration

    def on(self, now: float) -> bool:
        return self.at <= now and (self.until is None or now < self.until)

    def outgoing(self, actions: list[Action], node: NodeView) -> list[Action]:
        if not self.on(node.now):
            return actions
        out: list[Action] = []
        for a in actions:
            if isinstance(a, Broadcast) and a.kind == CurationRecords.KIND:
                message: CurationRecords = node.open(a.frame).message  # type: ignore[assignment]
                out += self.records(a, message, node)
            else:
                out.append(a)
        return out

    def records(self, action: Broadcast, message: CurationRecords,
                node: NodeView) -> list[Action]:
        return [action]


class DropRecords(RecordAttack):
    name = "drop"

    def records(self, action: Broadcast, message: CurationRecords,
                node: NodeView) -> list[Action]:
        return []


class DelayRecords(RecordAttack):
    name = "delay"

    def __init__(self, at: float = 0.0, duration: float | None = None, seed: int = 0,
                 delay: float = 10.0) -> None:
        super().__init__(at, duration, seed)
        if not delay > 0:
            raise ValueError(f"delay: delay must be > 0 seconds (got {delay})")
        self.delay = delay
        self._held: list[tuple[float, Action]] = []

    def outgoing(self, actions: list[Action], node: NodeView) -> list[Action]:
        out = super().outgoing(actions, node)
        due = [a for t, a in self._held if t <= node.now]
        self._held = [(t, a) for t, a in self._held if t > node.now]
        return out + due

    def records(self, action: Broadcast, message: CurationRecords,
                node: NodeView) -> list[Action]:
        self._held.append((node.now + self.delay, action))
        return []


class ForgeRecords(RecordAttack):
    name = "forge"

    def records(self, action: Broadcast, message: CurationRecords,
                node: NodeView) -> list[Action]:
        own = Identity.derive(self.seed, node.id)  # a key of the node's, not the annotator's
        forged: list[bytes] = []
        for data in message.records:
            try:
                record = decode_annotation(data)
            except RecordRefused:
                continue
            body = record.body
            other = (body.choice[0] + 1,) if body.choice else ()
            altered = replace(body, choice=other, text=body.text if other else body.text + ".")
            forged.append(SignedAnnotation(altered, record.signature).encode())
            made_up = replace(altered, seq=body.seq + 1, prev=record.digest)
            signature = own.sign(signed_message(sha256(encode_record(made_up))))
            forged.append(SignedAnnotation(made_up, signature).encode())
        if not forged:
            return []
        frame = node.sign(CurationRecords(message.round, tuple(forged)))
        return [Broadcast(frame, action.kind, action.round)]


class EquivocateRecords(RecordAttack):
    name = "equivocate"

    def records(self, action: Broadcast, message: CurationRecords,
                node: NodeView) -> list[Action]:
        members = [m for m in node.members if m != node.id]
        halves = (members[::2], members[1::2])
        out: list[Action] = []
        for side, peers in enumerate(halves):
            part = tuple(r for r in message.records if sha256(r)[0] % 2 == side)
            if part and peers:
                frame = node.sign(CurationRecords(message.round, part))
                out += [Send(p, frame, action.kind, action.round) for p in peers]
        return out


ANNOTATION_ATTACKS: dict[str, type[RecordAttack]] = {
    cls.name: cls for cls in (DropRecords, DelayRecords, ForgeRecords, EquivocateRecords)}


def annotation_attack(behaviour: str, seed: int = 0, **params: Any) -> RecordAttack:
    """The attack called `behaviour` (drop, delay, forge, equivocate) with its parameters
    (`at`, `duration`, and `delay` for delay); ValueError naming the known ones."""
    cls = ANNOTATION_ATTACKS.get(behaviour)
    if cls is None:
        raise ValueError(f"unknown annotation node behaviour {behaviour[:40]!r}; known: "
                         f"{', '.join(ANNOTATION_ATTACKS)}")
    return cls(seed=seed, **params)
