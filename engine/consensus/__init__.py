"""The BFT round protocol's pure parts: quorum arithmetic, vote books and certificates,
equivocation evidence, checkpoints, membership changes. `engine/node/` composes them into the round (see `engine/node/protocol.py`)."""

from phalanx.engine.consensus.checkpoint import CheckpointOffers, check_checkpoint, state_digest
from phalanx.engine.consensus.evidence import conflicting, equivocations, signed_in, slot_of
from phalanx.engine.consensus.membership import (
    OP_NAMES,
    OPS,
    applied,
    change_problem,
    epochs_problem,
    members_at,
)
from phalanx.engine.consensus.quorum import max_faulty, quorum
from phalanx.engine.consensus.votes import Certificate, Key, VoteBook, check_certificate

__all__ = ["OPS", "OP_NAMES", "Certificate", "CheckpointOffers", "Key", "VoteBook", "applied",
           "change_problem", "check_certificate", "check_checkpoint", "conflicting",
           "epochs_problem", "equivocations", "max_faulty", "members_at", "quorum", "signed_in",
           "slot_of", "state_digest"]
