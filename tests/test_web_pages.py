"""The UI's pages and static files as a browser gets them from a real server (no browser
needed): every page renders with its script and a strict CSP, static files come from a fixed
list with ETags, and no request path reaches the file system."""

from __future__ import annotations

import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from browserkit import served
from fastapi import FastAPI

from phalanx.apps.web import pages

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "apps" / "web"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_open = urllib.request.build_opener(_NoRedirect).open


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    try:
        with _open(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    app = FastAPI()
    app.include_router(pages.router)
    with served(app) as url:
        yield url


@pytest.mark.parametrize("page", pages.PAGES, ids=lambda p: p.path)
def test_every_page_renders_its_shell_under_a_strict_csp(base: str, page: pages.Page) -> None:
    status, headers, body = _get(base + page.path)
    assert status == 200 and headers["content-type"].startswith("text/html")
    html = body.decode()
    assert f'<script type="module" src="/static/js/pages/{page.script}.js"></script>' in html
    assert f"js/pages/{page.script}.js" in pages.STATIC  # the script it names exists
    assert "<script>" not in html and " style=" not in html  # nothing the CSP would block
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe" not in csp


def test_home_sends_to_the_dashboard(base: str) -> None:
    status, headers, _ = _get(base + "/")
    assert status == 303 and headers["location"] == "/dashboard"


def test_static_files_are_typed_and_revalidated_by_etag(base: str) -> None:
    status, headers, body = _get(base + "/static/js/record.js")
    assert status == 200 and headers["content-type"] == "text/javascript; charset=utf-8"
    assert body == (WEB / "static" / "js" / "record.js").read_bytes()
    assert headers["x-content-type-options"] == "nosniff"
    again, _, empty = _get(base + "/static/js/record.js", {"If-None-Match": headers["etag"]})
    assert (again, empty) == (304, b"")
    assert _get(base + "/static/css/app.css")[1]["content-type"] == "text/css; charset=utf-8"


@pytest.mark.parametrize("name", ["nope.js", "../pages.py", "..%2fpages.py", "%2e%2e/pages.py",
                                  "js/../../pages.py", "templates/base.html", "css",
                                  "/etc/passwd", "js/pages/../../../__init__.py"])
def test_no_request_path_reaches_the_file_system(base: str, name: str) -> None:
    status, _, body = _get(f"{base}/static/{name}")
    assert status == 404 and body == b"no such file"


def test_every_ui_file_ships_in_a_wheel() -> None:
    """pyproject's package-data globs cover every template and static file (a file they miss
    is left out of a non-editable install, and its page breaks only there)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    globs = config["package-data"]["phalanx.apps.web"]
    files = [p.relative_to(WEB) for d in ("templates", "static") for p in (WEB / d).rglob("*")
             if p.is_file()]
    assert files
    # setuptools' globs: `*` stays within one folder
    missed = [str(f) for f in files
              if not any(len(f.parts) == g.count("/") + 1 and f.match(g) for g in globs)]
    assert not missed, f"add to package-data: {missed}"
