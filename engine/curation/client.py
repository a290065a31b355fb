"""The signing side of an annotator: their key and the head of their chain.

Used by API clients, simulated annotators and tests (the browser does the same with WebCrypto,
byte for byte: see records.py). Keys are net/crypto's Ed25519 identities, so a key file is
`Identity.save(path)` / `Identity.load_or_create(path)` — hex seed, owner-readable only:

    client = AnnotatorClient(Identity.load_or_create("annotator.key"))
    client.resume(*log.head(client.public_key))      # after a restart
    record = client.sign(task, task.answer_from("cat"))
    log.add(record)                                  # or send record.encode() to a node
"""

from __future__ import annotations

from phalanx.net.crypto import Identity

from .records import GENESIS, Annotation, SignedAnnotation, sign_annotation
from .tasks import Answer, Task

__all__ = ["AnnotatorClient"]


class AnnotatorClient:
    def __init__(self, identity: Identity, seq: int = 0, prev: bytes = GENESIS) -> None:
        """`seq`, `prev`: the chain link of the next record (a fresh annotator starts at 0)."""
        self.identity = identity
        self.seq = seq
        self.prev = prev

    @classmethod
    def generate(cls) -> AnnotatorClient:
        return cls(Identity.generate())

    @property
    def public_key(self) -> bytes:
        return self.identity.public_key

    def resume(self, seq: int, prev: bytes) -> None:
        """Continue the chain from (seq, prev), as a node's `CurationLog.head` reports it."""
        self.seq, self.prev = seq, prev

    def sign(self, task: Task, answer: Answer, client_time_ms: int = 0) -> SignedAnnotation:
        """The next record of this annotator: `answer` to `task`, checked against the task's
        schema (TaskError), signed and linked to the previous one."""
        task.validate(answer)
        body = Annotation(task=task.digest, kind=task.kind, annotator=self.public_key,
                          seq=self.seq, prev=self.prev, choice=answer.choice,
                          text=answer.text, client_time_ms=client_time_ms)
        record = sign_annotation(self.identity, body)
        self.seq, self.prev = self.seq + 1, record.digest
        return record
