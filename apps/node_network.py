"""A real node's share of its scenario's emulated network, as the launcher works it out
(apps/emulate.py, with the simulator's topology code, which a node process never loads) and
writes into the node's data folder as `network.json`: its links, routes and broadcast trees."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from phalanx.net.emulation import LinkSpec
from phalanx.scenario.schema import ScenarioError

FILE = "network.json"


@dataclass(frozen=True)
class NodeNetwork:
    """One node's part of the emulated network."""

    links: dict[int, LinkSpec]  # neighbour -> the directed link to it
    next_hop: dict[int, int]  # every other node -> our neighbour on the route to it
    children: dict[int, list[int]]  # root -> our children in root's shortest-path tree

    def to_json(self) -> str:
        return json.dumps({"links": {str(v): asdict(s) for v, s in self.links.items()},
                           "next_hop": {str(d): h for d, h in self.next_hop.items()},
                           "children": {str(r): k for r, k in self.children.items()}})


def read_network(path: Path) -> NodeNetwork:
    """The node's network.json; ScenarioError (one line) when it is missing or malformed."""
    try:
        data: Any = json.loads(path.read_text())
        return NodeNetwork({int(v): LinkSpec(**s) for v, s in data["links"].items()},
                           {int(d): int(h) for d, h in data["next_hop"].items()},
                           {int(r): [int(x) for x in k] for r, k in data["children"].items()})
    except OSError as err:
        raise ScenarioError(f"{path}: cannot read the emulated network ({err.strerror}); "
                            f"real.network: emulate needs the file phalanx run --real and "
                            f"phalanx cluster up write") from None
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise ScenarioError(f"{path}: not an emulated network file ({type(err).__name__})"
                            ) from None
