"""The deployment files (deploy/): Docker does not run here, so they are checked with what
parses them: compose.yaml with PyYAML, each node.json with the node's own loader, the
Dockerfile line by line. The key/members init script and the image's health check command
really run; `docker compose config -q` runs where a compose client is installed."""

from __future__ import annotations

import http.server
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from phalanx.apps.node import plan_node
from phalanx.apps.node_settings import (
    MEMBER_TYPES,
    NodeFile,
    load_members,
    load_node_file,
    node_identity,
    parse_address,
)
from phalanx.scenario.schema import load_scenario

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
INIT_SCRIPT = DEPLOY / "init_members.py"
MEMBERS = ("full", "training-1", "training-2", "training-3")
ANNOTATION = ("annotation-1", "annotation-2")
NODE_TYPES = {"full": "full", "training-1": "training", "training-2": "training",
              "training-3": "training", "annotation-1": "annotation",
              "annotation-2": "annotation"}


# ---- compose.yaml ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, container path) of each short-syntax volume entry."""
    return [(entry.split(":")[0], entry.split(":")[1]) for entry in service.get("volumes", [])]


def is_bind(source: str) -> bool:
    return source.startswith((".", "/"))


def resolve(service: dict[str, Any], path: str) -> tuple[str, str, str]:
    """What a container path is: ("bind", repo file, "") or ("volume", name, path inside)."""
    target = PurePosixPath(path)
    for source, mount in mounts(service):
        mount_path = PurePosixPath(mount)
        if target == mount_path or mount_path in target.parents:
            inside = "" if target == mount_path else str(target.relative_to(mount_path))
            if is_bind(source):
                return "bind", str((DEPLOY / source / inside).resolve()), ""
            return "volume", source, inside
    raise AssertionError(f"{path} is on no mount of the service")


def option(args: list[str], name: str) -> str:
    assert args.count(name) == 1, f"{name} appears {args.count(name)} times in {args}"
    return args[args.index(name) + 1]


def init_members(compose: dict[str, Any]) -> list[tuple[int, str, str]]:
    """The init service's --member ID DATA_DIR HOST:PORT triples."""
    args = compose["services"]["init"]["command"]
    return [(int(args[i + 1]), args[i + 2], args[i + 3])
            for i, arg in enumerate(args) if arg == "--member"]


def node_config(compose: dict[str, Any], name: str) -> NodeFile:
    service = compose["services"][name]
    kind, path, _ = resolve(service, option(service["command"], "--config"))
    assert kind == "bind"
    return load_node_file(Path(path), {})


def test_services_and_profiles(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"init", *MEMBERS, *ANNOTATION}
    for name in ("init", *MEMBERS):  # started by a plain `docker compose up`
        assert "profiles" not in services[name], name
    for name in ANNOTATION:  # only with --profile curation
        assert services[name]["profiles"] == ["curation"], name
        assert services[name]["restart"] == "no"  # refused in this build: no restart loop


def test_every_volume_and_network_is_declared_and_used(compose: dict[str, Any]) -> None:
    services = compose["services"]
    declared_volumes, declared_networks = set(compose["volumes"]), set(compose["networks"])
    used_volumes = {source for s in services.values() for source, _ in mounts(s)
                    if not is_bind(source)}
    used_networks = {n for s in services.values() for n in s.get("networks", [])}
    assert used_volumes == declared_volumes
    assert used_networks == declared_networks
    assert services["init"]["network_mode"] == "none"  # it needs no network at all


