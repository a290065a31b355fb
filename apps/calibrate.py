"""`phalanx calibrate`: measure on this machine what the simulator needs to predict a real
loopback run of a scenario, and write a calibrated copy of the scenario.

The simulator models a round as compute (`training.step_time` per gradient at speed 1.0) and
link delays (latency, jitter, bandwidth). A real node also signs and verifies every frame,
handles events in Python, writes its SQLite log (`synchronous=FULL`: one flush per batch of
writes, a few per round, each before the vote it protects goes out) and shares this machine's cores with the
other node processes. The simulator has no parameter for those, so calibration measures:

1. compute: the median time of one real gradient of the scenario's workload (one torch thread,
   as a node runs it);
2. links: one-way latency, its spread (as uniform jitter) and bandwidth between two
   `TcpTransport` endpoints in two processes, timed by ping-pong (a frame's round trip / 2);
3. node work: the scenario's nodes run in this one process over an in-memory transport with
   their real SQLite logs, so the time per node and round, and its SQLite and frame-checking
   parts, are what a node does besides the network, without core sharing;
4. a measured real run of the cluster: the mean time between a node's commits. What the
   simulator with (1) and (2) leaves unexplained is a per-round cost on the critical path; it
   is folded into `step_time` (gradient + residual), the one parameter the simulator spends
   once per round. (3) says how much of the residual is node work rather than core sharing
   and process wake-ups.

What stays unmodelled: the residual is measured for the scenario's node count and model size
(verifications grow with n, flushed bytes with the model: a round's record holds every
gradient, and a checkpoint follows it), so a calibration predicts this scenario on this
machine, not other sizes; and the machine itself must stay as it was measured. Other tenants'
CPU load, and above all the disk's speed under the flushes, drift on a shared machine, and no
static parameter follows them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import torch
from rich.console import Console

from phalanx.apps.bench_consensus import round_periods
from phalanx.apps.bench_report import stamp
from phalanx.apps.cluster import check_runnable
from phalanx.apps.emulate import emulates, for_run
from phalanx.apps.node_host import AsyncHost
from phalanx.apps.node_log import NodeLog
from phalanx.apps.runner import RunResult, run_scenario
from phalanx.apps.switch_probe import shared_gradient_seconds, switch_seconds
from phalanx.engine.events import Action, Event, Received, Started
from phalanx.engine.node import Node
from phalanx.engine.rng import RngStreams
from phalanx.engine.workloads.base import GradientJob
from phalanx.net.crypto import Identity
from phalanx.net.emulation import EmulatedNetwork, LinkSpec
from phalanx.net.envelope import Envelope, open_frame
from phalanx.net.tcp import TcpTransport
from phalanx.scenario.build import node_config, workload_for
from phalanx.scenario.schema import Scenario, parse_scenario
from phalanx.sim.costed import stored_size
from phalanx.sim.costs import FORMAT, event_kind, parse_costs, workload_key

WINDOW = 1.0  # seconds a component is averaged over, at least (see `_timed`)
PING_BYTES = 256  # about a vote's frame: the latency probe
BULK_BYTES = 4 * 1024 * 1024  # long enough that its transfer time dwarfs the latency
STOP = b"stop"
ECHO_LIFETIME = 120.0  # an orphaned echo process gives up after this many seconds


class CalibrationError(RuntimeError):
    """A measurement that could not be made; the message is one line."""


# ---- scenario edits ------------------------------------------------------------------------


def with_rounds(scenario: Scenario, rounds: int) -> Scenario:
    """The same scenario with another number of rounds, validated."""
    data = scenario.model_dump(mode="json")
    data["training"]["rounds"] = rounds
    return parse_scenario(data, scenario.name)


def calibrated_scenario(scenario: Scenario, step_time: float, latency: float, jitter: float,
                        bandwidth: float) -> Scenario:
    """The scenario as the loopback cluster runs it: every node on this machine (speed 1,
    `step_time` measured here), every pair linked directly (a complete topology), the measured
    link and the real nodes' timeouts."""
    data = scenario.model_dump(mode="json")
    data["nodes"].update(speed=1.0, speeds={})
    data["topology"] = {"kind": "complete"}
    data["links"].update(latency=latency, jitter=jitter, jitter_dist="uniform",
                         bandwidth=bandwidth)
    data["training"]["step_time"] = step_time
    return real_timeouts(parse_scenario(data, scenario.name))


