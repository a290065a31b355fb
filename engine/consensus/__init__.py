"""The BFT round protocol's pure parts: quorum arithmetic, vote books and certificates,
equivocation evidence. `engine/node.py` composes them into the round (see its docstring)."""

from phalanx.engine.consensus.checkpoint import CheckpointOffers, check_checkpoint, state_digest
from phalanx.engine.consensus.evidence import conflicting, equivocations, signed_in, slot_of
from phalanx.engine.consensus.quorum import max_faulty, quorum
from phalanx.engine.consensus.votes import Certificate, Key, VoteBook, check_certificate

__all__ = ["Certificate", "CheckpointOffers", "Key", "VoteBook", "check_certificate",
           "check_checkpoint", "conflicting", "equivocations", "max_faulty", "quorum",
           "signed_in", "slot_of", "state_digest"]
