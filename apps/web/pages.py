"""The web UI's pages and static files: an `APIRouter` the app factory includes.

Pages are server-rendered shells (Jinja2) whose own script module fills them from the REST
API, so every number a page shows comes from the same typed endpoints API clients use and a
page holds no data of its own. The scripts sign annotations in the browser (static/js/record.js,
static/js/keys.js), so the node never holds an annotator's private key.

Static files are served from a fixed list made when the module loads (no path from a request
ever reaches the file system), revalidated by ETag. Pages carry a strict Content-Security-Policy:
scripts and styles from this origin only, no inline code, no framing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

__all__ = ["PAGES", "Page", "router"]

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
TEMPLATES = Jinja2Templates(directory=HERE / "templates")

CONTENT_TYPES: Final = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
PAGE_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True, slots=True)
class Page:
    path: str
    template: str
    title: str
    script: str  # static/js/pages/<script>.js fills the page
    nav: str  # the menu entry shown as current


PAGES: Final = (
    Page("/login", "login.html", "Sign in", "login", "auth"),
    Page("/signup", "signup.html", "Create your account", "signup", "auth"),
    Page("/dashboard", "dashboard.html", "Dashboard", "dashboard", "dashboard"),
    Page("/annotate", "annotate.html", "Annotate", "annotate", "annotate"),
    Page("/leaderboard", "leaderboard.html", "Leaderboard", "leaderboard", "leaderboard"),
    Page("/admin", "admin/overview.html", "Admin · Overview", "admin_overview", "admin"),
    Page("/admin/tasks", "admin/tasks.html", "Admin · Tasks and labels", "admin_tasks", "admin"),
    Page("/admin/annotators", "admin/annotators.html", "Admin · Annotators",
         "admin_annotators", "admin"),
)


@dataclass(frozen=True, slots=True)
class StaticFile:
    content: bytes
    content_type: str
    etag: str


def _static_files() -> dict[str, StaticFile]:
    files = {}
    for path in sorted(STATIC_DIR.rglob("*")):
        content_type = CONTENT_TYPES.get(path.suffix)
        if content_type and path.is_file():
            content = path.read_bytes()
            etag = '"' + hashlib.sha256(content).hexdigest()[:16] + '"'
            files[path.relative_to(STATIC_DIR).as_posix()] = StaticFile(content, content_type,
                                                                        etag)
    return files


STATIC: Final = _static_files()

router = APIRouter(include_in_schema=False)


def _renderer(page: Page) -> Callable[[Request], Response]:
    def render(request: Request) -> Response:
        return TEMPLATES.TemplateResponse(
            request, page.template, {"page": page, "pages": PAGES}, headers=PAGE_HEADERS)

    render.__name__ = f"page_{page.script}"
    return render


for _page in PAGES:
    router.add_api_route(_page.path, _renderer(_page), methods=["GET"],
                         response_class=HTMLResponse, name=f"page_{_page.script}")


@router.get("/", name="page_home")
def home() -> RedirectResponse:
    return RedirectResponse("/dashboard", status_code=303)


@router.get("/static/{name:path}", name="static")
def static(name: str, request: Request) -> Response:
    """A file of the UI; 304 when the browser's copy is current."""
    file = STATIC.get(name)
    if file is None:
        return Response("no such file", status_code=404, media_type="text/plain")
    headers = {"ETag": file.etag, "Cache-Control": "no-cache",
               "X-Content-Type-Options": "nosniff"}
    if request.headers.get("if-none-match") == file.etag:
        return Response(status_code=304, headers=headers)
    return Response(file.content, media_type=file.content_type, headers=headers)