# ---- what one run says -----------------------------------------------------------------------


def round_seconds(result: RunResult) -> dict[str, float]:
    """Mean and median time between a node's consecutive commits (honest nodes, rounds after
    the first: the steady state, without start-up)."""
    gaps = round_periods(result)["gap"]
    return {"mean": float(gaps.mean()), "median": float(gaps.median())}  # type: ignore[arg-type]


def frame_bytes_per_round(result: RunResult) -> float:
    """Mean over rounds of the frame bytes the honest nodes sent for that round (the real
    nodes count them as the simulator does)."""
    honest = result.rounds.filter(~pl.col("byzantine"))
    per_round = honest.group_by("round").agg(pl.col("bytes_sent").sum())["bytes_sent"]
    return float(per_round.mean())  # type: ignore[arg-type]


def with_network(scenario: Scenario, network: str) -> Scenario:
    """The same scenario with another `real.network` (emulate, host or auto)."""
    data = scenario.model_dump(mode="json")
    data["real"]["network"] = network
    return parse_scenario(data, scenario.name)


def real_timeouts(scenario: Scenario) -> Scenario:
    """The scenario with the real nodes' timeouts as the simulated ones, as real runs use."""
    data = scenario.model_dump(mode="json")
    data["training"].update(round_timeout=scenario.real.round_timeout,
                            view_timeout=scenario.real.view_timeout, max_time=None)
    return parse_scenario(data, scenario.name)


def measure_real_run(scenario: Scenario, network: str = "host") -> dict[str, Any]:
    """Run the scenario's nodes as processes on loopback: round time, rounds per second, bytes
    per round, and the load average around it (another tenant's work slows real nodes).
    `network`: `host` (the calibration's: loopback as it is) or `emulate` (the scenario's
    topology and links emulated in the transport)."""
    load_before = os.getloadavg()[0]
    result = run_scenario(with_network(scenario, network), real=True)
    period = round_seconds(result)
    committed = result.summary["min_rounds_committed"]
    return {"round_seconds": period["mean"], "round_seconds_median": period["median"],
            "rounds_per_second": 1.0 / period["mean"], "network": result.summary["network"],
            "bytes_per_round": frame_bytes_per_round(result),
            "wire_bytes_per_round": result.summary["bytes_sent"] / max(committed, 1),
            "rounds_committed": committed, "wall_seconds": result.summary["wall_seconds"],
            "load_average_before": load_before, "load_average_after": os.getloadavg()[0]}


# ---- 1. compute ----------------------------------------------------------------------------


def gradient_seconds(scenario: Scenario, repeats: int,
                     clock: Callable[[], float] = time.perf_counter) -> float:
    """Mean time of one real gradient (node 0's, over successive rounds' batches) over at
    least `repeats` of them and `WINDOW` seconds: wall time, or with
    `clock=time.process_time` the CPU time it takes (what other tenants' load does not
    change)."""
    torch.set_num_threads(1)  # as every node process runs
    workload = workload_for(scenario, RngStreams(scenario.seed))
    params = workload.init_params()
    rounds = iter(range(1 << 62))
    # the first call pays one-off set-up (shard, kernels): `_timed` leaves it out
    return _timed(lambda: GradientJob(workload, 0, next(rounds), params).run(), repeats, clock)


# ---- 2. links ------------------------------------------------------------------------------


def _pair(seed: int) -> tuple[list[Identity], dict[int, bytes]]:
    ids = [Identity.derive(seed, i) for i in range(2)]
    return ids, {i: x.public_key for i, x in enumerate(ids)}


def _link(me: int, host: str, addresses: dict[int, tuple[str, int]], seed: int,
          on_frame: Callable[[bytes], None], emulate: bool) -> Any:
    """The probe's end of the link: a TcpTransport, wrapped as a real node wraps it when the
    scenario's network is emulated (one link of zero delay: its timers and framing cost CPU,
    the model adds the scenario's delays itself)."""
    ids, keyring = _pair(seed)
    peer = 1 - me

    def tcp(deliver: Callable[[bytes], None]) -> TcpTransport:
        return TcpTransport(me, {me: (host, 0), **addresses}, deliver, identity=ids[me],
                            keyring=keyring)

    if not emulate:
        return tcp(on_frame)
    return EmulatedNetwork(me, {peer: peer}, {me: [peer], peer: []},
                           {peer: LinkSpec(latency=0.0)}, seed, on_frame, tcp)