def test_bind_mounts_exist_in_the_repo(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for entry in service.get("volumes", []):
            source = entry.split(":")[0]
            if is_bind(source):
                assert (DEPLOY / source).is_file(), f"{name}: {source} is missing"
                assert entry.endswith(":ro"), f"{name}: {source} should be mounted read-only"


def test_published_ports_are_distinct(compose: dict[str, Any]) -> None:
    published = []
    for name in (*MEMBERS, *ANNOTATION):
        for entry in compose["services"][name]["ports"]:
            host_ip, host_port, container_port = entry.split(":")
            assert host_ip == "127.0.0.1"  # the status endpoint has no auth: loopback only
            assert int(container_port) == node_config(compose, name).web_port
            published.append(int(host_port))
    assert len(published) == len(set(published)) == len(MEMBERS) + len(ANNOTATION)


def test_node_commands_refer_to_files_the_deployment_provides(compose: dict[str, Any]) -> None:
    services = compose["services"]
    init_args = services["init"]["command"]
    members_file = resolve(services["init"], option(init_args, "--members"))
    assert members_file == ("volume", "members", "members.json")
    for name in (*MEMBERS, *ANNOTATION):
        service = services[name]
        args = service["command"]
        scenario = resolve(service, option(args, "--scenario"))
        assert scenario[0] == "bind" and Path(scenario[1]).is_file(), name
        config = resolve(service, option(args, "--config"))
        assert config[0] == "bind" and Path(config[1]).is_file(), name
        assert Path(config[1]).name == f"node-{name}.json"
        assert resolve(service, option(args, "--members")) == members_file, name
        # the node's data_dir is its own named volume, the one init put the key in
        data = resolve(service, str(node_config(compose, name).data_dir))
        assert data == ("volume", f"{name}-data", ""), name


def test_members_match_node_configs_and_scenario(compose: dict[str, Any]) -> None:
    services = compose["services"]
    configs = {name: node_config(compose, name) for name in (*MEMBERS, *ANNOTATION)}
    for name, config in configs.items():
        assert config.node_type == NODE_TYPES[name]
        assert config.enable_web_interface  # the health check reads /health
    ids = [configs[name].node_id for name in MEMBERS]
    assert ids == [0, 1, 2, 3]
    assert {configs[name].node_id for name in ANNOTATION}.isdisjoint(ids)
    by_id = {node_id: name for name, node_id in zip(MEMBERS, ids, strict=True)}
    triples = init_members(compose)
    assert sorted(node_id for node_id, _, _ in triples) == ids
    for node_id, data_dir, address in triples:
        name = by_id[node_id]
        host, port = parse_address(address, "init")
        assert (host, port) == (name, configs[name].p2p_port)  # reached by service name
        assert resolve(services["init"], data_dir) == ("volume", f"{name}-data", "")
        expected_peers = {f"{other}:{configs[other].p2p_port}" for other in MEMBERS
                          if other != name}
        assert set(configs[name].bootstrap_peers) == expected_peers
        assert configs[name].host == "0.0.0.0"  # listen on the container's interfaces
    scenarios = {resolve(services[name], option(services[name]["command"], "--scenario"))[1]
                 for name in MEMBERS}
    assert len(scenarios) == 1  # one training job
    scenario = load_scenario(Path(scenarios.pop()))
    assert scenario.nodes.count == len(MEMBERS) and scenario.f == 1
    assert not scenario.faults and not scenario.nemesis and not scenario.byzantine


def test_start_order_health_and_shutdown(compose: dict[str, Any]) -> None:
    services = compose["services"]
    init = services["init"]
    assert init["restart"] == "no" and init["healthcheck"] == {"disable": True}
    assert init["user"] == "root"
    for name in (*MEMBERS, *ANNOTATION):
        service = services[name]
        assert service["healthcheck"]["test"][0] == "CMD"
        assert service["stop_signal"] == "SIGTERM" and service["stop_grace_period"]
        for dependency in service["depends_on"]:
            assert dependency in services and dependency != name
    for name in MEMBERS:
        depends = services[name]["depends_on"]
        assert depends["init"] == {"condition": "service_completed_successfully"}
        assert services[name]["restart"] == "unless-stopped"
    for name in ANNOTATION:
        assert services[name]["depends_on"] == {"full": {"condition": "service_healthy"}}


def test_member_configs_pass_the_nodes_own_checks(compose: dict[str, Any],
                                                  tmp_path: Path) -> None:
    """The deployment's node.json files, the members.json that init writes and the scenario
    pass every check a node makes before it starts (keys, ids, member count)."""
    specs = [["--member", str(node_id), str(tmp_path / f"{node_id}"), address]
             for node_id, _, address in init_members(compose)]
    run_init(tmp_path / "members.json", *[arg for spec in specs for arg in spec])
    roster = load_members(tmp_path / "members.json")
    service = compose["services"]["full"]
    scenario = load_scenario(Path(resolve(service, option(service["command"],
                                                          "--scenario"))[1]))
    for name in MEMBERS:
        config = node_config(compose, name)
        settings = load_node_file(None, {**config.model_dump(),
                                         "data_dir": tmp_path / str(config.node_id)})
        plan = plan_node(settings, scenario, roster, "tcp", False, False, 1.0)
        assert plan.node_id == config.node_id
        assert plan.settings.node_type in MEMBER_TYPES


def test_annotation_nodes_are_refused_without_a_curation_scenario(
        compose: dict[str, Any]) -> None:
    """What the compose comment promises: over quickstart.yaml (no `curation:` section)
    `phalanx node` turns an annotation node down with one line."""
    service = compose["services"]["annotation-1"]
    config = resolve(service, option(service["command"], "--config"))[1]
    scenario = resolve(service, option(service["command"], "--scenario"))[1]
    done = subprocess.run(
        [sys.executable, "-m", "phalanx.apps.cli", "node", "--real", "--scenario", scenario,
         "--config", config, "--members", str(DEPLOY / "members.example.json")],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    message = (done.stdout + done.stderr).strip()
    assert "no curation: section" in message and "Traceback" not in message


def compose_client() -> list[str] | None:
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        try:
            done = subprocess.run([*command, "version"], capture_output=True, timeout=60,
                                  check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return command
    return None


def test_docker_compose_config_accepts_it() -> None:
    command = compose_client()
    if command is None:
        pytest.skip("no compose client here (neither `docker compose` nor `docker-compose`)")
    for profile in ([], ["--profile", "curation"]):
        done = subprocess.run([*command, *profile, "config", "-q"], cwd=DEPLOY,
                              capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0 and "daemon" in done.stderr.lower():
            pytest.skip(f"{shlex.join(command)} config needs a Docker daemon here")
        assert done.returncode == 0, done.stderr


# ---- node-*.json and members.example.json ---------------------------------------------------

@pytest.mark.parametrize("path", sorted(DEPLOY.glob("node-*.json")), ids=lambda p: p.name)
def test_node_files_load(path: Path) -> None:
    settings = load_node_file(path, {})
    raw = json.loads(path.read_text())
    for key in ("node_id", "node_type", "p2p_port", "web_port", "bootstrap_peers",
                "enable_curation", "enable_rlhf", "enable_web_interface", "max_memory_mb",
                "max_cpu_threads", "data_dir"):
        assert key in raw, f"{path.name} lacks {key}"  # the original keys, spelled out
    assert settings.node_type == NODE_TYPES[path.stem.removeprefix("node-")]
    assert settings.enable_curation == (settings.node_type not in MEMBER_TYPES)


def test_members_example_loads(compose: dict[str, Any]) -> None:
    members, _ = load_members(DEPLOY / "members.example.json")
    expected = {node_id: parse_address(address, "init")
                for node_id, _, address in init_members(compose)}
    assert {i: address for i, (_, address) in members.items()} == expected


# ---- Dockerfile -----------------------------------------------------------------------------

KNOWN = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
         "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per logical line: comments dropped, continuations joined."""
    lines, current = [], ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        instruction, _, args = current.partition(" ")
        lines.append((instruction, args.strip()))
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return lines


def only(dockerfile: list[tuple[str, str]], instruction: str) -> str:
    found = [args for inst, args in dockerfile if inst == instruction]
    assert len(found) == 1, f"{instruction} appears {len(found)} times"
    return found[0]


def health_command(dockerfile: list[tuple[str, str]]) -> list[str]:
    args = only(dockerfile, "HEALTHCHECK")
    flags, _, command = args.partition(" CMD ")
    assert "--start-period=" in flags and "--interval=" in flags
    parsed: list[str] = json.loads(command)  # exec form: no shell in between
    return parsed


def test_dockerfile_instructions(dockerfile: list[tuple[str, str]]) -> None:
    assert {inst for inst, _ in dockerfile} <= KNOWN
    assert dockerfile[0] == ("FROM", "python:3.11-slim")
    assert json.loads(only(dockerfile, "ENTRYPOINT")) == ["phalanx", "node", "--real"]
    assert only(dockerfile, "STOPSIGNAL") == "SIGTERM"
    user = only(dockerfile, "USER")
    assert user not in ("root", "0")
    assert [i for i, _ in dockerfile].index("USER") > max(
        i for i, (inst, _) in enumerate(dockerfile) if inst == "RUN")  # installs ran as root
    assert json.loads(only(dockerfile, "VOLUME")) == ["/data"]


def test_dockerfile_matches_the_deployment(dockerfile: list[tuple[str, str]],
                                           compose: dict[str, Any]) -> None:
    configs = [node_config(compose, name) for name in (*MEMBERS, *ANNOTATION)]
    exposed = {int(port) for port in only(dockerfile, "EXPOSE").split()}
    assert exposed == {c.p2p_port for c in configs} | {c.web_port for c in configs}
    assert {str(c.data_dir) for c in configs} == {"/data"}
    # the init step hands the volumes to the image's user, by number
    useradd = next(args for inst, args in dockerfile if inst == "RUN" and "useradd" in args)
    uid = useradd.split("--uid")[1].split()[0]
    assert option(compose["services"]["init"]["command"], "--chown") == f"{uid}:{uid}"
    assert "--user-group" in useradd and only(dockerfile, "USER") in useradd.split()
    # compose restates the image's health check
    for name in (*MEMBERS, *ANNOTATION):
        test = compose["services"][name]["healthcheck"]["test"]
        assert test == ["CMD", *health_command(dockerfile)]
    # the init script the compose file runs is in the image
    script = compose["services"]["init"]["entrypoint"][-1]
    copies = {args.split()[-1]: args.split()[0] for inst, args in dockerfile if inst == "COPY"}
    assert (ROOT / copies[script]).resolve() == INIT_SCRIPT


def test_dockerfile_installs_cpu_torch_then_the_project(
        dockerfile: list[tuple[str, str]]) -> None:
    runs = [args for inst, args in dockerfile if inst == "RUN"]
    torch_at = next(i for i, r in enumerate(runs) if "pip install torch" in r)
    words = runs[torch_at].split()
    assert words[words.index("--index-url") + 1] == "https://download.pytorch.org/whl/cpu"
    pin = next(w for w in words if w.startswith("torch=="))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_spec = next(Requirement(r) for r in project["dependencies"]
                      if Requirement(r).name == "torch").specifier
    # +cpu is the wheel's local version; the project install then keeps it
    assert Version(pin.removeprefix("torch==") + "+cpu") in torch_spec
    project_at = next(i for i, r in enumerate(runs) if "pip install /src" in r)
    assert project_at > torch_at


def test_dockerfile_copies_every_package(dockerfile: list[tuple[str, str]]) -> None:
    sources = {src for inst, args in dockerfile if inst == "COPY" for src in args.split()[:-1]}
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", config["project"]["readme"], "__init__.py"}
    for package in config["tool"]["setuptools"]["packages"]:
        parts = package.split(".")[1:]
        if parts:
            needed.add(parts[0])
    for pattern in config["tool"]["setuptools"]["package-data"]["phalanx"]:
        needed.add(pattern.split("/")[0])
    assert needed <= sources, f"not copied into the image: {sorted(needed - sources)}"


class _Health(http.server.BaseHTTPRequestHandler):
    code = 200

    def do_GET(self) -> None:
        self.send_response(self.code if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[int, type[_Health]]]:
    handler = type("Handler", (_Health,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


def test_health_check_command_runs(dockerfile: list[tuple[str, str]],
                                   health_server: tuple[int, type[_Health]]) -> None:
    """The image's check passes on 200, fails on 503 (stalled) and on no answer."""
    port, handler = health_server
    command = health_command(dockerfile)
    assert command[:2] == ["python", "-c"] and "urllib" in command[2]
    argv = [sys.executable, "-c", command[2]]

    def check(web_port: int) -> int:
        env = {**os.environ, "PHALANX_WEB_PORT": str(web_port)}
        return subprocess.run(argv, env=env, capture_output=True, timeout=30,
                              check=False).returncode

    assert check(port) == 0
    handler.code = 503
    assert check(port) != 0
    handler.code = 200
    assert check(port) == 0
    env_default = next(args for inst, args in dockerfile if inst == "ENV")
    assert "PHALANX_WEB_PORT=8080" in env_default.split()


# ---- deploy/init_members.py -----------------------------------------------------------------

def run_init(members: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, str(INIT_SCRIPT), "--members", str(members), *args],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done


def test_init_members_writes_keys_and_members(tmp_path: Path) -> None:
    dirs = [tmp_path / "volumes" / name for name in MEMBERS]
    args = [arg for i, (name, d) in enumerate(zip(MEMBERS, dirs, strict=True))
            for arg in ("--member", str(i), str(d), f"{name}:7000")]
    members_path = tmp_path / "shared" / "members.json"
    owner = f"{os.getuid()}:{os.getgid()}"
    run_init(members_path, "--chown", owner, *args)
    members, _ = load_members(members_path)
    assert sorted(members) == [0, 1, 2, 3]
    for i, (name, d) in enumerate(zip(MEMBERS, dirs, strict=True)):
        key, address = members[i]
        assert key == node_identity(d).public_key  # the key the node will load
        assert address == (name, 7000)
        assert (d / "node.key").stat().st_mode & 0o077 == 0  # owner-only
        assert (d / "node.key").stat().st_uid == os.getuid()
    first = members_path.read_text()
    run_init(members_path, *args)  # again (every `compose up`): same keys, same file
    assert members_path.read_text() == first
    assert not list(members_path.parent.glob("*.tmp"))


@pytest.mark.parametrize("bad, expected", [
    (["--member", "0", "A", "a:7000", "--member", "0", "B", "b:7000"], "given twice"),
    (["--member", "0", "A", "a:7000", "--member", "2", "B", "b:7000"], "0..n-1"),
    (["--member", "0", "A", "a-7000"], "not host:port"),
    (["--member", "x", "A", "a:7000"], "is a number"),
    (["--chown", "phalanx", "--member", "0", "A", "a:7000"], "UID:GID"),
    ([], "no --member"),
])
def test_init_members_refuses_bad_input(tmp_path: Path, bad: list[str], expected: str) -> None:
    args = [str(tmp_path / a) if a in ("A", "B") else a for a in bad]
    members_path = tmp_path / "members.json"
    done = subprocess.run([sys.executable, str(INIT_SCRIPT), "--members", str(members_path),
                           *args], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], lines
    assert not members_path.exists()
