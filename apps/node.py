"""`phalanx node --real` (also `python -m phalanx.apps.node --real ...`): one production node.

The very Node the simulator tests, driven by asyncio and the wall clock over TCP (or as an
MPI rank), with:
- its key in `<data_dir>/node.key` (created on first start) and the members' keys from
  `members.json` (or, over MPI, gathered from the job's ranks);
- its durable state in `<data_dir>/node.sqlite` (commits with certificates, checkpoint,
  votes), so a killed node restarts where it stopped and fetches what it missed from peers;
- an HTTP status endpoint (`apps/status.py`) unless the web interface is off;
- an interactive console when attached to a terminal (`apps/console.py`);
- graceful shutdown on SIGTERM or SIGINT: results written, the log closed, links closed.

When the node has committed the scenario's last round it writes `result.json` and
`models.npz` into its data folder and keeps serving peers (state sync) until stopped, or
exits after `linger` seconds with `--exit-when-finished`.
"""

from __future__ import annotations

import sys

from phalanx.apps.numerics import pin_at_entry, threads
from phalanx.apps.numerics import report as numerics_report

# first: kernel paths are fixed before torch or numpy load (apps/numerics.py)
pin_at_entry(["", "node"])  # a real node pins when PHALANX_NUMERICS=portable asks

import asyncio
import dataclasses
import os
import resource
import signal
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import torch
from rich.console import Console

from phalanx.apps.console import answer
from phalanx.apps.http_guard import HttpLimits, raise_fd_limit
from phalanx.apps.mpi_run import gather_ranks, run_folder
from phalanx.apps.node_curation import NodePort, WebServer, serve_curation, web_tls
from phalanx.apps.node_host import AsyncHost
from phalanx.apps.node_log import NodeLog
from phalanx.apps.node_logging import NodeStory, configure_logging, record_loss
from phalanx.apps.node_network import FILE as NETWORK_FILE
from phalanx.apps.node_network import NodeNetwork, read_network
from phalanx.apps.node_settings import (
    CURATION_TYPES,
    FOLLOWER_TYPES,
    NodeFile,
    Roster,
    load_members,
    node_identity,
)
from phalanx.apps.status import health, status_server
from phalanx.apps.web.tls import TlsError, TlsFiles
from phalanx.engine.byzantine import make_behaviour
from phalanx.engine.curation.service import CurationService, CurationSetup
from phalanx.engine.events import PeerReachability, Received, RequestChange, Started
from phalanx.engine.node import Node, Service, StoreError, message_set
from phalanx.engine.rng import RngStreams
from phalanx.net.crypto import Identity
from phalanx.net.envelope import open_frame
from phalanx.net.messages import RoundRecord
from phalanx.scenario.build import (
    annotation_attack_of,
    curation_setup,
    node_config,
    rlhf_setup,
    workload_for,
)
from phalanx.scenario.schema import Scenario, ScenarioError

if TYPE_CHECKING:
    from phalanx.engine.rlhf.service import RlhfService

TransportKind = Literal["tcp", "mpi"]


@dataclass
class NodePlan:
    """Everything a node needs, resolved and checked before its event loop starts."""

    settings: NodeFile
    scenario: Scenario
    node_id: int
    identity: Identity
    members: tuple[int, ...]
    observers: tuple[int, ...]  # lightweight nodes: no seat, members answer their requests
    keyring: dict[int, bytes]  # members' and observers' public keys
    addresses: dict[int, tuple[str, int]]  # their p2p listeners (TCP)
    data_dir: Path
    transport: TransportKind
    encrypt: bool
    exit_when_finished: bool
    linger: float
    console: bool
    members_file: Path | None = None  # read again on SIGHUP, for observers added at run time
    network: NodeNetwork | None = None  # the scenario's emulated network (real.network: emulate)
    curation: CurationSetup | None = None  # the curation service, on full and annotation nodes
    tls: TlsFiles | None = None  # the curation web app's certificate (off loopback)