def _echo_peer(host: str, parent: tuple[str, int], seed: int, emulate: bool) -> None:
    """The far end of the link probe (its own process): send every frame back until STOP."""
    async def echo() -> None:
        stop = asyncio.Event()

        def on_frame(frame: bytes) -> None:
            if frame == STOP:
                stop.set()
            else:
                transport.send(0, frame)

        transport = _link(1, host, {0: parent}, seed, on_frame, emulate)
        await transport.start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ECHO_LIFETIME):
                await stop.wait()
        await transport.close()

    asyncio.run(echo())


async def _ping_pong(host: str, repeats: int, seed: int, emulate: bool, window: float
                     ) -> tuple[dict[int, list[float]], dict[int, float]]:
    """One-way times (round trip / 2) of frames of PING_BYTES and BULK_BYTES, and this
    process's CPU seconds per trip of each (one frame sent, one received)."""
    arrived: asyncio.Queue[bytes] = asyncio.Queue()
    transport = _link(0, host, {}, seed, arrived.put_nowait, emulate)
    await transport.start()
    address = transport.address
    peer = subprocess.Popen([sys.executable, "-m", "phalanx.apps.calibrate", address[0],
                             str(address[1]), str(seed), "emulate" if emulate else "host"],
                            stdin=subprocess.DEVNULL)
    try:
        await _wait_for_echo(transport, peer)
        samples: dict[int, list[float]] = {}
        cpu: dict[int, float] = {}
        for size, count in ((PING_BYTES, repeats), (BULK_BYTES, max(3, repeats // 10))):
            frame = os.urandom(size)
            times = samples[size] = []
            for _ in range(2):  # two warm-up trips: buffers grown, code paths hot
                transport.send(1, frame)
                await arrived.get()
            # at least `count` trips and `window` seconds (the machine's speed drifts)
            first, cpu_start = time.perf_counter(), time.process_time()
            while len(times) < count or time.perf_counter() - first < window:
                start = time.perf_counter()
                transport.send(1, frame)
                await arrived.get()
                times.append((time.perf_counter() - start) / 2)
            cpu[size] = (time.process_time() - cpu_start) / len(times)
        transport.send(1, STOP)
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(peer.wait, 10.0)
    finally:
        if peer.poll() is None:
            peer.kill()
            peer.wait()
        await transport.close()
    return samples, cpu


async def _wait_for_echo(transport: TcpTransport, peer: subprocess.Popen[bytes]) -> None:
    """Until the echo process has dialed us and we hold a link back (its address comes with
    its dial); a one-line error if it exits or stays silent instead."""
    deadline = time.monotonic() + 60.0
    while True:
        with contextlib.suppress(TimeoutError):
            await transport.wait_for_peers(0.2, [1])
            return
        if peer.poll() is not None:
            raise CalibrationError(f"the link probe's echo process exited ({peer.returncode})")
        if time.monotonic() > deadline:
            raise CalibrationError("the link probe's echo process never connected")


def measure_link(host: str, repeats: int, seed: int = 0, emulate: bool = False,
                 window: float = WINDOW) -> dict[str, Any]:
    """Latency, jitter and bandwidth of a TcpTransport link between two processes on `host`
    (`emulate`: through the link emulation, as real nodes of an emulated network send).

    Latency is the 10th percentile of the small frame's one-way time and jitter (uniform) twice
    its distance to the median, so the model's mean delay is the measured median; bandwidth
    comes from how much longer the bulk frame takes. `cpu`: the transport's CPU seconds per
    frame sent or received (half a trip's), linear in the frame's bytes."""
    samples, trip_cpu = asyncio.run(_ping_pong(host, repeats, seed, emulate, window))
    small, bulk = samples[PING_BYTES], samples[BULK_BYTES]
    p10 = statistics.quantiles(small, n=10)[0]
    median = statistics.median(small)
    transfer = max(statistics.median(bulk) - median, 1e-9)
    return {"latency": p10, "jitter": 2 * (median - p10), "one_way_median": median,
            "bandwidth": 8 * (BULK_BYTES - PING_BYTES) / transfer,
            "bulk_one_way_median": statistics.median(bulk), "ping_samples": len(small),
            "cpu": fit_linear([(size, seconds / 2) for size, seconds in trip_cpu.items()]),
            "stack": "TcpTransport + link emulation" if emulate else "TcpTransport"}


# ---- 3. node work without the network ------------------------------------------------------


class _TimedLog(NodeLog):
    """The node's SQLite log, timing its writes: wall seconds in all, and per transaction
    (bytes as the simulator counts them, CPU seconds of this thread)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.seconds, self.writes = 0.0, 0
        self.transactions: list[tuple[int, float]] = []

    def write_many(self, items: list[tuple[str, Any]]) -> None:
        start, cpu = time.perf_counter(), time.thread_time()
        super().write_many(items)
        self.transactions.append((sum(stored_size(v) for _, v in items),
                                  time.thread_time() - cpu))
        self.seconds += time.perf_counter() - start
        self.writes += 1  # one flushed transaction


class _Loopback:
    """A transport that hands each frame to the peer's host on the next loop turn."""

    def __init__(self, hosts: dict[int, AsyncHost]) -> None:
        self.hosts = hosts

    def send(self, peer: int, frame: bytes) -> None:
        asyncio.get_running_loop().call_soon(self.hosts[peer].feed, Received(frame))


class _TimedNode(Node):
    """A node that adds the CPU time of each `handle` to `tally[event_kind(event)]`
    ([events, seconds]): the core's own work, as the simulator's cost model prices it."""

    def __init__(self, *args: Any, tally: dict[str, list[float]]) -> None:
        super().__init__(*args)
        self.tally = tally

    def handle(self, event: Event, now: float) -> list[Action]:
        start = time.thread_time()  # this thread's: not the gradients on the worker threads
        try:
            return super().handle(event, now)
        finally:
            entry = self.tally.setdefault(event_kind(event), [0, 0.0])
            entry[0] += 1
            entry[1] += time.thread_time() - start


async def _run_nodes(scenario: Scenario, folder: Path,
                     make_node: Callable[..., Node] = Node) -> dict[str, Any]:
    n, s = scenario.nodes.count, scenario
    ids = [Identity.derive(s.seed, i) for i in range(n)]
    keyring = {i: x.public_key for i, x in enumerate(ids)}
    opened = [0.0]

    def opener(frame: bytes) -> Envelope:
        start = time.perf_counter()
        env = open_frame(frame, keyring)  # what a real node does: decode and verify each time
        opened[0] += time.perf_counter() - start
        return env

    hosts: dict[int, AsyncHost] = {}
    logs = [_TimedLog(folder / f"node-{i}.sqlite") for i in range(n)]
    for i in range(n):
        node = make_node(node_config(s, i, s.real.round_timeout, s.real.view_timeout), ids[i],
                         workload_for(s, RngStreams(s.seed)), opener)
        hosts[i] = AsyncHost(node, _Loopback(hosts), logs[i])
    start, cpu = time.perf_counter(), time.process_time()
    try:
        for host in hosts.values():
            host.feed(Started({}))
        async with asyncio.timeout(s.real.deadline):
            await asyncio.gather(*(h.finished.wait() for h in hosts.values()))
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    except TimeoutError:
        raise CalibrationError(f"the in-process nodes did not finish {s.training.rounds} "
                               f"rounds within real.deadline ({s.real.deadline:g} s)") from None
    finally:
        for host, log in zip(hosts.values(), logs, strict=True):
            host.cancel_timers()
            host.close()
            log.close()
    per = n * s.training.rounds  # node-rounds
    return {"node_round": wall / per, "node_round_cpu": cpu / per,
            "sqlite": sum(x.seconds for x in logs) / per,
            "sqlite_writes": sum(x.writes for x in logs) / per, "open_frames": opened[0] / per,
            "transactions": [t for x in logs for t in x.transactions]}


def node_work(scenario: Scenario, gradient: float) -> dict[str, float]:
    """Per node and round: the whole node-side work and its parts (gradient, SQLite writes,
    decoding and verifying frames; `other` is signing, aggregation, the optimizer step and
    Python event handling) and the CPU time of it (the rest is waiting for flushes), all nodes
    honest, in one process (no network, no core sharing).
    The logs live where a real run's do (the temporary folder), so their flushes cost the
    same."""
    with tempfile.TemporaryDirectory(prefix="phalanx-calibrate-") as tmp:
        work = asyncio.run(_run_nodes(scenario, Path(tmp)))
    work["gradient"] = gradient
    work["other"] = work["node_round"] - work["sqlite"] - work["open_frames"] - gradient
    return work


def node_costs(scenario: Scenario) -> dict[str, Any]:
    """What the scenario's nodes spend besides their gradients, run as `node_work` runs them:
    the core's mean CPU seconds per event of each kind (`sim.costs.event_kind`: decoding and
    verifying frames with no cache, as a real node, the protocol, signing, the aggregation
    and optimizer step), and each SQLite transaction's (bytes, CPU seconds) as the node
    writes its real records."""
    tally: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="phalanx-calibrate-") as tmp:
        work = asyncio.run(_run_nodes(scenario, Path(tmp),
                                      functools.partial(_TimedNode, tally=tally)))
    return {"handle": {kind: seconds / count for kind, (count, seconds) in sorted(tally.items())},
            "transactions": work["transactions"]}


# ---- 4. the measured run, and the file -----------------------------------------------------


def calibrate(scenario: Scenario, out_path: Path, rounds: int = 60, repeats: int = 200,
              console: Console | None = None) -> dict[str, Any]:
    """Measure (see the module's doc), write the calibrated scenario to `out_path` and return
    the measured values. `rounds`: the measured real run's length (and the in-process one's);
    `repeats`: gradients timed and link round trips."""
    if rounds < 3 or repeats < 10:
        raise CalibrationError(f"calibrate needs rounds >= 3 and repeats >= 10 (got {rounds} "
                               f"and {repeats})")
    check_runnable(scenario)  # before minutes of measuring, not after
    say = console.print if console else (lambda *_: None)
    short = with_rounds(scenario, rounds)
    say(f"calibrate {scenario.name}: timing {repeats} gradients ...")
    gradient = gradient_seconds(scenario, repeats)
    say("calibrate: TCP link between two processes ...")
    link = measure_link(scenario.real.host, repeats, scenario.seed)
    say(f"calibrate: {scenario.nodes.count} nodes in one process, {rounds} rounds ...")
    work = node_work(short, gradient)
    say(f"calibrate: measured real run, {rounds} rounds ...")
    real = measure_real_run(short)
    links = (link["latency"], link["jitter"], link["bandwidth"])
    modelled = round_seconds(run_scenario(calibrated_scenario(short, gradient, *links)))
    residual = real["round_seconds"] - modelled["mean"]  # the sim's round is linear in step_time
    step_time = max(0.0, gradient + residual)
    fitted = calibrated_scenario(scenario, step_time, *links)
    check = round_seconds(run_scenario(with_rounds(fitted, rounds)))
    measured = {
        "scenario": scenario.name, **stamp(), "cpus": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(), "nodes": scenario.nodes.count,
        "rounds_measured": rounds, "gradient_seconds": gradient, "link": link,
        "node_work": work, "real_run": real,
        "sim_round_seconds_uncorrected": modelled["mean"], "residual_seconds": residual,
        "step_time": step_time, "latency": link["latency"], "jitter": link["jitter"],
        "bandwidth": link["bandwidth"], "sim_round_seconds_calibrated": check["mean"],
    }
    write_calibrated(fitted, measured, out_path)
    say(f"calibrate: step_time {step_time * 1e3:.2f} ms (gradient {gradient * 1e3:.2f} + "
        f"per-round costs {residual * 1e3:.2f}), latency {link['latency'] * 1e6:.0f} µs, "
        f"jitter {link['jitter'] * 1e6:.0f} µs, bandwidth {link['bandwidth'] / 1e9:.2f} Gbit/s;"
        f" written to {out_path}")
    return measured


def _cpu_model() -> str:
    """The processor's name (`platform.processor()` is empty on most Linux systems)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def header(measured: dict[str, Any]) -> str:
    """The calibrated file's comment: what was measured, when, on what machine."""
    m, w, run, link = measured, measured["node_work"], measured["real_run"], measured["link"]
    machine, ms = m["machine"], 1e3
    lines = [
        f"calibrated by `phalanx calibrate` on {m['date']} for the loopback cluster of "
        f"scenario {m['scenario']!r}",
        f"machine: {machine['platform']}, {m['cpu_model']}, {m['cpus']} cores, "
        f"Python {machine['python']}",
        "replaced below: nodes.speed/speeds (1: all nodes on this machine), topology (complete:"
        " the cluster links every pair), links.latency/jitter/bandwidth, training.step_time,"
        " training.round_timeout/view_timeout (the real nodes' real.* ones)",
        f"gradient: {m['gradient_seconds'] * ms:.3f} ms (median, one torch thread)",
        f"link (TcpTransport, two processes): one-way {link['one_way_median'] * 1e6:.0f} µs "
        f"median -> latency {m['latency'] * 1e6:.0f} µs + uniform jitter "
        f"{m['jitter'] * 1e6:.0f} µs; bandwidth {m['bandwidth'] / 1e9:.2f} Gbit/s",
        f"real run, {m['rounds_measured']} rounds: {run['round_seconds'] * ms:.2f} ms per round"
        f" (load average {run['load_average_before']:.2f} before); the simulator with the "
        f"gradient and link alone: {m['sim_round_seconds_uncorrected'] * ms:.2f} ms",
        f"step_time = gradient + the residual per-round cost {m['residual_seconds'] * ms:.3f} ms"
        f" = {m['step_time'] * ms:.3f} ms; simulated: "
        f"{m['sim_round_seconds_calibrated'] * ms:.2f} ms per round",
        f"a node's own work per round (one process, no network): {w['node_round'] * ms:.2f} ms"
        f" = gradient {w['gradient'] * ms:.2f} + SQLite {w['sqlite'] * ms:.2f} "
        f"({w['sqlite_writes']:.2f} flushed writes) + frame checks {w['open_frames'] * ms:.2f} "
        f"+ signing, aggregation and Python {w['other'] * ms:.2f}, of it "
        f"{w['node_round_cpu'] * ms:.2f} ms CPU; {m['nodes']} nodes on {m['cpus']} cores need "
        f"{m['nodes'] * w['node_round_cpu'] / m['cpus'] * ms:.2f} ms per round of CPU at least;"
        f" the other {(m['step_time'] - w['node_round']) * ms:.2f} ms of step_time beyond a "
        "node's own work: core sharing, the transport's own CPU, wake-ups, concurrent flushes",
        "all of it sits in step_time: valid for this scenario's node count and model size on "
        "this machine, not for other sizes",
    ]
    return "".join(f"# {line}\n" for line in lines)


def write_calibrated(scenario: Scenario, measured: dict[str, Any], out_path: Path) -> None:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(header(measured) + scenario.resolved_yaml())


# ---- components, each alone: the simulator's measured cost model (sim/costs.py) ------------

PERSIST_SIZES = (256, 16 * 1024, 256 * 1024, 1024 * 1024)


def fit_linear(points: list[tuple[int, float]]) -> dict[str, float]:
    """Least-squares base + per_byte x size through (size, seconds) points, both >= 0."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    slope = max(0.0, sum((x - mx) * (y - my) for x, y in points) / var) if var else 0.0
    return {"base": max(0.0, my - slope * mx), "per_byte": slope}


def _timed(fn: Any, repeats: int, clock: Callable[[], float] = time.process_time,
           window: float = WINDOW) -> float:
    """Mean time of `fn` over at least `repeats` calls and `window` seconds of wall time: CPU
    time by default (a component's cost in CPU seconds; the model adds other tenants' load
    apart), or wall time. A shared VM's speed drifts from one second to the next (one
    gradient's CPU time here ranged over 0.47-0.90 ms within half a minute), so a component
    is averaged over seconds, as a run averages it, not taken from a few milliseconds."""
    fn()  # warm-up: caches, allocations
    start_wall, start, count = time.perf_counter(), clock(), 0
    while count < repeats or time.perf_counter() - start_wall < window:
        fn()
        count += 1
    return (clock() - start) / count


def flush_cost(repeats: int, window: float = WINDOW) -> dict[str, float]:
    """The wall time one transaction of the node's SQLite log (`synchronous=FULL`) waits for
    the disk beyond its CPU time, for each size, in the temporary folder where real runs keep
    their logs, fitted linear in bytes."""
    wall, cpu = [], []
    with tempfile.TemporaryDirectory(prefix="phalanx-calibrate-") as tmp:
        log = NodeLog(Path(tmp) / "node.sqlite")
        try:
            for size in PERSIST_SIZES:
                blob = os.urandom(size)

                def write(b: bytes = blob) -> None:
                    log.write_many([("checkpoint", b), ("votes", b"x")])

                count = max(5, repeats // 4)
                wall.append((size, _timed(write, count, time.perf_counter, window)))  # + disk
                cpu.append((size, _timed(write, count, window=window)))
        finally:
            log.close()
    return fit_linear([(size, max(0.0, w - c))
                       for (size, w), (_, c) in zip(wall, cpu, strict=True)])


def background_load(cores: int, seconds: float = 1.0) -> float:
    """Other tenants' runnable tasks, as a CPU-bound probe meets them: it spins for `seconds`
    and gets `share` = CPU time / wall time of a core; a machine time-shared among B other
    busy tasks gives it about cores / (B + 1) (capped at 1), so B ~ cores / share - cores
    (0 on a quiet machine). Unlike the load average, this counts no task that waits for a
    disk."""
    wall, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - wall < seconds:
        sum(range(1000))
    share = (time.process_time() - cpu) / (time.perf_counter() - wall)
    return max(0.0, cores / max(share, 1e-3) - cores)


def measure_components(scenarios: list[Scenario], repeats: int = 50,
                       say: Any = lambda *_: None, window: float = WINDOW) -> dict[str, Any]:
    """The costs file's content (sim/costs.py's format): each component timed alone, CPU
    components in CPU seconds, each averaged over at least `window` seconds; the other
    tenants' load as a CPU probe meets it is `background_load` (see `background_load`)."""
    cores = len(os.sched_getaffinity(0))
    background = background_load(cores)
    say("components: SQLite flushes ...")
    flush = flush_cost(repeats, window)
    # through the stack the real nodes run: the link emulation when the (first) scenario's
    # network is emulated
    emulate = bool(scenarios) and emulates(for_run(scenarios[0]))
    say("components: TcpTransport between two processes" + (
        ", through the link emulation ..." if emulate else " ..."))
    link = measure_link(scenarios[0].real.host if scenarios else "127.0.0.1", max(10, repeats),
                        emulate=emulate, window=window)
    processes = min(16, max((s.nodes.count for s in scenarios), default=2))
    say(f"components: a wake-up's cost with {processes} processes taking turns on the cores ...")
    switch = switch_seconds(processes, 2 * window)
    gradient, alone, handling, transactions = {}, {}, {}, []
    for s in scenarios:
        say(f"components: {s.name}: a gradient as {s.nodes.count} node processes taking turns "
            f"compute it, and the core's handling of each event kind ...")
        key = workload_key(s)
        probe = shared_gradient_seconds(s.resolved_yaml(), s.nodes.count, 2 * window)
        gradient[key], alone[key] = probe["taking_turns"], probe["back_to_back"]
        work = node_costs(s)
        handling[key] = work["handle"]
        transactions += work["transactions"]
    return {"format": FORMAT, **stamp(), "cpu_model": _cpu_model(),
            "cores": cores, "background_load": background, "load_average": os.getloadavg()[0],
            "disks": 1,  # every node's log lives in the one temporary folder of a run
            "scenarios": [s.name for s in scenarios], "gradient_seconds": gradient,
            "gradient_seconds_back_to_back": alone,
            "handle_seconds": handling, "transport_send": link["cpu"],
            "transport_recv": link["cpu"], "flush": flush,
            # the CPU of the nodes' own transactions (their real records), linear in bytes
            "persist_cpu": fit_linear(transactions),
            "switch_seconds": switch["switch_seconds"], "switch_probe": switch,
            "transport_latency": link["one_way_median"], "transport_link": link}


def write_components(scenarios: list[Scenario], out_path: Path, repeats: int = 50,
                     console: Console | None = None) -> dict[str, Any]:
    if repeats < 5:
        raise CalibrationError(f"--repeats: at least 5 (got {repeats})")
    say = console.print if console else (lambda *_: None)
    costs = measure_components(scenarios, repeats, say)
    parse_costs(costs, str(out_path))  # what we write must load
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(costs, indent=2) + "\n")
    return costs


if __name__ == "__main__":  # the link probe's far end: python -m phalanx.apps.calibrate HOST PORT SEED host|emulate
    _echo_peer(sys.argv[1], (sys.argv[1], int(sys.argv[2])), int(sys.argv[3]),
               sys.argv[4] == "emulate")
