"""`phalanx web`: serve the curation web app from a data folder with no cluster (one desk
that commits its own records: a solo operator's or a test's node), and manage its accounts.
A cluster node serves the same app with `phalanx node --real --web-port`."""

from __future__ import annotations

import asyncio
import getpass
import sqlite3
import sys
from pathlib import Path
from typing import Annotated

import typer

from phalanx.apps.cli_help import Typer
from phalanx.apps.terminal import fail, out

web_app = Typer(no_args_is_help=True,
                help="The curation web app: serve it from a data folder, manage accounts.")
admin_app = Typer(no_args_is_help=True, help="Accounts of a data folder's web app.")
web_app.add_typer(admin_app, name="admin")

DataDir = Annotated[Path, typer.Option("--data", help="the data folder (records, tasks, "
                                       "accounts, certificate)")]


@web_app.command("serve")
def serve(
    data: DataDir = Path("phalanx-web"),
    tasks: Annotated[Path | None, typer.Option(
        help="a JSONL or CSV task file to add (kept in the data folder from then on)")] = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: any free one)")] = 8443,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate (with --tls-key)")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key")] = None,
    tls_self_signed: Annotated[bool, typer.Option(
        "--tls-self-signed", help="make (once) and use a self-signed certificate kept in the "
                                  "data folder; prints its SHA-256 fingerprint")] = False,
    commit_seconds: Annotated[float, typer.Option(
        help="seconds between the desk's own commits (there is no cluster)")] = 1.0,
    closed_signup: Annotated[bool, typer.Option(
        "--closed-signup", help="no sign-up over the web (admins make accounts)")] = False,
) -> None:
    """Serve the web app over one desk with no cluster. Plain http on localhost only;
    anywhere else give a certificate or --tls-self-signed (browsers sign annotations with
    WebCrypto, which needs https)."""
    from phalanx.apps.web.serve import LocalServe, serve_local
    from phalanx.apps.web.settings import WebSettings
    from phalanx.apps.web.tls import TlsError, tls_files
    from phalanx.engine.curation.io import TaskImportError
    from phalanx.engine.curation.tasks import TaskError

    if not 0 <= port <= 65535:
        raise fail(f"--port must be in 0..65535 (got {port})")
    if not commit_seconds > 0:
        raise fail(f"--commit-seconds must be > 0 (got {commit_seconds})")
    try:
        tls = tls_files(tls_cert, tls_key, self_signed_in=data if tls_self_signed else None,
                        host=host)
    except TlsError as e:
        raise fail(str(e)) from None
    except OSError as e:
        raise fail(f"--data {data}: {e.strerror or e}") from None
    if tls is not None:
        made = "made and kept in the data folder" if tls.created else "in use"
        out.print(f"TLS certificate {made}; SHA-256 fingerprint:\n  {tls.fingerprint}",
                  highlight=False, soft_wrap=True)
    options = LocalServe(data, host, port, tls, WebSettings(
        https=tls is not None, signup_open=not closed_signup), commit_seconds, tasks)

    def ready(url: str) -> None:
        out.print(f"serving {url} (API docs at {url}/docs); one desk, no cluster: it commits "
                  f"its own records every {commit_seconds:g} s", highlight=False, soft_wrap=True)
        sys.stdout.flush()

    try:
        asyncio.run(serve_local(options, ready))
    except (TaskImportError, TaskError) as e:
        raise fail(f"--tasks {tasks}: {e}") from None
    except OSError as e:
        raise fail(f"cannot serve: {e.strerror or e}") from None
    except sqlite3.DatabaseError:
        raise fail(f"--data {data}: a database in it is not one phalanx wrote") from None


@admin_app.command("create")
def create_admin(
    username: Annotated[str, typer.Argument(help="the new admin's username")],
    data: DataDir = Path("phalanx-web"),
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="read the password from standard input's first line instead "
                                 "of asking")] = False,
) -> None:
    """Make an admin account (on the node's machine: the web's sign-up makes annotators
    only). Run it once before the first `phalanx web serve`, or any time to add one."""
    from phalanx.apps.web.accounts import AccountError, Accounts
    from phalanx.apps.web.serve import ACCOUNTS
    from phalanx.apps.web.settings import WebSettings

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise fail("the two passwords differ")
    try:
        data.mkdir(parents=True, exist_ok=True)
        accounts = Accounts(data / ACCOUNTS, hasher=WebSettings().hasher())
        accounts.create(username, password, "admin")
    except AccountError as e:
        raise fail(str(e)) from None
    except OSError as e:
        raise fail(f"--data {data}: {e.strerror or e}") from None
    except sqlite3.DatabaseError:
        raise fail(f"--data {data}: {ACCOUNTS} is not an accounts database") from None
    out.print(f"admin {username} created in {data / ACCOUNTS}", highlight=False)
