"""Simulated network topologies and their static shortest-latency routes.

`build_topology` makes a connected networkx graph on nodes 0..n-1 whose edges carry a `latency`
attribute (one-way propagation seconds). `Routes` turns it into a dense next-hop table so the
simulator forwards a frame with one array lookup per hop instead of running a path search.
Faults never rewire the graph (partitions are link degradations in `sim.links`), so routes are
computed once per run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import networkx as nx
import numpy as np

if TYPE_CHECKING:  # scipy loads with the first Routes: `phalanx validate` checks graphs only
    import scipy.sparse as sp

    from phalanx.engine.rng import RngStreams
    from phalanx.scenario.schema import Scenario

__all__ = ["KINDS", "Routes", "TopologyError", "build_topology", "scenario_graph"]

KINDS: tuple[str, ...] = (
    "complete",
    "ring",
    "random_regular",
    "watts_strogatz",
    "barabasi_albert",
    "geo_clusters",
)

# Which optional parameters each kind reads; anything else given is a scenario typo worth flagging.
_KIND_PARAMS: dict[str, frozenset[str]] = {
    "complete": frozenset(),
    "ring": frozenset(),
    "random_regular": frozenset({"degree"}),
    "watts_strogatz": frozenset({"k", "p"}),
    "barabasi_albert": frozenset({"m"}),
    "geo_clusters": frozenset({"clusters", "intra_latency", "inter_latency"}),
}

# Random kinds that may come out disconnected are redrawn with derived seeds this many times.
_CONNECT_ATTEMPTS = 32

# Dijkstra sources per batch: bounds the float64 scratch memory to _CHUNK * n per batch.
_CHUNK = 256


class TopologyError(ValueError):
    """An impossible or inconsistent topology request; the message names the bad value."""


def _derived_seed(seed: int, attempt: int) -> int:
    # Attempt 0 uses the seed itself so a graph can be reproduced with networkx directly; retries
    # use SeedSequence so they are independent of neighbouring user seeds (seed+1 etc.).
    if attempt == 0:
        return seed
    return int(np.random.SeedSequence((seed, attempt)).generate_state(1)[0])


def _check_latency(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise TopologyError(f"{name} must be a finite number >= 0 (got {value})")
    return value


def _need(kind: str, name: str, value: object) -> None:
    if value is None:
        raise TopologyError(f"{kind}: parameter {name} is required")


def build_topology(
    kind: str,
    n: int,
    seed: int,
    *,
    latency: float,
    degree: int | None = None,
    k: int | None = None,
    p: float | None = None,
    m: int | None = None,
    clusters: int | None = None,
    intra_latency: float | None = None,
    inter_latency: float | None = None,
) -> nx.Graph:
    """Build a connected graph on nodes 0..n-1, deterministic in (kind, n, seed, params).

    Every edge has attribute `latency`. For "geo_clusters" edges inside a cluster get
    `intra_latency` (defaults to `latency`) and gateway-to-gateway edges `inter_latency`; nodes
    carry a `cluster` attribute and graph.graph["gateways"] lists the gateway of each cluster.
    """
    given = {
        "degree": degree,
        "k": k,
        "p": p,
        "m": m,
        "clusters": clusters,
        "intra_latency": intra_latency,
        "inter_latency": inter_latency,
    }
    n, seed = _check_request(kind, n, seed, given)
    latency = _check_latency("latency", latency)

    if kind == "complete":
        graph = nx.complete_graph(n)
    elif kind == "ring":
        graph = _ring(n)
    elif kind == "random_regular":
        graph = _random_regular(n, seed, degree)
    elif kind == "watts_strogatz":
        graph = _watts_strogatz(n, seed, k, p)
    elif kind == "barabasi_albert":
        graph = _barabasi_albert(n, seed, m)
    else:
        return _geo_clusters(n, clusters, latency, intra_latency, inter_latency)

    # Plain Graph with int nodes only: generators may return subclasses or extra graph attrs.
    out = nx.Graph(kind=kind)
    out.add_nodes_from(range(n))
    out.add_edges_from(graph.edges(), latency=latency)
    if not nx.is_connected(out):  # pragma: no cover - generators above guarantee it
        raise TopologyError(f"{kind}: generated graph is not connected (n={n}, seed={seed})")
    return out


def scenario_graph(scenario: Scenario, rngs: RngStreams) -> nx.Graph:
    """The scenario's topology, drawn from the run's `topology` stream."""
    params = scenario.topology.model_dump(exclude={"kind"})
    return build_topology(scenario.topology.kind, scenario.nodes.count, rngs.seed("topology"),
                          latency=scenario.links.latency, **params)


def _check_request(kind: str, n: int, seed: int, given: dict[str, object]) -> tuple[int, int]:
    """Check the kind, which parameters were given, n and seed; returns n and seed as ints."""
    if kind not in KINDS:
        raise TopologyError(f"unknown topology kind {kind!r}; allowed: {', '.join(KINDS)}")
    extra = sorted(k for k, v in given.items() if v is not None and k not in _KIND_PARAMS[kind])
    if extra:
        raise TopologyError(f"{kind}: does not take parameter(s) {', '.join(extra)}")
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 2:
        raise TopologyError(f"{kind}: n must be an integer >= 2 (got {n!r})")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise TopologyError(f"{kind}: seed must be an integer >= 0 (got {seed!r})")
    return int(n), int(seed)


def _ring(n: int) -> nx.Graph:
    if n < 3:
        raise TopologyError(f"ring: n must be >= 3 (got n={n})")
    return nx.cycle_graph(n)


def _barabasi_albert(n: int, seed: int, m: int | None) -> nx.Graph:
    _need("barabasi_albert", "m", m)
    assert m is not None
    if not 1 <= m < n:
        raise TopologyError(f"barabasi_albert: m must satisfy 1 <= m < n (n={n}, m={m})")
    return nx.barabasi_albert_graph(n, int(m), seed=seed)


def _random_regular(n: int, seed: int, degree: int | None) -> nx.Graph:
    _need("random_regular", "degree", degree)
    assert degree is not None
    if degree < 1:
        raise TopologyError(f"random_regular: degree must be >= 1 (got degree={degree})")
    if degree >= n:
        raise TopologyError(f"random_regular: degree must be < n (n={n}, degree={degree})")
    if (n * degree) % 2:
        raise TopologyError(f"random_regular: n*degree must be even (n={n}, degree={degree})")
    for attempt in range(_CONNECT_ATTEMPTS):
        graph = nx.random_regular_graph(int(degree), n, seed=_derived_seed(seed, attempt))
        if nx.is_connected(graph):
            return graph
    raise TopologyError(
        f"random_regular: no connected graph in {_CONNECT_ATTEMPTS} draws "
        f"(n={n}, degree={degree}); use a larger degree"
    )


def _watts_strogatz(n: int, seed: int, k: int | None, p: float | None) -> nx.Graph:
    _need("watts_strogatz", "k", k)
    _need("watts_strogatz", "p", p)
    assert k is not None and p is not None
    if not 2 <= k < n:
        raise TopologyError(f"watts_strogatz: k must satisfy 2 <= k < n (n={n}, k={k})")
    if not 0.0 <= p <= 1.0:
        raise TopologyError(f"watts_strogatz: p must be in [0, 1] (got p={p})")
    try:
        return nx.connected_watts_strogatz_graph(
            n, int(k), float(p), tries=_CONNECT_ATTEMPTS * 4, seed=seed
        )
    except nx.NetworkXError as exc:
        raise TopologyError(
            f"watts_strogatz: no connected graph found (n={n}, k={k}, p={p})"
        ) from exc


def _geo_clusters(
    n: int,
    clusters: int | None,
    latency: float,
    intra_latency: float | None,
    inter_latency: float | None,
) -> nx.Graph:
    _need("geo_clusters", "clusters", clusters)
    _need("geo_clusters", "inter_latency", inter_latency)
    assert clusters is not None and inter_latency is not None
    if not 1 <= clusters <= n:
        raise TopologyError(
            f"geo_clusters: clusters must satisfy 1 <= clusters <= n (n={n}, clusters={clusters})"
        )
    intra = latency if intra_latency is None else _check_latency("intra_latency", intra_latency)
    inter = _check_latency("inter_latency", inter_latency)

    graph = nx.Graph(kind="geo_clusters")
    # Round-robin assignment makes node c (c < clusters) the lowest id, hence gateway, of cluster c.
    gateways = list(range(clusters))
    graph.graph["gateways"] = gateways
    for node in range(n):
        graph.add_node(node, cluster=node % clusters)
    for c in range(clusters):
        members = range(c, n, clusters)
        graph.add_edges_from(
            ((a, b) for i, a in enumerate(members) for b in members[i + 1 :]), latency=intra
        )
    graph.add_edges_from(
        ((a, b) for i, a in enumerate(gateways) for b in gateways[i + 1 :]), latency=inter
    )
    return graph


class Routes:
    """Static shortest-latency routes of a connected graph on nodes 0..n-1.

    Tables are indexed [dst, src]: row dst is the shortest-path tree rooted at dst, in which the
    parent of src is exactly src's next hop toward dst (the graph is undirected). Memory is
    4 + 8 + 4 bytes per node pair (next hop, distance, hop count), e.g. 16 MB at n = 1000.
    """

    __slots__ = ("_dist", "_hops", "_lat", "_pred", "n")

    def __init__(self, graph: nx.Graph) -> None:
        n = graph.number_of_nodes()
        if n < 1 or set(graph.nodes) != set(range(n)):
            raise TopologyError("Routes: graph nodes must be the integers 0..n-1")
        self.n = n
        self._lat = self._latency_matrix(graph, n)
        self._pred = np.empty((n, n), dtype=np.int32)
        self._dist = np.empty((n, n), dtype=np.float64)
        self._hops = np.empty((n, n), dtype=np.int32)
        for start in range(0, n, _CHUNK):
            roots = np.arange(start, min(start + _CHUNK, n))
            self._fill(roots)

    @staticmethod
    def _latency_matrix(graph: nx.Graph, n: int) -> sp.csr_matrix:
        import scipy.sparse as sp

        rows: list[int] = []
        cols: list[int] = []
        data: list[float] = []
        for u, v, lat in graph.edges(data="latency"):
            if lat is None:
                raise TopologyError(f"Routes: edge {u}-{v} has no latency attribute")
            lat = float(lat)
            if not math.isfinite(lat) or lat < 0:
                raise TopologyError(f"Routes: edge {u}-{v} latency must be finite and >= 0")
            if u == v:
                continue  # a self-loop never shortens a path
            rows += (u, v)
            cols += (v, u)
            data += (lat, lat)
        # Built from COO with explicit data, so zero-latency edges stay stored and count as edges.
        matrix = sp.csr_matrix(
            (np.asarray(data, dtype=np.float64), (np.asarray(rows), np.asarray(cols))),
            shape=(n, n),
        )
        matrix.sort_indices()  # edge_latency() binary-searches each row
        return matrix

    def _fill(self, roots: np.ndarray) -> None:
        from scipy.sparse.csgraph import dijkstra

        dist, pred = dijkstra(self._lat, directed=True, indices=roots, return_predecessors=True)
        if np.isinf(dist).any():
            raise TopologyError("Routes: graph is not connected")
        rows = np.arange(len(roots))[:, None]
        pred[rows[:, 0], roots] = roots  # a root is its own next hop; keeps the doubling closed
        # Hop counts by pointer doubling: invariant hops[r, s] = hops from s to anc[r, s], and
        # each round jumps twice as far, so a depth-d tree needs log2(d) vectorised rounds.
        anc = pred
        hops = (np.arange(self.n)[None, :] != roots[:, None]).astype(np.int32)
        while not (anc == roots[:, None]).all():
            hops = hops + hops[rows, anc]
            anc = anc[rows, anc]
        self._pred[roots] = pred
        self._dist[roots] = dist
        self._hops[roots] = hops

    def _check(self, src: int, dst: int) -> None:
        if not (0 <= src < self.n and 0 <= dst < self.n):
            raise IndexError(f"node out of range 0..{self.n - 1}: src={src}, dst={dst}")

    def next_hop(self, src: int, dst: int) -> int:
        """The neighbour of src on its route to dst (src itself when src == dst)."""
        self._check(src, dst)
        return int(self._pred[dst, src])

    def path(self, src: int, dst: int) -> list[int]:
        """Nodes from src to dst inclusive along the route."""
        self._check(src, dst)
        column = self._pred[dst]
        out = [src]
        node = src
        while node != dst:
            node = int(column[node])
            out.append(node)
        return out

    def hops(self, src: int, dst: int) -> int:
        self._check(src, dst)
        return int(self._hops[dst, src])

    def latency(self, src: int, dst: int) -> float:
        """Sum of base edge latencies along the route, in seconds."""
        self._check(src, dst)
        return float(self._dist[dst, src])

    def mean_hops(self) -> float:
        """Mean route length over ordered pairs of distinct nodes."""
        if self.n < 2:
            return 0.0
        return float(self._hops.sum(dtype=np.int64)) / (self.n * (self.n - 1))

    @property
    def next_hop_table(self) -> np.ndarray:
        """Read-only view indexed [src, dst] -> next hop."""
        view = self._pred.T
        view.flags.writeable = False
        return view

    def has_edge(self, u: int, v: int) -> bool:
        return self._edge_index(u, v) >= 0

    def edge_latency(self, u: int, v: int) -> float:
        """Base latency of the edge u-v; TopologyError if they are not adjacent."""
        i = self._edge_index(u, v)
        if i < 0:
            raise TopologyError(f"no edge {u}-{v} in the topology")
        return float(self._lat.data[i])

    def neighbors(self, u: int) -> list[int]:
        self._check(u, u)
        lo, hi = self._lat.indptr[u], self._lat.indptr[u + 1]
        return self._lat.indices[lo:hi].tolist()

    def edges(self) -> Iterator[tuple[int, int]]:
        """Every directed edge (u, v), both directions, in (u, v) order."""
        indptr, indices = self._lat.indptr, self._lat.indices
        for u in range(self.n):
            for v in indices[indptr[u] : indptr[u + 1]].tolist():
                yield u, v

    def _edge_index(self, u: int, v: int) -> int:
        if not (0 <= u < self.n and 0 <= v < self.n):
            return -1
        lo, hi = int(self._lat.indptr[u]), int(self._lat.indptr[u + 1])
        i = lo + int(np.searchsorted(self._lat.indices[lo:hi], v))
        return i if i < hi and self._lat.indices[i] == v else -1
