"""`phalanx serve SCENARIO`: the scenario's simulated cluster in real time beside the curation
web app (apps/sim_serve.py). Loads the simulator and the web app only when it runs."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from phalanx.apps.terminal import fail, out


def serve(
    scenario: Annotated[Path, typer.Argument(help="a scenario YAML file with a curation: "
                                              "section")],
    node: Annotated[int | None, typer.Option(
        help="the simulated curation node the web app serves (default: the first annotation "
             "node)")] = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: any free one)")] = 8080,
    speed: Annotated[float, typer.Option(
        help="simulated seconds per wall-clock second")] = 1.0,
    seed: Annotated[int | None, typer.Option(help="override the scenario's seed")] = None,
    data: Annotated[Path | None, typer.Option(
        "--data", help="folder for the web app's accounts (default: a new temporary folder; "
                       "make an admin in it with `phalanx web admin create NAME --data DIR`)")
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate (with --tls-key)")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key")] = None,
) -> None:
    """Run a scenario's simulated cluster in real time and serve the annotation web app on
    one of its curation nodes: annotate next to the scenario's simulated annotators,
    Byzantine nodes and faults. A simulation, not a network: no real node takes part."""
    from phalanx.apps.sim_serve import LiveWorld, ServeOptions, chosen_node, serve_simulation
    from phalanx.apps.web.settings import WebSettings
    from phalanx.apps.web.tls import TlsError, is_loopback, tls_files
    from phalanx.scenario.schema import ScenarioError, load_scenario

    if not 0 <= port <= 65535:
        raise fail(f"--port must be in 0..65535 (got {port})")
    folder = data or Path(tempfile.mkdtemp(prefix="phalanx-serve-"))
    try:
        loaded = load_scenario(scenario, seed)
        live = LiveWorld(loaded, speed)
        served = chosen_node(loaded, node)
        tls = tls_files(tls_cert, tls_key, host=host,
                        self_signed_in=None if is_loopback(host) else folder)
    except (ScenarioError, TlsError) as e:
        raise fail(str(e)) from None
    except OSError as e:
        raise fail(f"--data {folder}: {e.strerror or e}") from None
    options = ServeOptions(served, host, port, folder, speed, tls,
                           WebSettings(https=tls is not None))
    kind = "annotation node" if served in loaded.annotation_nodes else "member"
    crowd = loaded.curation.crowd if loaded.curation else None

    def ready(url: str) -> None:
        out.print(f"SIMULATION of scenario {loaded.name!r} (seed {loaded.seed}) in real time "
                  f"(x{speed:g}): {len(loaded.members)} members, "
                  f"{len(loaded.annotation_nodes)} annotation nodes"
                  + (", simulated annotators at work" if crowd is not None else "")
                  + ". No real network: every node is simulated.", highlight=False,
                  soft_wrap=True)
        out.print(f"open {url} to annotate at simulated {kind} {served} "
                  f"(accounts in {folder}); Ctrl-C stops", highlight=False, soft_wrap=True)
        if tls is not None:
            out.print(f"TLS certificate SHA-256 fingerprint: {tls.fingerprint}",
                      highlight=False, soft_wrap=True)
        sys.stdout.flush()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve_simulation(live, options, ready, stop)

    try:
        asyncio.run(main())
    except OSError as e:
        raise fail(f"cannot serve: {e.strerror or e}") from None
    except sqlite3.DatabaseError:
        raise fail(f"--data {folder}: a database in it is not one phalanx wrote") from None
