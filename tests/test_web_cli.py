"""`phalanx web`: admin accounts made on the node's machine, TLS (refused plain http off
localhost; a self-signed certificate kept and fingerprinted; a real https server a client
reaches only when it trusts that certificate), and one-line errors for bad input."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
import pytest
from typer.testing import CliRunner

from phalanx.apps.cli import app
from phalanx.apps.web.accounts import Accounts
from phalanx.apps.web.tls import TlsError, tls_files

RUN = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "200"})


def _cli(*args: object, stdin: str | None = None) -> tuple[int, str]:
    result = RUN.invoke(app, [str(a) for a in args], input=stdin)
    return result.exit_code, result.output


def test_admin_create_makes_an_admin_once_and_refuses_bad_input(tmp_path: Path) -> None:
    code, out = _cli("web", "admin", "create", "root", "--data", tmp_path,
                     "--password-stdin", stdin="a long passphrase\n")
    assert code == 0, out
    admin = Accounts(tmp_path / "web.sqlite").by_name("root")
    assert admin is not None and admin.role == "admin"
    code, out = _cli("web", "admin", "create", "root", "--data", tmp_path,
                     "--password-stdin", stdin="a long passphrase\n")
    assert code == 2 and "error: username: already taken" in out and "Traceback" not in out
    code, out = _cli("web", "admin", "create", "other", "--data", tmp_path,
                     "--password-stdin", stdin="short\n")
    assert code == 2 and "password: 10..256 characters" in out and "short" not in out
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "web.sqlite").write_bytes(b"not a database at all" * 100)
    code, out = _cli("web", "admin", "create", "root", "--data", tmp_path / "bad",
                     "--password-stdin", stdin="a long passphrase\n")
    assert code == 2 and "not an accounts database" in out


def test_serve_refuses_plain_http_off_localhost_and_bad_task_files(tmp_path: Path) -> None:
    code, out = _cli("web", "serve", "--data", tmp_path, "--host", "0.0.0.0")
    assert code == 2 and "plain http is served on localhost only" in out
    code, out = _cli("web", "serve", "--data", tmp_path, "--tls-cert", tmp_path / "c.pem")
    assert code == 2 and "--tls-cert and --tls-key go together" in out
    bad = tmp_path / "tasks.jsonl"
    bad.write_text('{"id": "a", "kind": "poem", "text": "x"}\n')
    code, out = _cli("web", "serve", "--data", tmp_path / "d", "--tasks", bad, "--port", "0")
    assert code == 2 and "row 1" in out and "Traceback" not in out


def test_a_self_signed_certificate_is_made_once_kept_private_and_fingerprinted(
        tmp_path: Path) -> None:
    first = tls_files(None, None, self_signed_in=tmp_path, host="node.example")
    again = tls_files(None, None, self_signed_in=tmp_path, host="node.example")
    assert first.created and not again.created
    assert first.fingerprint == again.fingerprint
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", first.fingerprint)
    assert stat.S_IMODE(os.stat(first.key).st_mode) == 0o600
    (tmp_path / "junk.pem").write_text("hello")
    with pytest.raises(TlsError, match="not a PEM certificate"):
        tls_files(tmp_path / "junk.pem", tmp_path / "junk.pem", self_signed_in=None, host="x")


def test_https_server_with_its_self_signed_certificate(tmp_path: Path) -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "phalanx.apps.cli", "web", "serve", "--data", str(tmp_path),
         "--port", "0", "--tls-self-signed"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "300"})
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = server.stdout.readline()  # type: ignore[union-attr]
            lines.append(line)
            if line.startswith("serving ") or not line:
                break
        printed = "".join(lines)
        url = re.search(r"serving (https://\S+) ", printed)
        assert url, printed
        fingerprint = re.search(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", printed)
        assert fingerprint and fingerprint.group(0) == tls_files(
            None, None, self_signed_in=tmp_path, host="127.0.0.1").fingerprint
        with pytest.raises(httpx.ConnectError):  # not trusted by default
            httpx.get(url.group(1) + "/api/me")
        trusted = httpx.get(url.group(1) + "/api/me", verify=str(tmp_path / "web-cert.pem"))
        assert trusted.status_code == 401 and trusted.json()["detail"]
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
