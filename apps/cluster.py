"""`phalanx cluster up|down|status`: a local cluster of real node processes from a scenario.

`up` gives every member a data folder with its key (created once), writes `members.json`
(ids, public keys, addresses) and each node's `node.json`, and starts one
`python -m phalanx.apps.node --real` process per member, its output in `node-<i>/node.log`
(stdout and stderr, where the node writes its log: apps/node_logging.py).
Byzantine members of the scenario run its attack for real. `up` on a folder whose cluster is
partly down restarts only the missing nodes, on their old data: the way back after a crash.
`status` asks each node's HTTP endpoint; `down` sends SIGTERM (then SIGKILL after a grace
period). The scenario's observers (`nodes.observers`) start as training nodes outside the
membership; `join` asks one to join the members and `leave` asks a member to leave, through
the node's own endpoint (`POST /membership`). `add` brings a new machine: a key, an entry
under the observers of `members.json`, SIGHUP to the running nodes (they admit it without a
restart), and the node itself, which follows until it is asked to join.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phalanx.apps.emulate import emulates, write_networks
from phalanx.apps.node_settings import load_members, node_identity, write_members
from phalanx.scenario.schema import Scenario, ScenarioError

CLUSTER_FILE = "cluster.json"


class ClusterError(RuntimeError):
    """A cluster operation that could not be done; the message is one line."""


def free_ports(count: int, host: str) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def alive(pid: int) -> bool:
    """A running process (a zombie, killed but not yet reaped by its parent, is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@dataclass(frozen=True)
class NodeProc:
    id: int
    pid: int
    p2p_port: int
    web_port: int
    folder: Path
    status_host: str = "127.0.0.1"

    @property
    def status_url(self) -> str:
        return f"http://{self.status_host}:{self.web_port}/status"


@dataclass(frozen=True)
class Placement:
    """Where each node runs, when not all on the host's loopback: its p2p address, the address
    this machine reaches its status endpoint at, and a command prefix that puts the process
    there (e.g. `ip netns exec NAME`)."""

    hosts: dict[int, str]
    status_hosts: dict[int, str]
    prefixes: dict[int, list[str]]
    p2p_port: int = 7000
    web_port: int = 8080


def check_runnable(scenario: Scenario) -> None:
    if scenario.faults or scenario.nemesis:
        raise ScenarioError(f"{scenario.name}: a real cluster runs without scheduled faults "
                            "(faults and nemesis are injected by the simulator; kill or "
                            "partition real nodes from outside, and change the membership "
                            "with phalanx cluster join/leave)")


def _spawn(folder: Path, node: int, extra: list[str], prefix: list[str]) -> int:
    node_dir = folder / f"node-{node}"
    cmd = [*prefix, sys.executable, "-m", "phalanx.apps.node", "--real",
           "--scenario", str(folder / "scenario.yaml"), "--config", str(node_dir / "node.json"),
           "--members", str(folder / "members.json"), *extra]
    with open(node_dir / "node.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    return proc.pid


def read_cluster(folder: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((folder / CLUSTER_FILE).read_text())
    except FileNotFoundError:
        raise ClusterError(f"{folder}: no cluster here (phalanx cluster up makes one)") from None
    except (OSError, json.JSONDecodeError) as err:
        raise ClusterError(f"{folder / CLUSTER_FILE}: unreadable ({err})") from None
    return data


def _write_cluster(folder: Path, data: dict[str, Any]) -> None:
    tmp = folder / (CLUSTER_FILE + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, folder / CLUSTER_FILE)


def serve_on(folder: Path) -> None:
    """From their next start, the cluster's nodes serve on after their last round instead of
    exiting (`--exit-when-finished` dropped): peers stay up while one node restarts."""
    data = read_cluster(folder)
    data["extra"] = [x for x in data["extra"] if x != "--exit-when-finished"]
    _write_cluster(folder, data)


def nodes_of(data: dict[str, Any]) -> list[NodeProc]:
    return [NodeProc(n["id"], n["pid"], n["p2p_port"], n["web_port"], Path(n["folder"]),
                     n["status_host"]) for n in data["nodes"]]


def cluster_up(scenario: Scenario, folder: Path, encrypt: bool = False,
               exit_when_finished: bool = False, only: int | None = None,
               placement: Placement | None = None, lightweight: int = 0,
               settings: dict[str, Any] | None = None) -> list[NodeProc]:
    """Start the cluster's nodes that are not running (all of them the first time): the
    scenario's nodes (members, and observers that may join), then `lightweight` followers
    (ids count, count + 1, ...). `settings`: node.json keys for every node on a first start
    (e.g. `log_every`, `log_json`); edit `node-<i>/node.json` to change them later."""
    check_runnable(scenario)
    if lightweight and scenario.curation is not None:
        raise ScenarioError(f"{scenario.name}: lightweight followers cannot follow a curation "
                            f"run (its rounds carry records only curation nodes check); the "
                            f"scenario's annotation nodes follow it")
    if lightweight and emulates(scenario):
        raise ScenarioError("real.network: emulate: lightweight followers are outside the "
                            "scenario's topology; use real.network: host to add them")
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    extra = (["--encrypt"] if encrypt else []) + (
        ["--exit-when-finished"] if exit_when_finished else [])
    if (folder / CLUSTER_FILE).exists():
        data = read_cluster(folder)
        if data["scenario_name"] != scenario.name:
            raise ClusterError(f"{folder} holds a cluster of scenario "
                               f"{data['scenario_name']!r}, not {scenario.name!r}")
        extra = data["extra"]
    else:
        data = _lay_out(scenario, folder, extra, placement, lightweight, settings or {})
    for entry in data["nodes"]:
        if (only is None or entry["id"] == only) and not alive(entry["pid"]):
            entry["pid"] = _spawn(folder, entry["id"], extra, entry["prefix"])
    _write_cluster(folder, data)
    return nodes_of(data)


def _lay_out(scenario: Scenario, folder: Path, extra: list[str], placement: Placement | None,
             lightweight: int, common: dict[str, Any]) -> dict[str, Any]:
    """Keys, members.json and each node's node.json, for a first start."""
    n, host = scenario.nodes.count, scenario.real.host
    total = n + lightweight
    members, annotation = set(scenario.members), set(scenario.annotation_nodes)
    if placement is not None:  # a host each: the same ports everywhere
        hosts = [placement.hosts[i] for i in range(total)]
        p2p, web = [placement.p2p_port] * total, [placement.web_port] * total
    else:
        hosts = [host] * total
        ports = ([scenario.real.base_port + i for i in range(2 * total)]
                 if scenario.real.base_port else free_ports(2 * total, host))
        p2p, web = ports[:total], ports[total:]
    (folder / "scenario.yaml").write_text(scenario.resolved_yaml())
    if emulates(scenario):  # each node's links, routes and trees (apps/emulate.py)
        write_networks(scenario, {i: folder / f"node-{i}" for i in range(n)})
    roster = {i: (node_identity(folder / f"node-{i}").public_key, (hosts[i], p2p[i]))
              for i in range(total)}
    write_members(folder / "members.json", {i: roster[i] for i in sorted(members)},
                  {i: roster[i] for i in range(total) if i not in members})
    nodes = []
    for i in range(total):
        node_dir = folder / f"node-{i}"
        # a curation run's nodes all curate: its observers that may join are full nodes
        kind = ("annotation" if i in annotation else "full" if i in members
                or (i < n and scenario.curation is not None)
                else "training" if i < n else "lightweight")
        settings = {**common, "node_id": i, "node_type": kind,
                    "p2p_port": p2p[i], "web_port": web[i],
                    "host": hosts[i], "data_dir": str(node_dir),
                    "bootstrap_peers": [f"{hosts[j]}:{p2p[j]}" for j in sorted(members)
                                        if j != i],
                    "enable_web_interface": True}
        if placement is not None:
            settings["web_host"] = "0.0.0.0"  # reached from outside its namespace
        (node_dir / "node.json").write_text(json.dumps(settings, indent=2) + "\n")
        nodes.append({"id": i, "pid": 0, "p2p_port": p2p[i], "web_port": web[i],
                      "folder": str(node_dir),
                      "status_host": placement.status_hosts[i] if placement else host,
                      "prefix": placement.prefixes[i] if placement else []})
    return {"scenario_name": scenario.name, "extra": extra, "nodes": nodes}


def node_status(node: NodeProc, timeout: float = 1.0) -> dict[str, Any] | None:
    """The node's /status, or None when it does not answer."""
    try:
        with urllib.request.urlopen(node.status_url, timeout=timeout) as response:
            data: dict[str, Any] = json.loads(response.read())
            return data
    except (urllib.error.URLError, OSError, json.JSONDecodeError):
        return None


def cluster_status(folder: Path) -> list[dict[str, Any]]:
    data = read_cluster(folder)
    rows = []
    for node in nodes_of(data):
        running = alive(node.pid)
        status = node_status(node) if running else None
        rows.append({"node": node.id, "pid": node.pid, "running": running,
                     "answering": status is not None, "status": status})
    return rows


def cluster_add(folder: Path) -> NodeProc:
    """A new node next to a running cluster, listed as an observer (see the module's doc)."""
    folder = folder.resolve()
    data = read_cluster(folder)
    nodes = nodes_of(data)
    if any(n.status_host != "127.0.0.1" or entry["prefix"]
           for n, entry in zip(nodes, data["nodes"], strict=True)):
        raise ClusterError(f"{folder}: add works on loopback clusters only")
    new = max(n.id for n in nodes) + 1
    node_dir = folder / f"node-{new}"
    template = json.loads((folder / f"node-{nodes[0].id}" / "node.json").read_text())
    p2p, web = free_ports(2, template["host"])
    members, observers = load_members(folder / "members.json")
    observers[new] = (node_identity(node_dir).public_key, (template["host"], p2p))
    write_members(folder / "members.json", members, observers)
    settings = {**template, "node_id": new, "node_type": "training", "p2p_port": p2p,
                "web_port": web, "data_dir": str(node_dir),
                "bootstrap_peers": [f"{a[0]}:{a[1]}" for _, a in members.values()]}
    (node_dir / "node.json").write_text(json.dumps(settings, indent=2) + "\n")
    for node in nodes:  # each running node reads the file again and admits the newcomer
        _when_serving(node, timeout=60.0)
        if alive(node.pid):
            os.killpg(node.pid, signal.SIGHUP)
    entry = {"id": new, "pid": _spawn(folder, new, data["extra"], []), "p2p_port": p2p,
             "web_port": web, "folder": str(node_dir), "status_host": "127.0.0.1", "prefix": []}
    data["nodes"].append(entry)
    _write_cluster(folder, data)
    return nodes_of(data)[-1]


def _when_serving(node: NodeProc, timeout: float) -> None:
    """Wait until a starting node answers on its endpoint: by then it handles SIGHUP (before,
    the signal's default action would end it). A node that is down is not waited for."""
    deadline = time.time() + timeout
    while alive(node.pid) and node_status(node) is None:
        if time.time() > deadline:
            raise ClusterError(f"node {node.id} does not answer at {node.status_url}; add "
                               f"the new node once every node is up")
        time.sleep(0.2)


def cluster_change(folder: Path, node: int, op: str, timeout: float = 5.0) -> dict[str, Any]:
    """Ask `node` to join or leave the members (its own endpoint relays the request); the
    node's answer, or ClusterError naming why not."""
    found = [n for n in nodes_of(read_cluster(folder)) if n.id == node]
    if not found:
        raise ClusterError(f"{folder}: no node {node} in this cluster")
    target = found[0]
    if not alive(target.pid):
        raise ClusterError(f"node {node} is not running (phalanx cluster up --node {node})")
    url = target.status_url.removesuffix("/status") + "/membership"
    request = urllib.request.Request(url, data=json.dumps({"change": op}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as err:
        try:
            detail = json.loads(err.read()).get("detail", err.reason)
        except (json.JSONDecodeError, AttributeError):
            detail = err.reason
        raise ClusterError(f"node {node}: {detail}") from None
    except (urllib.error.URLError, OSError) as err:
        raise ClusterError(f"node {node} does not answer at {url} ({err})") from None


def cluster_down(folder: Path, grace: float = 15.0, only: int | None = None) -> list[int]:
    """SIGTERM the running nodes, SIGKILL those still up after `grace` seconds; returns the ids
    that had to be killed."""
    data = read_cluster(folder)
    targets = [n for n in nodes_of(data) if (only is None or n.id == only) and alive(n.pid)]
    for node in targets:
        os.killpg(node.pid, signal.SIGTERM)  # each node leads its own session
    deadline = time.time() + grace
    while time.time() < deadline and any(alive(n.pid) for n in targets):
        _reap(targets)
        time.sleep(0.05)
    killed = [n.id for n in targets if alive(n.pid)]
    for node in targets:
        if alive(node.pid):
            os.killpg(node.pid, signal.SIGKILL)
    _reap(targets)
    return killed


def _reap(nodes: list[NodeProc]) -> None:
    """Collect the nodes that exited, when this process started them (else not our child)."""
    for node in nodes:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(node.pid, os.WNOHANG)