def plan_node(settings: NodeFile, scenario: Scenario, roster: tuple[Roster, Roster] | None,
              transport: TransportKind, encrypt: bool, exit_when_finished: bool,
              linger: float, comm: Any = None) -> NodePlan:
    """Check the settings against the scenario and the members file; one-line errors."""
    curation = curation_plan(settings, scenario)
    follower = settings.node_type in FOLLOWER_TYPES
    if follower and comm is not None:
        raise ScenarioError(f"{settings.node_type} nodes run over TCP (every MPI rank is a "
                            f"member)")
    node_id = comm.Get_rank() if comm is not None else settings.node_id
    if node_id is None:
        raise ScenarioError("node_id is missing: give --node-id or node_id in the config")
    if settings.data_dir is None:
        raise ScenarioError("data_dir is missing: give --data-dir or data_dir in the config")
    if comm is not None:
        run_folder(str(settings.data_dir))  # a folder per rank, or a one-line error
    data_dir = Path(str(settings.data_dir).replace("{node_id}", str(node_id)))
    identity = node_identity(data_dir)
    n = scenario.n
    members, observers = roster if roster is not None else (None, {})
    if members is None:
        if comm is None:
            raise ScenarioError("--members is required over TCP (phalanx cluster up writes "
                                "one; phalanx keygen prints a node's public key)")
        # MPI: the job's ranks were started together by one operator, so its communicator
        # is trusted to carry each rank's public key once (rank 0 keeps them for the audit)
        keys = gather_ranks(comm, identity, data_dir, str(settings.data_dir), scenario)
        members = {i: (key, ("mpi", i)) for i, key in keys.items()}
    if len(members) != n:
        raise ScenarioError(f"members: {len(members)} members but the scenario has n={n}")
    if tuple(sorted(members)) != scenario.members:
        raise ScenarioError(f"members: the file lists members {sorted(members)}, the "
                            f"scenario's are {list(scenario.members)}")
    # a lightweight or annotation node only follows; a full or training node listed as an
    # observer starts following and may ask to join the members (`phalanx cluster join`)
    seats = observers if follower else {**members, **observers}
    role = "observer" if follower else "member or observer"
    if node_id not in seats:
        raise ScenarioError(f"node_id {node_id} is not among the {role}s {sorted(seats)} of "
                            f"the members file")
    if seats[node_id][0] != identity.public_key:
        raise ScenarioError(f"{data_dir / 'node.key'}: this key is not {role} {node_id}'s "
                            f"public key in the members file")
    everyone = {**members, **observers}
    # the scenario's links, routes and trees, as the launcher wrote them (apps/emulate.py)
    network = (read_network(data_dir / NETWORK_FILE)
               if scenario.real.network == "emulate" and transport == "tcp" else None)
    tls = _curation_tls(settings, data_dir) if curation is not None else None
    return NodePlan(settings, scenario, node_id, identity, tuple(sorted(members)),
                    tuple(sorted(observers)), {i: key for i, (key, _) in everyone.items()},
                    {i: address for i, (_, address) in everyone.items()}, data_dir, transport,
                    encrypt, exit_when_finished, linger, sys.stdin.isatty(), network=network,
                    curation=curation, tls=tls)


def _curation_tls(settings: NodeFile, data_dir: Path) -> TlsFiles | None:
    """The curation web app's certificate (made now if self-signed, so a bad one fails here,
    in one line, before anything starts)."""
    if not settings.enable_web_interface:
        return None
    try:
        return web_tls(settings.web_host or settings.host, data_dir, settings.tls_cert,
                       settings.tls_key)
    except TlsError as e:
        raise ScenarioError(str(e)) from None


