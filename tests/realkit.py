"""Real nodes in the test's own process (`test_services.py`, `test_node_offloop.py`): each a
`RealNode` with its own key, TCP listener on loopback and SQLite log, all on one event loop."""

from __future__ import annotations

import io
import socket
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from phalanx.apps.node import RealNode, plan_node
from phalanx.apps.node_settings import NodeFile, node_identity
from phalanx.engine.node import Service
from phalanx.scenario.schema import Scenario


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def real_nodes(folder: Path, scenario: Scenario, services: Sequence[type[Service]] = (),
               web_port: int | None = None) -> list[RealNode]:
    """Every member of `scenario` as a real node that exits once finished; node 0 serves its
    HTTP status on `web_port` when one is given."""
    n = scenario.n
    ports = free_ports(n)
    keys = {i: node_identity(folder / f"node-{i}") for i in range(n)}
    members = {i: (keys[i].public_key, ("127.0.0.1", ports[i])) for i in range(n)}
    nodes = []
    for i in range(n):
        settings = NodeFile(node_id=i, p2p_port=ports[i], data_dir=folder / f"node-{i}",
                            web_port=web_port or 0,
                            enable_web_interface=web_port is not None and i == 0)
        plan = plan_node(settings, scenario, (members, {}), "tcp", False, True, 0.5)
        nodes.append(RealNode(plan, Console(file=io.StringIO()), services))
    return nodes
