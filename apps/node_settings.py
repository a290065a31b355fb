"""What one real node is: its settings (the original system's `node.json` keys, overridden by
the command line), its key file, and the members it trusts.

A node's identity is an Ed25519 key in `<data_dir>/node.key`, created on first start. The
members file (`members.json`, written by `phalanx cluster up`, or by an operator from each
member's `phalanx keygen`) lists every consensus member's id, public key and address:
the keyring that authenticates peers and signatures.
"""

from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator

from phalanx.net.crypto import PUBLIC_KEY_SIZE, Identity
from phalanx.scenario.explain import invalid
from phalanx.scenario.schema import ScenarioError, Strict

Port = Annotated[int, Field(ge=0, le=65535)]
LogLevel = Literal["debug", "info", "warning", "error"]
NodeType = Literal["full", "training", "annotation", "lightweight"]
# the node types that hold a consensus seat: they train, vote and keep the model
MEMBER_TYPES: tuple[NodeType, ...] = ("full", "training")
# follow the chain by verified records and checkpoints, without a seat
FOLLOWER_TYPES: tuple[NodeType, ...] = ("lightweight", "annotation")
# run the scenario's curation service (and serve its web app on web_port)
CURATION_TYPES: tuple[NodeType, ...] = ("full", "annotation")


class NodeFile(Strict):
    """The original system's node.json keys, plus where the node keeps its state."""

    node_id: Annotated[int, Field(ge=0)] | None = None
    node_type: NodeType = "full"
    p2p_port: Port = 7000
    web_port: Port = 8080
    # "host:port" of peers to reach first; the members file lists every member's address, so
    # these are checked against it (peer exchange spreads addresses learned later)
    bootstrap_peers: list[str] = Field(default_factory=list)
    enable_curation: bool = False
    enable_rlhf: bool = False
    enable_web_interface: bool = True
    max_memory_mb: Annotated[float, Field(gt=0)] | None = None
    max_cpu_threads: Annotated[int, Field(ge=1)] | None = None
    data_dir: Path | None = None
    host: str = "127.0.0.1"  # the p2p listener's address
    web_host: str | None = None  # the status endpoint's (None: `host`)
    # a curation node's web app is served over TLS off loopback: the operator's certificate
    # and key, or (neither given) a self-signed pair the node keeps in its data folder
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # the node's log (apps/node_logging.py): lines at this level and above, as text or JSON
    # lines, to stderr, or to `log_file` ({node_id} replaced) rotated at `log_max_mb`
    log_level: LogLevel = "info"
    log_json: bool = False
    log_file: Path | None = None
    log_max_mb: Annotated[float, Field(gt=0)] = 20.0
    log_every: Annotated[int, Field(ge=1)] = 100  # one line per this many committed rounds
    # the status endpoint's limits (apps/http_guard.py): connections held at once (kept well
    # below the open-file limit, so p2p links always find a descriptor), the seconds a
    # request's headers and then its body may take to arrive, the largest body it takes
    http_max_connections: Annotated[int, Field(ge=1)] = 256
    http_header_timeout: Annotated[float, Field(gt=0, le=3600)] = 10.0
    http_body_timeout: Annotated[float, Field(gt=0, le=3600)] = 30.0
    http_max_body_bytes: Annotated[int, Field(ge=1, le=64 * 1024 * 1024)] = 64 * 1024

    @field_validator("http_max_connections")
    @classmethod
    def _fd_headroom(cls, value: int) -> int:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if hard != resource.RLIM_INFINITY and value > hard // 2:
            raise ValueError(f"at most {hard // 2}: half of the {hard} files this process may "
                             f"open, so p2p links and the store keep the rest")
        return value


class Member(Strict):
    id: Annotated[int, Field(ge=0)]
    public_key: str  # hex
    address: str  # host:port of its p2p listener


class MembersFile(Strict):
    members: list[Member]
    # lightweight nodes: no consensus seat; members answer their requests for records
    observers: list[Member] = Field(default_factory=list)


Roster = dict[int, tuple[bytes, tuple[str, int]]]  # id -> (public key, p2p address)


def parse_address(text: str, where: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ScenarioError(f"{where}: {text!r} is not host:port")
    return host, int(port)


def load_node_file(path: Path | None, overrides: dict[str, Any]) -> NodeFile:
    """node.json (when given) with the command line's options (those not None) on top."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise ScenarioError(f"{path}: cannot read ({err.strerror})") from None
        except json.JSONDecodeError as err:
            raise ScenarioError(f"{path}: not JSON ({err.msg} at line {err.lineno})") from None
        if not isinstance(data, dict):
            raise ScenarioError(f"{path}: a node config is a JSON object")
    data = {**data, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        settings = NodeFile.model_validate(data)
    except ValidationError as err:
        raise invalid(err, str(path or "node options"), NodeFile) from None
    for i, peer in enumerate(settings.bootstrap_peers):
        parse_address(peer, f"bootstrap_peers.{i}")
    return settings


def load_members(path: Path) -> tuple[Roster, Roster]:
    """The members and the observers: id -> (public key, p2p address)."""
    try:
        parsed = MembersFile.model_validate_json(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ScenarioError(f"{path}: cannot read ({err.strerror})") from None
    except ValidationError as err:
        raise invalid(err, str(path), MembersFile) from None
    members = _roster(path, "members", parsed.members, set())
    return members, _roster(path, "observers", parsed.observers, set(members))


def _roster(path: Path, section: str, entries: list[Member], taken: set[int]) -> Roster:
    roster: Roster = {}
    for i, m in enumerate(entries):
        try:
            key = bytes.fromhex(m.public_key)
        except ValueError:
            key = b""
        if len(key) != PUBLIC_KEY_SIZE:
            raise ScenarioError(f"{path}: {section}.{i}.public_key is not a "
                                f"{2 * PUBLIC_KEY_SIZE}-character hex key")
        if m.id in roster or m.id in taken:
            raise ScenarioError(f"{path}: {section}.{i}.id {m.id} appears twice")
        roster[m.id] = (key, parse_address(m.address, f"{path}: {section}.{i}.address"))
    return roster


def write_members(path: Path, members: Roster, observers: Roster | None = None) -> None:
    def rows(roster: Roster) -> list[dict[str, Any]]:
        return [{"id": i, "public_key": key.hex(), "address": f"{host}:{port}"}
                for i, (key, (host, port)) in sorted(roster.items())]

    data = {"members": rows(members), "observers": rows(observers or {})}
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def node_identity(data_dir: Path) -> Identity:
    """The node's key, created (readable by its owner only) on first start."""
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        return Identity.load_or_create(data_dir / "node.key")
    except ValueError as err:
        raise ScenarioError(str(err)) from None