def curation_plan(settings: NodeFile, scenario: Scenario) -> CurationSetup | None:
    """The curation service this node runs: the scenario's `curation:` section, on a full or
    an annotation node; None without the section (where `enable_curation` or an annotation
    node is an error, not ignored). A node of another type cannot follow a curation run."""
    kind = settings.node_type
    if scenario.curation is None:
        if kind == "annotation" or settings.enable_curation:
            key = "node_type annotation" if kind == "annotation" else "enable_curation"
            raise ScenarioError(f"{key}: scenario {scenario.name!r} has no curation: section "
                                f"(its tasks and assignment); add one to curate on this run")
        return None
    if kind not in CURATION_TYPES:  # it would refuse every round that carries records
        raise ScenarioError(f"node_type {kind}: scenario {scenario.name!r} curates, and every "
                            f"node of it checks the records its rounds commit; run this node "
                            f"as a full or an annotation node")
    setup = curation_setup(scenario)
    # pending records are offered again at this pace until a round commits them (a cut-off
    # node's after the cut heals): the simulated round timeout means nothing on a wall clock
    return dataclasses.replace(setup, offer_interval=min(scenario.real.round_timeout, 1.0))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RealNode:
    """One node's event loop: transport, host, status server, console and shutdown."""

    def __init__(self, plan: NodePlan, out: Console,
                 services: Sequence[type[Service]] = ()) -> None:
        """`services`: services beyond the built-in ones (engine/node/service.py), each
        owning its message kinds: every member must run the same ones."""
        self.plan, self.out = plan, out
        s = plan.scenario
        spec = next((b for b in s.byzantine if plan.node_id in b.nodes), None)
        behaviour = (make_behaviour(spec.behaviour, spec.from_round,
                                    frozenset(s.byzantine_nodes()),
                                    RngStreams(s.seed).seed("byzantine"), **spec.params)
                     if spec else None)
        attack = annotation_attack_of(s, plan.node_id)  # curation.byzantine: this node's
        if attack is not None:  # its timeline in seconds from this process's start
            origin = time.time()
            attack.at += origin
            attack.until = None if attack.until is None else attack.until + origin
            behaviour = attack
        keyring = plan.keyring
        if plan.curation is not None:
            services = (*services, CurationService.configured(plan.curation))
        rlhf = rlhf_setup(s)  # after curation: it reads the curation log
        if rlhf is not None:
            from phalanx.engine.rlhf.service import RlhfService

            services = (*services, RlhfService.configured(rlhf))
        config = dataclasses.replace(
            node_config(s, plan.node_id, s.real.round_timeout, s.real.view_timeout),
            observers=plan.observers, patience_floor=s.real.patience_floor)
        messages = message_set(services)
        self.node = Node(config, plan.identity, workload_for(s, RngStreams(s.seed)),
                         lambda frame: open_frame(frame, keyring, messages=messages), behaviour,
                         services)
        self.byzantine = spec is not None or attack is not None
        self.disk = NodeLog(plan.data_dir / "node.sqlite")
        self.story = NodeStory(plan.node_id, plan.settings.log_every,
                               base=lambda: self.node.history_base)
        self.stop_reason = "stopped"
        self.restored: tuple[int, float | None] = (0, None)  # rounds on disk at start, last loss
        self.stop = asyncio.Event()
        self.early: list[bytes] | None = []  # frames that arrive before the node has started
        self.transport = self._transport()
        every, last = s.training.eval_every, s.training.rounds - 1
        # the models the result tables evaluate (apps/results.py: rounds r with (r + 1) %
        # eval_every == 0, and the last)
        self.host = AsyncHost(self.node, self.transport, self.disk,
                              keep_model=lambda r: (r + 1) % every == 0 or r == last,
                              on_failure=self._job_failed, on_metric=self.story.metric)
        self.failure: str | None = None
        self.curation = next((c for c in self.node.extra_services
                              if isinstance(c, CurationService)), None)
        self.web: WebServer | None = None  # the curation web app's server, once serving
        self.rlhf = cast("RlhfService | None", self.node.service("rlhf"))  # an RLHF run's

    def _transport(self) -> Any:
        p = self.plan
        if p.transport == "mpi":
            from mpi4py import MPI

            from phalanx.net.mpi import MpiTransport

            return MpiTransport(MPI.COMM_WORLD, self._on_frame)
        from phalanx.net.emulation import EmulatedNetwork
        from phalanx.net.tcp import TcpTransport

        addresses = {**p.addresses, p.node_id: (p.settings.host, p.settings.p2p_port)}
        net = p.network
        if net is not None:  # the scenario's topology and links, emulated
            near = {*net.links, p.node_id}
            return EmulatedNetwork(
                p.node_id, net.next_hop, net.children, net.links, p.scenario.seed,
                self._on_frame,
                lambda on_frame: TcpTransport(
                    p.node_id, {i: a for i, a in addresses.items() if i in near}, on_frame,
                    identity=p.identity, keyring={i: k for i, k in p.keyring.items() if i in near},
                    encrypt=p.encrypt, on_peer_state=self._on_peer_state))
        return TcpTransport(p.node_id, addresses, self._on_frame, identity=p.identity,
                            keyring=p.keyring, encrypt=p.encrypt,
                            on_peer_state=self._on_peer_state)

    def _job_failed(self, error: BaseException) -> None:
        """A compute job raised: the node cannot go on without its result. Say so in one
        line and stop gracefully (log flushed, results written)."""
        self.failure = f"node {self.node.id}: a compute job failed: {type(error).__name__}: {error}"
        self.out.print(self.failure, highlight=False, soft_wrap=True, markup=False)
        self._stop(self.failure)

    def _stop(self, reason: str) -> None:
        """Stop the node gracefully, saying why in the log's last line."""
        if not self.stop.is_set():
            self.stop_reason = reason
        self.stop.set()

    def _on_peer_state(self, peer: int, up: bool) -> None:
        """The transport's word on a peer's link, for the failure detector (before the node
        started there is no round to speed up: silence in the first rounds tells it)."""
        if self.early is None and not self.stop.is_set():  # links close after the log does
            self.host.feed(PeerReachability(peer, up))

    def _on_frame(self, frame: bytes) -> None:
        if self.early is not None:
            self.early.append(frame)
        else:
            self.host.feed(Received(frame))

    # ---- status and membership --------------------------------------------------------------

    @property
    def peers(self) -> list[int]:
        """The current members but us (members join and leave: see `request_change`)."""
        return self.host.peers

    def reload_members(self) -> None:
        """SIGHUP: read the members file again and admit the observers added to it (a new
        machine that may then ask to join) without a restart. Who the members are is the
        consensus's business, not the file's; a key changed under a known id is refused."""
        path = self.plan.members_file
        if path is None or self.plan.transport != "tcp":
            self.out.print("reload: no members file to read (MPI ranks are fixed)",
                           highlight=False)
            return
        try:
            members, observers = load_members(path)
        except ScenarioError as err:
            self.out.print(f"reload: {err}; keeping the members file read before",
                           highlight=False)
            return
        added = []
        for peer, (key, address) in sorted({**members, **observers}.items()):
            known = self.plan.keyring.get(peer)
            if known is not None:
                if known != key:
                    self.out.print(f"reload: node {peer} has another key in {path}; keys are "
                                   f"not replaced at run time (restart to change one)",
                                   highlight=False)
                continue
            self.plan.keyring[peer] = key  # the opener reads this dict: frames verify now
            self.plan.addresses[peer] = address
            self.transport.add_peer(peer, key, address)
            self.node.admit_observer(peer)
            added.append(peer)
        self.out.print(f"reload: {path}: admitted observers {added}" if added else
                       f"reload: {path}: nothing new", highlight=False)

    def request_change(self, op: str) -> str | None:
        """Ask the members to let us join or leave; why not, or None once asked. Our request
        goes to every member until a committed round applies it (engine/consensus/membership)."""
        problem = self.node.change_problem(op)
        if problem is None:
            self.host.feed(RequestChange(op))
        return problem

    def peer_states(self) -> dict[int, bool]:
        states = getattr(self.transport, "peer_states", None)
        return dict(states()) if callable(states) else {p: True for p in self.peers}

    def health(self) -> dict[str, Any]:
        """The node's verdict (apps/status.py's health) and the seconds since its last commit."""
        node, host, s = self.node, self.host, self.plan.scenario
        up = self.peer_states()
        since = time.time() - (host.last_commit or host.started)
        verdict = health(node.finished, since, 3 * s.real.view_timeout,
                         sum(up.get(p, False) for p in self.peers), node.quorum - 1)
        limit = self.plan.settings.max_memory_mb
        if limit is not None and _rss_mb() > limit:
            verdict["reasons"].append(f"peak memory {_rss_mb():,.0f} MB over max_memory_mb")
            if verdict["status"] == "ok":
                verdict["status"] = "degraded"
        if verdict["status"] == "ok" and not all(up.get(p, False) for p in self.peers):
            verdict = {"status": "degraded", "reasons": ["some peers are unreachable"]}
        return {**verdict, "seconds_since_commit": since}

    def status(self) -> dict[str, Any]:
        node, host = self.node, self.host
        up = self.peer_states()
        verdict = {k: v for k, v in self.health().items() if k != "seconds_since_commit"}
        heard_ago = getattr(self.transport, "heard_ago", None)  # TCP only
        heard = heard_ago() if callable(heard_ago) else {}
        return {
            "node_id": node.id, "node_type": self.plan.settings.node_type,
            "byzantine": self.byzantine, "round": node.round, "view": node.view,
            "model_hash": node.model_hash.hex(), "finished": node.finished,
            "member": not node.follower, "members": list(node.members), "epoch": node.epoch,
            "peers": [{"id": p, "up": up.get(p, False), "heard_seconds_ago": heard.get(p),
                       "address": "{}:{}".format(*self.plan.addresses[p]),
                       "reputation": node.reputation.get(p, 0.0),
                       "excluded": p in node.excluded} for p in self.peers],
            "peers_up": sum(up.get(p, False) for p in self.peers),
            "reputation": {str(p): r for p, r in node.reputation.items()},
            "excluded": sorted(node.excluded), "rejections": dict(node.rejections),
            "log_starts_at": node.history_base,  # above 0: joined from a peer's checkpoint
            "training": self._training(),
            "health": verdict, "uptime_seconds": time.time() - host.started,
            **({"curation": self._curation()} if self.curation is not None else {}),
            "peak_memory_mb": _rss_mb(),
            "transport": {"kind": self.plan.transport,
                          "bytes_sent": getattr(self.transport, "bytes_sent", 0),
                          "refusals": dict(getattr(self.transport, "refusals", {}))},
        }

    def _curation(self) -> dict[str, Any]:
        """The committed curation snapshot and what the desk refused, by reason (records
        forwarded by peers count in `rejections` too, as "curation_<reason>")."""
        desk = self.curation.desk  # type: ignore[union-attr]
        return {"round": desk.round, "root": desk.root.hex(), "committed": desk.committed,
                "pending": desk.pending, "tasks": len(desk.tasks),
                "refusals": dict(sorted(desk.counts.items())),
                "web": self.web.url if self.web is not None else None}

    def _training(self) -> dict[str, Any]:
        """Training progress, counting the rounds this node restored from its store as well
        as those this process committed (a restarted node does not forget its past)."""
        restored, stored_loss = self.restored
        return {"rounds": self.plan.scenario.training.rounds,
                "rounds_committed": self.node.round, "rounds_restored": restored,
                "rounds_committed_this_run": self.host.commit_count,
                "last_train_loss": (self.host.last_train_loss if self.host.commit_count
                                    else stored_loss),
                "last_train_loss_from": "this run" if self.host.commit_count else
                ("store" if stored_loss is not None else None)}

    # ---- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop, f"stopped by {sig.name}")
        loop.add_signal_handler(signal.SIGHUP, self.reload_members)
        server = self._status_server()
        serving = asyncio.create_task(server.serve()) if server is not None else None
        announce = (loop.create_task(self._announce_web(self.web))
                    if self.web is not None else None)
        self._check_bootstrap()
        await self.transport.start()
        await self._wait_for_peers()
        if self._start() and self.plan.console:
            loop.add_reader(sys.stdin.fileno(), self._console_line)
            self.out.print(f"node {self.node.id} running; type help for commands",
                           highlight=False)
        watchers = [asyncio.create_task(w) for w in self._watchers()]
        await self.stop.wait()
        for watcher in [*watchers, *([announce] if announce else [])]:
            watcher.cancel()
        await self._shutdown(server)
        self.story.stopped(self.stop_reason, self.node.round, self.node.model_hash.hex())
        if serving is not None:
            await serving

    def _status_server(self) -> Any:
        web = self.plan.settings
        before, after = raise_fd_limit()  # headroom for p2p links beside the HTTP cap
        if after > before:
            self.out.print(f"open files limit raised from {before} to {after}", highlight=False)
        if not web.enable_web_interface:
            return None
        if self.curation is not None:
            return self._curation_server()
        return status_server(self.status, web.web_host or web.host, web.web_port,
                             self.request_change, HttpLimits(
                                 web.http_max_connections, web.http_header_timeout,
                                 web.http_body_timeout, web.http_max_body_bytes))

    def _curation_server(self) -> Any:
        web, plan = self.plan.settings, self.plan
        port = NodePort(self.host, self.curation,  # type: ignore[arg-type]
                        self.health, lambda: self.early is None)
        self.web = serve_curation(
            port, self.status, self.request_change, host=web.web_host or web.host,
            web_port=web.web_port, data_dir=plan.data_dir, tls=plan.tls,
            limits=HttpLimits(web.http_max_connections, web.http_header_timeout,
                              web.http_body_timeout, web.http_max_body_bytes))
        return self.web.server

    async def _announce_web(self, web: WebServer) -> None:
        """Say where the curation web app answers, once it listens (and which certificate a
        browser will be shown, when the node made it)."""
        while not web.server.started:
            await asyncio.sleep(0.05)
        line = f"node {self.node.id}: curation web app at {web.url}"
        if web.tls is not None:
            line += f" (TLS certificate SHA-256 {web.tls.fingerprint})"
        self.out.print(line, highlight=False, soft_wrap=True, markup=False)

    def _check_bootstrap(self) -> None:
        listed = {f"{host}:{port}" for host, port in self.plan.addresses.values()}
        for peer in self.plan.settings.bootstrap_peers:
            if peer not in listed:  # members are dialed at the addresses the file lists
                self.out.print(f"bootstrap peer {peer} is not an address in the members file; "
                               f"members are dialed at their listed addresses", highlight=False)

    async def _wait_for_peers(self) -> None:
        """A restarted node finds its peers up; a first start waits for them, not forever."""
        wait = self.plan.scenario.real.start_wait
        try:
            if self.plan.transport == "tcp":  # for the members, not for observers
                await self.transport.wait_for_peers(wait, peers=self.peers)
            else:
                await self.transport.wait_for_peers(wait)
        except TimeoutError:
            up = sum(self.peer_states().values())
            self.story.waited(up, len(self.peers), wait)
            self.out.print(f"{up} of {len(self.peers)} peers reachable after {wait:g} s; "
                           f"starting with them", highlight=False)

    def _start(self) -> bool:
        """Start the node on its disk, then hand it what arrived meanwhile; False (and the
        node stopping, with one line said) when its disk holds a record it cannot read."""
        try:
            disk = self.disk.view()
            self.host.feed(Started(disk))  # read as the node asks: not every round
        except StoreError as err:
            self.failure = f"node {self.node.id}: {self.plan.data_dir / 'node.sqlite'}: {err}"
            self.out.print(self.failure, highlight=False, soft_wrap=True, markup=False)
            self._stop(self.failure)
            return False
        self._tell_start(disk)
        backlog, self.early = self.early or [], None
        for frame in backlog:
            self.host.feed(Received(frame))
        return True

    def _tell_start(self, disk: Mapping[str, Any]) -> None:
        """The log's first line: who we are, where we listen and store, what the disk held."""
        node, p = self.node, self.plan
        rounds = node.round
        last = disk.get(f"log/{rounds - 1}")
        loss = record_loss(last, node.open) if isinstance(last, RoundRecord) else None
        self.restored = (rounds, loss)
        listen = (f"MPI rank {p.node_id}" if p.transport == "mpi" else
                  "{}:{}".format(*self.transport.address))
        self.story.started(role=p.settings.node_type, members=node.members, listen=listen,
                           store=self.disk.path, rounds=rounds, base=node.history_base,
                           model_hash=node.model_hash.hex(), last_loss=loss)

    async def _watch_peers(self, every: float = 0.5) -> None:
        """Tell the log when a peer's link goes down or comes back, and what the transport
        refused, as the transport sees them."""
        connected = getattr(self.transport, "connected_peers", None)
        while True:
            await asyncio.sleep(every)
            if callable(connected):
                linked, up = connected(), self.peer_states()
                self.story.peer_states({p: p in linked and up.get(p, False)
                                        for p in self.peers})
            self.story.refusals(getattr(self.transport, "refusals", {}))
            self.story.tick()

    def _watchers(self) -> list[Coroutine[Any, Any, None]]:
        watchers = [self._write_results_when_finished(), self._watch_peers()]
        if self.plan.scenario.compression.adaptive is not None:
            measure = getattr(self.transport, "link_conditions", None)
            if measure is None:  # MPI: no measurement, so every gradient at the largest ratio
                self.out.print("this transport does not measure its links: adaptive top-k "
                               "sends at max_ratio", highlight=False)
            else:
                watchers.append(self.host.report_link(measure))
        return watchers

    async def _write_results_when_finished(self) -> None:
        await self.host.finished.wait()
        self.write_results()
        if self.plan.exit_when_finished:
            await asyncio.sleep(self.plan.linger)  # serve laggards' sync requests a while
            self._stop("finished (--exit-when-finished)")

    def _console_line(self) -> None:
        line = sys.stdin.readline()
        command = line.strip().lower()
        if not line or command in ("quit", "exit"):
            self._stop(f"{command or 'end of input'} on the console")
            return
        if command in ("join", "leave"):
            problem = self.request_change(command)
            self.out.print(f"cannot {command}: {problem}" if problem else
                           f"asked the members to let node {self.node.id} {command}; "
                           f"it takes effect from the round after the one that commits it",
                           highlight=False)
            return
        if command == "test":  # the workload's model is the compute thread's: evaluate there
            asyncio.get_running_loop().create_task(self._console_test(line))
            return
        self._console_print(answer(line, self.status(), lambda: {}))

    async def _console_test(self, line: str) -> None:
        workload, params = self.node.workload, self.node.params  # this round's model
        metrics = await self.host.offload(lambda: workload.evaluate(params))
        self._console_print(answer(line, self.status(), lambda: metrics))

    def _console_print(self, reply: str) -> None:
        self.out.print(reply, highlight=False, soft_wrap=True, markup=False)

    def write_results(self) -> None:
        d = self.plan.data_dir
        np.savez(d / "models.tmp.npz", **self.host.kept_models())
        os.replace(d / "models.tmp.npz", d / "models.npz")
        # with the host's commit rows and rejections, written row by row
        self.host.write_results(d / "result.json", {
            "node": self.node.id, "byzantine": self.byzantine,
            "finished": self.node.finished, "model_hash": self.node.model_hash.hex(),
            "members": list(self.node.members),
            "epochs": [[e.round, list(e.members)] for e in self.node.epochs],
            "transport_bytes_sent": getattr(self.transport, "bytes_sent", 0),
            "queue_drops": getattr(self.transport, "dropped_full", 0),
            "refusals": dict(getattr(self.transport, "refusals", {})),
            "numerics": numerics_report(),
            # an RLHF run: the preference set the node trains on (apps/rlhf_report.py)
            **({"preferences": self.rlhf.preferences.identity()}
               if self.rlhf is not None and self.rlhf.preferences is not None else {}),
            # an emulated network: what it did
            **({"emulation": self.transport.stats()}
               if hasattr(self.transport, "next_hop") else {})})

    async def _shutdown(self, server: Any) -> None:
        if self.plan.console:
            asyncio.get_running_loop().remove_reader(sys.stdin.fileno())
        self.host.cancel_timers()
        self.host.close()
        self.write_results()
        self.disk.close()  # every write was its own transaction: nothing is pending
        await self.transport.close()
        if self.web is not None:
            self.web.close()
        elif server is not None:
            server.should_exit = True


