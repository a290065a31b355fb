"""Link model: FIFO serialization, loss/duplicate/jitter/reorder, additive degradations."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pytest

from phalanx.sim.links import Degradation, Draws, Link, LinkParams, Network
from phalanx.sim.topology import Routes, TopologyError, build_topology

MB = 1_000_000
JitterDist = Literal["uniform", "normal", "exponential"]


def rng(seed: int = 0) -> Draws:
    return Draws(np.random.default_rng(seed))


def test_fifo_serialization_queues_large_frames() -> None:
    link = Link(0, 1, LinkParams(bandwidth=8e6), base_latency=0.05)
    r = rng()
    (first,) = link.transmit(0.0, MB, r)
    (second,) = link.transmit(0.0, MB, r)
    assert first == pytest.approx(1.05)
    assert second - first == pytest.approx(1.0)
    assert link.busy_until == pytest.approx(2.0)
    # An idle link starts sending at `now`, not at the stale busy_until.
    (third,) = link.transmit(10.0, 1000, r)
    assert third == pytest.approx(10.0 + 1000 * 8 / 8e6 + 0.05)


def test_infinite_bandwidth_and_default_latency() -> None:
    link = Link(0, 1, LinkParams(latency=0.02))
    assert link.transmit(3.0, 10 * MB, rng()) == (pytest.approx(3.02),)
    assert link.busy_until == 3.0


def test_lost_frames_still_occupy_the_link() -> None:
    link = Link(0, 1, LinkParams(bandwidth=8e6, loss=1.0), base_latency=0.0)
    assert link.transmit(0.0, MB, rng()) == ()
    assert link.busy_until == pytest.approx(1.0)
    assert (link.frames_sent, link.frames_lost, link.bytes_sent) == (1, 1, MB)


@pytest.mark.parametrize(("loss", "extra"), [(0.1, 0.0), (0.0, 0.25), (0.1, 0.2)])
def test_loss_rate_statistics(loss: float, extra: float) -> None:
    link = Link(0, 1, LinkParams(loss=loss), base_latency=0.01)
    if extra:
        link.add_degradation(extra_loss=extra)
    r = rng(42)
    draws = 20_000
    lost = sum(not link.transmit(float(i), 100, r) for i in range(draws))
    p = loss + extra
    assert abs(lost / draws - p) < 5 * math.sqrt(p * (1 - p) / draws)
    assert link.frames_lost == lost


def test_loss_is_capped_at_one() -> None:
    link = Link(0, 1, LinkParams(loss=0.7), base_latency=0.01)
    link.add_degradation(extra_loss=0.6)
    assert link.loss_probability == 1.0 and link.extra_loss == pytest.approx(0.6)
    r = rng()
    assert all(link.transmit(0.0, 1, r) == () for _ in range(1000))


def test_duplicate_yields_two_arrivals_with_independent_jitter() -> None:
    link = Link(0, 1, LinkParams(duplicate=1.0, jitter=0.01), base_latency=0.1)
    out = link.transmit(0.0, 100, rng(1))
    assert len(out) == 2 and out[0] != out[1]
    assert all(0.1 <= t <= 0.11 for t in out)


def test_duplicate_rate_statistics() -> None:
    link = Link(0, 1, LinkParams(duplicate=0.2), base_latency=0.01)
    r = rng(3)
    twice = sum(len(link.transmit(0.0, 1, r)) == 2 for _ in range(20_000))
    assert abs(twice / 20_000 - 0.2) < 0.015


@pytest.mark.parametrize(
    ("dist", "mean", "low", "high"),
    [
        ("uniform", 0.5, 0.0, 1.0),
        ("normal", math.sqrt(2 / math.pi), 0.0, math.inf),  # mean of |N(0, 1)|
        ("exponential", 1.0, 0.0, math.inf),
    ],
)
def test_jitter_distributions(dist: JitterDist, mean: float, low: float, high: float) -> None:
    jitter, base = 0.01, 0.1
    link = Link(0, 1, LinkParams(jitter=jitter, jitter_dist=dist), base_latency=base)
    r = rng(5)
    delays = np.array([link.transmit(0.0, 1, r)[0] - base for _ in range(20_000)]) / jitter
    assert delays.min() >= low and delays.max() <= high
    assert delays.mean() == pytest.approx(mean, rel=0.03)


def test_reorder_holds_back_a_fraction() -> None:
    link = Link(0, 1, LinkParams(reorder=0.3, reorder_delay=0.5), base_latency=0.01)
    r = rng(9)
    arrivals = np.array([link.transmit(0.0, 1, r)[0] for _ in range(20_000)])
    held = np.isclose(arrivals, 0.51)
    assert np.all(held | np.isclose(arrivals, 0.01))
    assert abs(held.mean() - 0.3) < 0.02


def test_degradations_add_and_remove_cleanly() -> None:
    link = Link(0, 1, LinkParams(loss=0.05), base_latency=0.01)
    slow = link.add_degradation(extra_latency=0.1)
    flaky = link.add_degradation(extra_loss=0.5)
    both = link.add_degradation(extra_latency=0.3, extra_loss=0.1)
    assert link.extra_latency == pytest.approx(0.4)
    assert link.extra_loss == pytest.approx(0.6)
    assert link.loss_probability == pytest.approx(0.65)
    link.remove_degradation(flaky)
    assert (link.extra_latency, link.extra_loss) == (pytest.approx(0.4), pytest.approx(0.1))
    assert link.transmit(0.0, 1, rng(0)) in ((), (pytest.approx(0.41),))
    link.remove_degradation(slow)
    link.remove_degradation(both)
    assert (link.extra_latency, link.extra_loss) == (0.0, 0.0)  # exactly, no float residue
    with pytest.raises(KeyError):
        link.remove_degradation(both)
    assert link.transmit(5.0, 1, rng(0)) in ((), (pytest.approx(5.01),))


def test_degraded_latency_delays_arrivals() -> None:
    link = Link(0, 1, LinkParams(), base_latency=0.01)
    link.add_degradation(extra_latency=0.09)
    assert link.transmit(1.0, 1, rng()) == (pytest.approx(1.1),)


def test_bad_values_raise() -> None:
    with pytest.raises(ValueError, match="loss"):
        LinkParams(loss=1.5)
    with pytest.raises(ValueError, match="bandwidth"):
        LinkParams(bandwidth=0.0)
    with pytest.raises(ValueError, match="jitter_dist"):
        LinkParams(jitter_dist="pareto")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="jitter"):
        LinkParams(jitter=-1.0)
    with pytest.raises(ValueError, match="extra_loss"):
        Degradation(extra_loss=2.0)
    with pytest.raises(ValueError, match="extra_latency"):
        Link(0, 1, LinkParams()).add_degradation(extra_latency=math.nan)


NOISY = LinkParams(
    jitter=0.005,
    jitter_dist="normal",
    bandwidth=1e8,
    loss=0.2,
    duplicate=0.1,
    reorder=0.1,
    reorder_delay=0.02,
)


def run(params: LinkParams, seed: int, frames: int = 500) -> list[tuple[float, ...]]:
    link, r = Link(0, 1, params, base_latency=0.01), rng(seed)
    return [link.transmit(i * 0.001, 1500, r) for i in range(frames)]


def test_reproducible_with_same_seed() -> None:
    assert run(NOISY, 7) == run(NOISY, 7)
    assert run(NOISY, 7) != run(NOISY, 8)


def test_rng_draws_do_not_depend_on_outcomes() -> None:
    # A fully lossy link makes exactly as many draws as a lossy-by-chance one with the same
    # params, so whether frames are lost never shifts the random stream of the rest of the run.
    clean, lossy = Link(0, 1, NOISY), Link(0, 1, NOISY)
    lossy.add_degradation(extra_loss=1.0, extra_latency=1.0)
    r1, r2 = rng(11), rng(11)
    for i in range(300):
        clean.transmit(float(i), 100, r1)
        assert lossy.transmit(float(i), 100, r2) == ()
    assert r1.uniform() == r2.uniform()


def network(**params: float) -> Network:
    g = build_topology("geo_clusters", 9, 0, latency=0.01, clusters=3, inter_latency=0.1)
    return Network(Routes(g), LinkParams(**params))  # type: ignore[arg-type]


def test_network_links_are_lazy_directed_and_use_edge_latency() -> None:
    net = network()
    assert net.links() == []
    a, b = net.link(3, 6), net.link(6, 3)
    assert a is not b and a is net.link(3, 6)
    assert (a.u, a.v, a.base_latency) == (3, 6, 0.01)
    assert net.link(0, 1).base_latency == 0.1
    assert len(net.links()) == 3
    with pytest.raises(TopologyError, match="no edge 3-4"):
        net.link(3, 4)


def test_network_degrade_pairs_and_restore() -> None:
    net = network(loss=0.01)
    cut = net.edges_between([0, 3, 6], [1, 4, 7])
    assert cut == [(0, 1)]
    token = net.degrade([(0, 1), (1, 0)], extra_latency=0.5, extra_loss=1.0)
    other = net.degrade([(0, 1)], extra_latency=0.25)
    assert net.link(0, 1).extra_latency == pytest.approx(0.75)
    assert net.link(1, 0).loss_probability == 1.0
    assert net.link(3, 6).extra_latency == 0.0
    net.restore(token)
    assert net.link(0, 1).extra_latency == pytest.approx(0.25)
    assert (net.link(1, 0).extra_latency, net.link(1, 0).extra_loss) == (0.0, 0.0)
    net.restore(other)
    assert net.link(0, 1).extra_latency == 0.0
    with pytest.raises(KeyError):
        net.restore(other)


def test_network_bad_pair_changes_nothing() -> None:
    net = network()
    with pytest.raises(TopologyError):
        net.degrade([(0, 1), (3, 4)], extra_loss=1.0)
    assert net.link(0, 1).extra_loss == 0.0


def test_network_degrade_all_reaches_future_links() -> None:
    net = network()
    early = net.link(3, 6)
    token = net.degrade(None, extra_latency=1.0)
    late = net.link(6, 3)
    assert early.extra_latency == 1.0 and late.extra_latency == 1.0
    pair = net.degrade([(6, 3)], extra_loss=0.5)
    net.restore(token)
    assert early.extra_latency == 0.0 and late.extra_latency == 0.0
    assert net.link(7, 4).extra_latency == 0.0
    assert late.extra_loss == 0.5
    net.restore(pair)
    assert late.extra_loss == 0.0


def test_draws_are_buffered_but_follow_the_seed() -> None:
    a, b = rng(3), rng(3)
    first = [a.uniform() for _ in range(5000)]  # crosses a block boundary
    assert first == [b.uniform() for _ in range(5000)]
    assert all(0.0 <= u < 1.0 for u in first) and first != [rng(4).uniform() for _ in range(5000)]
    assert a.exponential() > 0.0 and isinstance(a.normal(), float)
