"""Topologies: connected, deterministic, shaped as asked; routes are shortest-latency walks."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.sim.topology import KINDS, Routes, TopologyError, build_topology

PARAMS: dict[str, dict[str, Any]] = {
    "complete": {},
    "ring": {},
    "random_regular": {"degree": 4},
    "watts_strogatz": {"k": 4, "p": 0.2},
    "barabasi_albert": {"m": 2},
    "geo_clusters": {"clusters": 3, "intra_latency": 0.005, "inter_latency": 0.08},
}
RANDOM_KINDS = ("random_regular", "watts_strogatz", "barabasi_albert")


def build(kind: str, n: int, seed: int = 0, **overrides: Any) -> nx.Graph:
    return build_topology(kind, n, seed, latency=0.01, **{**PARAMS[kind], **overrides})


def test_kinds_listed() -> None:
    assert set(KINDS) == set(PARAMS)


@pytest.mark.parametrize("n", [6, 10, 37])
@pytest.mark.parametrize("kind", KINDS)
def test_connected_right_size_with_latencies(kind: str, n: int) -> None:
    if kind == "random_regular" and n % 2:
        n += 1
    g = build(kind, n, seed=3)
    assert sorted(g.nodes) == list(range(n))
    assert nx.is_connected(g)
    assert all(isinstance(lat, float) and lat > 0 for _, _, lat in g.edges(data="latency"))
    degrees = [d for _, d in g.degree()]
    if kind == "complete":
        assert degrees == [n - 1] * n
    elif kind == "ring":
        assert degrees == [2] * n
    elif kind == "random_regular":
        assert degrees == [4] * n
    elif kind == "watts_strogatz":
        assert g.number_of_edges() == n * 4 // 2  # rewiring keeps the edge count
    elif kind == "barabasi_albert":
        assert g.number_of_edges() == (n - 2) * 2
        assert min(degrees) >= 1  # the seed star's leaves may stay at degree 1


def test_geo_clusters_structure() -> None:
    n, clusters = 11, 3
    g = build("geo_clusters", n)
    assert g.graph["gateways"] == [0, 1, 2]
    for node in range(n):
        assert g.nodes[node]["cluster"] == node % clusters
    for u, v, lat in g.edges(data="latency"):
        if g.nodes[u]["cluster"] == g.nodes[v]["cluster"]:
            assert lat == 0.005
        else:
            assert {u, v} <= {0, 1, 2} and lat == 0.08
    for c in range(clusters):
        members = list(range(c, n, clusters))
        sub = g.subgraph(members)
        assert sub.number_of_edges() == len(members) * (len(members) - 1) // 2
    sizes = [len(range(c, n, clusters)) for c in range(clusters)]
    assert g.number_of_edges() == sum(s * (s - 1) // 2 for s in sizes) + 3  # + gateway triangle


def test_geo_clusters_intra_defaults_to_latency() -> None:
    g = build_topology("geo_clusters", 6, 0, latency=0.02, clusters=2, inter_latency=0.1)
    assert g.edges[0, 2]["latency"] == 0.02 and g.edges[0, 1]["latency"] == 0.1


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_for_equal_inputs(kind: str) -> None:
    a, b = build(kind, 30, seed=7), build(kind, 30, seed=7)
    assert sorted(a.edges(data="latency")) == sorted(b.edges(data="latency"))


@pytest.mark.parametrize("kind", RANDOM_KINDS)
def test_other_seed_other_graph(kind: str) -> None:
    edges = {frozenset(map(frozenset, build(kind, 30, seed=s).edges)) for s in range(4)}
    assert len(edges) > 1


def test_random_regular_retries_until_connected() -> None:
    # Degree 2 is a union of cycles, often disconnected at this size; retries find a single cycle.
    g = build_topology("random_regular", 8, 5, latency=0.01, degree=2)
    assert nx.is_connected(g) and all(d == 2 for _, d in g.degree())


@pytest.mark.parametrize(
    ("kind", "n", "params", "needle"),
    [
        ("mesh", 5, {}, "unknown topology kind"),
        ("complete", 1, {}, "n must be"),
        ("ring", 2, {}, "ring: n must be >= 3"),
        ("random_regular", 5, {"degree": 3}, "n*degree must be even (n=5, degree=3)"),
        ("random_regular", 6, {"degree": 6}, "degree must be < n"),
        ("random_regular", 6, {"degree": 0}, "degree must be >= 1"),
        ("random_regular", 6, {}, "degree is required"),
        ("random_regular", 40, {"degree": 1}, "no connected graph"),
        ("watts_strogatz", 6, {"k": 6, "p": 0.1}, "k must satisfy"),
        ("watts_strogatz", 6, {"k": 2, "p": 1.5}, "p must be in [0, 1]"),
        ("watts_strogatz", 6, {"k": 2}, "p is required"),
        ("barabasi_albert", 5, {"m": 5}, "m must satisfy"),
        ("geo_clusters", 4, {"clusters": 5, "inter_latency": 0.1}, "clusters must satisfy"),
        ("geo_clusters", 4, {"clusters": 2}, "inter_latency is required"),
        ("geo_clusters", 4, {"clusters": 2, "inter_latency": -1.0}, "inter_latency must be"),
        ("ring", 5, {"degree": 3}, "does not take parameter(s) degree"),
    ],
)
def test_impossible_params_raise(kind: str, n: int, params: dict[str, Any], needle: str) -> None:
    with pytest.raises(TopologyError) as info:
        build_topology(kind, n, 0, latency=0.01, **params)
    message = str(info.value)
    assert needle in message and "\n" not in message


def test_bad_seed_and_latency_raise() -> None:
    with pytest.raises(TopologyError, match="seed"):
        build_topology("ring", 5, -1, latency=0.01)
    with pytest.raises(TopologyError, match="latency"):
        build_topology("ring", 5, 0, latency=float("nan"))


def random_latencies(g: nx.Graph, seed: int) -> nx.Graph:
    rng = np.random.default_rng(seed)
    for u, v in sorted(g.edges):
        g.edges[u, v]["latency"] = float(rng.uniform(0.001, 0.1))
    return g


def check_routes(g: nx.Graph) -> Routes:
    routes = Routes(g)
    expected = dict(nx.all_pairs_dijkstra_path_length(g, weight="latency"))
    n = g.number_of_nodes()
    total = 0
    for src in range(n):
        for dst in range(n):
            path = routes.path(src, dst)
            assert path[0] == src and path[-1] == dst
            assert all(g.has_edge(a, b) for a, b in pairwise(path))
            walked = sum(g.edges[a, b]["latency"] for a, b in pairwise(path))
            assert walked == pytest.approx(expected[src][dst], abs=1e-12)
            assert routes.latency(src, dst) == pytest.approx(expected[src][dst], abs=1e-12)
            assert routes.hops(src, dst) == len(path) - 1
            assert routes.next_hop(src, dst) == (path[1] if src != dst else src)
            assert routes.next_hop_table[src, dst] == routes.next_hop(src, dst)
            total += len(path) - 1
    assert routes.mean_hops() == pytest.approx(total / (n * (n - 1)))
    return routes


@pytest.mark.parametrize("kind", KINDS)
def test_routes_are_shortest_walks(kind: str) -> None:
    check_routes(random_latencies(build(kind, 14, seed=1), seed=2))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 16), p=st.floats(0.2, 1.0), seed=st.integers(0, 2**16))
def test_routes_on_random_connected_graphs(n: int, p: float, seed: int) -> None:
    g = nx.gnp_random_graph(n, p, seed=seed)
    g.add_edges_from((i, i + 1) for i in range(n - 1))  # a spanning path keeps it connected
    check_routes(random_latencies(g, seed))


def test_ring_routes_uniform_latency() -> None:
    routes = Routes(build("ring", 10))
    assert routes.hops(0, 5) == 5 and routes.hops(0, 7) == 3
    assert routes.latency(0, 7) == pytest.approx(0.03)
    assert routes.path(0, 8) == [0, 9, 8]
    assert routes.mean_hops() == pytest.approx(2 * (1 + 2 + 3 + 4) / 9 + 5 / 9)


def test_geo_routes_cross_clusters_via_gateways() -> None:
    g = build("geo_clusters", 30, clusters=4)
    routes = check_routes(g)
    for src in range(30):
        for dst in range(30):
            a, b = src % 4, dst % 4
            path = routes.path(src, dst)
            if a == b:
                assert len(path) <= 2
                continue
            # Leaves its own cluster only at its gateway and enters the other at its gateway.
            crossings = [(x, y) for x, y in pairwise(path) if x % 4 != y % 4]
            assert crossings == [(a, b)]
            assert routes.latency(src, dst) == pytest.approx(
                0.08 + 0.005 * ((src != a) + (dst != b))
            )


def test_zero_latency_edges_are_edges() -> None:
    g = nx.path_graph(4)
    nx.set_edge_attributes(g, 0.0, "latency")
    routes = Routes(g)
    assert routes.path(0, 3) == [0, 1, 2, 3] and routes.latency(0, 3) == 0.0


def test_routes_rejects_bad_graphs() -> None:
    g = nx.Graph()
    g.add_edge(0, 1, latency=0.01)
    g.add_edge(2, 3, latency=0.01)
    with pytest.raises(TopologyError, match="not connected"):
        Routes(g)
    h = nx.path_graph(3)
    with pytest.raises(TopologyError, match="no latency"):
        Routes(h)
    relabelled = nx.relabel_nodes(build("ring", 4), {0: 10})
    with pytest.raises(TopologyError, match=r"0\.\.n-1"):
        Routes(relabelled)


def test_edge_queries() -> None:
    routes = Routes(build("geo_clusters", 9))
    assert routes.has_edge(0, 3) and routes.has_edge(3, 0) and not routes.has_edge(3, 4)
    assert routes.edge_latency(0, 1) == 0.08 and routes.edge_latency(3, 6) == 0.005
    assert routes.neighbors(4) == [1, 7]
    undirected = list(build("geo_clusters", 9).edges)
    assert sorted(routes.edges()) == sorted(undirected + [(v, u) for u, v in undirected])
    with pytest.raises(TopologyError, match="no edge 3-4"):
        routes.edge_latency(3, 4)
    with pytest.raises(IndexError):
        routes.next_hop(0, 9)


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("random_regular", {"degree": 6}),
        ("geo_clusters", {"clusters": 10, "intra_latency": 0.005, "inter_latency": 0.08}),
    ],
)
def test_thousand_nodes(kind: str, params: dict[str, Any]) -> None:
    g = build_topology(kind, 1000, 11, latency=0.01, **params)
    assert g.number_of_nodes() == 1000 and nx.is_connected(g)
    routes = Routes(g)
    rng = np.random.default_rng(0)
    for src, dst in rng.integers(0, 1000, size=(50, 2)).tolist():
        path = routes.path(src, dst)
        assert all(g.has_edge(a, b) for a, b in pairwise(path))
        assert routes.latency(src, dst) == pytest.approx(
            nx.dijkstra_path_length(g, src, dst, weight="latency")
        )
    assert 1.0 < routes.mean_hops() < 6.0