def _configure_logging(plan: NodePlan) -> None:
    """The node's log goes to stderr (a cluster's launcher keeps it in node-<id>/node.log),
    or to `log_file`. Over MPI every rank logs to `<data_dir>/node.log` (or `log_file`) and
    only rank 0 to stderr too: mpiexec's terminal shows one node's progress, not n copies."""
    s = plan.settings
    file = Path(str(s.log_file).replace("{node_id}", str(plan.node_id))) if s.log_file else None
    stream = sys.stderr
    if plan.transport == "mpi":
        file = file or plan.data_dir / "node.log"
        stream = sys.stderr if plan.node_id == 0 else None
    configure_logging(s.log_level, s.log_json, stream, file, int(s.log_max_mb * 1024 * 1024))


def serve(plan: NodePlan, out: Console) -> str | None:
    """Run the node until it is stopped; why it failed (already printed), or None."""
    # one thread steadies shared machines (raise with max_cpu_threads); pinned numerics keep one
    torch.set_num_threads(threads(plan.settings.max_cpu_threads))
    if plan.settings.enable_rlhf:
        out.print("enable_rlhf: ignored; a node runs the RLHF service when the scenario's "
                  "workload is rlhf", highlight=False)

    _configure_logging(plan)

    async def main() -> str | None:
        node = RealNode(plan, out)
        await node.run()
        return node.failure

    return asyncio.run(main())


def main() -> None:
    """`python -m phalanx.apps.node --real ...`: the same command as `phalanx node`."""
    from phalanx.apps.cli_help import Typer
    from phalanx.apps.node_command import node

    app = Typer(add_completion=False, pretty_exceptions_enable=False)  # help as `phalanx node`'s
    app.command()(node)
    app(prog_name="python -m phalanx.apps.node")


if __name__ == "__main__":
    main()
