"""The `phalanx node` command (also `python -m phalanx.apps.node`): one production node. Kept
apart from the rest of the CLI so a node process loads what a node needs, never the simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from phalanx.apps.terminal import fail, out


def node(
    real: Annotated[bool, typer.Option("--real", help="run a real node (required: simulated "
                                       "nodes run with `phalanx run`)")] = False,
    scenario: Annotated[Path | None, typer.Option(
        help="the scenario that defines the training job and its members")] = None,
    config: Annotated[Path | None, typer.Option(
        help="node.json with the original keys (node_id, p2p_port, web_port, bootstrap_peers, "
             "enable_curation, enable_rlhf, enable_web_interface, max_memory_mb, "
             "max_cpu_threads); options below override it")] = None,
    node_type: Annotated[str | None, typer.Option(
        help="full | training | annotation | lightweight")] = None,
    node_id: Annotated[int | None, typer.Option(help="this node's member id")] = None,
    p2p_port: Annotated[int | None, typer.Option(help="TCP port for peers")] = None,
    web_port: Annotated[int | None, typer.Option(
        help="HTTP port: the node's status, and on full and annotation nodes of a scenario "
             "with a curation: section the annotation web app too")] = None,
    bootstrap: Annotated[str | None, typer.Option(
        help="comma-separated host:port of peers to reach first")] = None,
    members: Annotated[Path | None, typer.Option(
        help="members.json: every member's id, public key and address")] = None,
    data_dir: Annotated[Path | None, typer.Option(
        help="folder for the key, the SQLite log and results ({node_id} is replaced)")] = None,
    transport: Annotated[str, typer.Option(help="tcp | mpi (mpiexec -n N ...)")] = "tcp",
    encrypt: Annotated[bool, typer.Option(help="encrypt links (TCP)")] = False,
    no_web: Annotated[bool, typer.Option("--no-web", help="no HTTP endpoint")] = False,
    tls_cert: Annotated[Path | None, typer.Option(
        help="PEM certificate for the web app (with --tls-key); off loopback, without one, "
             "the node makes a self-signed one in its data folder")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert")] = None,
    exit_when_finished: Annotated[bool, typer.Option(
        help="exit `linger` seconds after the last round instead of serving on")] = False,
    linger: Annotated[float, typer.Option(help="seconds to keep serving peers after the last "
                                          "round, with --exit-when-finished")] = 5.0,
    log_level: Annotated[str | None, typer.Option(
        help="debug | info | warning | error (default info)")] = None,
    log_json: Annotated[bool | None, typer.Option(
        "--log-json", help="log JSON lines instead of text")] = None,
    log_file: Annotated[Path | None, typer.Option(
        help="log to this file ({node_id} is replaced; rotated at log_max_mb) instead of "
             "stderr")] = None,
    log_every: Annotated[int | None, typer.Option(
        help="one log line per this many committed rounds (default 100)")] = None,
) -> None:
    """Run one production node: TCP (or MPI), its SQLite log, HTTP status, console."""
    if not real:
        raise fail("phalanx node starts one real node process: add --real (with --scenario, "
                   "--node-id and --members; see `phalanx node --help`). To simulate the "
                   "scenario's nodes instead: `phalanx run SCENARIO`; for a local cluster of "
                   "real nodes: `phalanx cluster up SCENARIO`")
    if transport not in ("tcp", "mpi"):
        raise fail(f"--transport must be tcp or mpi, got {transport!r}")
    # loaded here, not at import: `phalanx --help` must not pay for torch and FastAPI
    from phalanx.apps.node import plan_node, serve
    from phalanx.apps.node_settings import load_members, load_node_file
    from phalanx.scenario.schema import ScenarioError, load_scenario

    try:
        settings = load_node_file(config, {
            "node_type": node_type, "node_id": node_id, "p2p_port": p2p_port,
            "web_port": web_port, "data_dir": data_dir,
            "bootstrap_peers": bootstrap.split(",") if bootstrap else None,
            "enable_web_interface": False if no_web else None,
            "tls_cert": tls_cert, "tls_key": tls_key,
            "log_level": log_level, "log_json": log_json, "log_file": log_file,
            "log_every": log_every})
        if scenario is None:
            raise ScenarioError("--scenario is required: it defines the training job")
        loaded = load_scenario(scenario)
        comm = None
        if transport == "mpi":
            from mpi4py import MPI

            comm = MPI.COMM_WORLD
        plan = plan_node(settings, loaded, load_members(members) if members else None,
                         transport, encrypt, exit_when_finished, linger,  # type: ignore[arg-type]
                         comm)
        plan.members_file = members
    except ScenarioError as e:
        raise fail(str(e)) from None
    try:
        failure = serve(plan, out)
    except OSError as e:  # a port in use, a data folder we may not write
        raise fail(f"node {plan.node_id}: {e.strerror or e}") from None
    if failure is not None:
        raise typer.Exit(1)
