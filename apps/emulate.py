"""The scenario's network for real nodes: which links exist, what each one does, and the
routes between non-neighbours, worked out exactly as the simulator does (`sim.topology`, the
scenario's `topology` seed stream, `links`), for `net.emulation.EmulatedNetwork`. The launcher
writes each node's share into its data folder (`network.json`, apps/node_network.py).

`real.network` says whether a real node emulates it: `emulate` always, `host` never (the
machine's own network: loopback, or netem in namespaces set up from outside), `auto` (the
default) emulates under `phalanx run --real` and not in a `phalanx cluster up` cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from phalanx.apps.node_network import FILE, NodeNetwork
from phalanx.engine.rng import RngStreams
from phalanx.net.emulation import LinkSpec
from phalanx.scenario.schema import Scenario
from phalanx.sim.topology import Routes, build_topology

METHOD = "in-transport emulation (net/emulation.py): per directed link a seeded delay " \
         "(latency + jitter), a bandwidth queue and loss, over TCP on loopback"


def _routes(scenario: Scenario) -> Routes:
    topo = scenario.topology.model_dump(exclude={"kind"})
    graph = build_topology(scenario.topology.kind, scenario.nodes.count,
                           RngStreams(scenario.seed).seed("topology"),
                           latency=scenario.links.latency, **topo)
    return Routes(graph)


def _spec(scenario: Scenario, latency: float) -> LinkSpec:
    x = scenario.links
    return LinkSpec(latency=latency, jitter=x.jitter, jitter_dist=x.jitter_dist,
                    bandwidth=x.bandwidth, loss=x.loss, duplicate=x.duplicate,
                    reorder=x.reorder, reorder_delay=x.reorder_delay)


def node_network(scenario: Scenario, node_id: int) -> NodeNetwork:
    routes = _routes(scenario)
    links = {v: _spec(scenario, routes.edge_latency(node_id, v))
             for v in routes.neighbors(node_id)}
    n = scenario.nodes.count
    hops = {dst: routes.next_hop(node_id, dst) for dst in range(n) if dst != node_id}
    # the simulator's broadcast tree of each root: a neighbour whose next hop toward the root
    # is us is our child in it (SimWorld._tree)
    children = {root: [v for v in links if v != root and routes.next_hop(v, root) == node_id]
                for root in range(n)}
    return NodeNetwork(links, hops, children)


def write_networks(scenario: Scenario, folders: dict[int, Path]) -> None:
    """Each node's network.json (read by the node: a node process never loads the
    simulator's topology code)."""
    for node, folder in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / FILE).write_text(node_network(scenario, node).to_json())


def emulates(scenario: Scenario) -> bool:
    """Whether a real node emulates the network (`phalanx run --real` turns `auto` into
    `emulate` in the scenario its nodes read: see `for_run`)."""
    return scenario.real.network == "emulate"


def for_run(scenario: Scenario) -> Scenario:
    """The scenario as `phalanx run --real` hands it to its nodes: `auto` becomes `emulate`."""
    if scenario.real.network != "auto":
        return scenario
    return scenario.model_copy(update={"real": scenario.real.model_copy(
        update={"network": "emulate"})})


def describe(scenario: Scenario) -> dict[str, Any]:
    """What summary.json says of the emulated network: the links and their parameters."""
    routes = _routes(scenario)
    x = scenario.links
    return {"method": METHOD, "topology": scenario.topology.model_dump(mode="json"),
            "links": [[u, v, routes.edge_latency(u, v)] for u, v in routes.edges() if u < v],
            "links_note": "[u, v, one-way latency s] per undirected edge; both directions "
                          "are emulated, each with its own queue and draws",
            "jitter": x.jitter, "jitter_dist": x.jitter_dist, "bandwidth": x.bandwidth,
            "loss": x.loss, "duplicate": x.duplicate, "reorder": x.reorder,
            "reorder_delay": x.reorder_delay, "mean_hops": routes.mean_hops(),
            "routing": "frames to non-neighbours are relayed hop by hop on the simulator's "
                       "shortest-latency routes"}
