"""The node: a sans-IO state machine (`Node.handle(event, now) -> list[Action]`) made of
services with one job each; `node.py` says how they fit together."""

from phalanx.engine.consensus import quorum
from phalanx.engine.node.config import NodeConfig
from phalanx.engine.node.node import Node, message_set
from phalanx.engine.node.persisted import StoreError
from phalanx.engine.node.proposals import MAX_VIEW, set_digest
from phalanx.engine.node.service import ProtocolError, Route, Service

__all__ = ["MAX_VIEW", "Node", "NodeConfig", "ProtocolError", "Route", "Service", "StoreError",
           "message_set", "quorum", "set_digest"]
