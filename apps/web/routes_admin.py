"""What an admin does: import tasks, export labels, watch the platform and its annotators,
suspend or promote accounts, check the node's health."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from starlette.datastructures import UploadFile

from phalanx.engine.curation.io import TaskImportError, tasks_from_csv, tasks_from_jsonl
from phalanx.engine.curation.tasks import TaskError

from .accounts import AccountError
from .auth import AdminDep, WebDep
from .context import WebContext
from .models import (
    PROBLEMS,
    AccountChange,
    AccountList,
    AccountView,
    AdminStats,
    Health,
    Imported,
    Problem,
)
from .routes_curation import name_of
from .views import annotator_stats, history, platform

__all__ = ["router"]

router = APIRouter(prefix="/api/admin", tags=["admin"],
                   responses=PROBLEMS)

TASK_FILE_TYPES = {"application/x-ndjson": "jsonl", "application/jsonl": "jsonl",
                   "application/json": "jsonl", "text/csv": "csv"}
_QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")
MAX_PROBLEM_LINES = 20
Username = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]

_IMPORT_BODY = {"requestBody": {"required": True, "content": {
    "application/x-ndjson": {"schema": {"type": "string"}},
    "text/csv": {"schema": {"type": "string"}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary"}}}}}}}


def _redacted(problems: list[str]) -> str:
    """An import's problems by row and field, with the values it quoted taken out."""
    return "; ".join(_QUOTED.sub("(value)", p) for p in problems[:MAX_PROBLEM_LINES])[:2000]


async def _task_file(request: Request, fmt: str | None) -> tuple[bytes, str]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=4)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPException(400, "multipart body: a 'file' part is required")
        data = await upload.read()
        name = (upload.filename or "").lower()
        guess = "csv" if name.endswith(".csv") else "jsonl" if name.endswith(
            (".jsonl", ".ndjson", ".json")) else None
    else:
        data, guess = await request.body(), TASK_FILE_TYPES.get(kind)
    chosen = fmt or guess
    if chosen is None:
        raise HTTPException(400, "say the file's format: ?format=jsonl|csv, a Content-Type of "
                                 "application/x-ndjson or text/csv, or a .jsonl/.csv file name")
    return data, chosen


@router.post("/tasks", response_model=Imported, openapi_extra=_IMPORT_BODY,
             responses={409: {"model": Problem}})
async def import_tasks(request: Request, who: AdminDep, context: WebDep,
                       format: Annotated[Literal["jsonl", "csv"] | None, Query()] = None
                       ) -> Imported:
    """Tasks from a JSONL or CSV file (engine/curation/io.py's columns, gold answers
    included): all or nothing; replicated to the other curation nodes."""
    data, fmt = await _task_file(request, format)
    try:
        tasks = tasks_from_csv(data) if fmt == "csv" else tasks_from_jsonl(data)
    except TaskImportError as e:
        raise HTTPException(400, f"no task imported: {_redacted(e.problems)}") from None
    if not len(tasks):
        raise HTTPException(400, "no task imported: the file holds no tasks")
    try:
        added = context.port.import_tasks(tasks)
    except TaskError as e:
        raise HTTPException(409, f"no task imported: {_redacted([str(e)])}") from None
    return Imported(added=added, total=len(context.port.desk.tasks))


@router.get("/labels", response_class=Response, responses={200: {"content": {
    "application/x-ndjson": {}, "application/vnd.apache.parquet": {}}}})
async def export_labels(who: AdminDep, context: WebDep,
                        format: Annotated[Literal["jsonl", "parquet"], Query()] = "jsonl"
                        ) -> Response:
    """The labels at the last committed round, with confidence and provenance."""
    desk = context.port.desk
    data = desk.export_labels(format)
    media = "application/x-ndjson" if format == "jsonl" else "application/vnd.apache.parquet"
    name = f"labels-round-{max(desk.round, 0)}.{format}"
    return Response(data, media_type=media,
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/stats", response_model=AdminStats)
async def admin_stats(who: AdminDep, context: WebDep,
                      limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> AdminStats:
    """The platform, its history per committed round (agreement, throughput) and each
    annotator's quality."""
    desk = context.port.desk
    summary = desk.stats()
    name = name_of(context)
    return AdminStats(platform=platform(summary), history=history(summary),
                      annotators=[annotator_stats(v, name) for v in desk.leaderboard(limit)],
                      refusals=dict(desk.counts))


def _account_view(context: WebContext, username: str) -> AccountView:
    account = context.accounts.by_name(username)
    if account is None:
        raise HTTPException(404, "no such account")
    view = context.port.desk.annotator(account.key) if account.key else None
    return AccountView(username=account.username, role=account.role,
                       suspended=account.suspended, keys=[k.hex() for k in account.keys],
                       stats=annotator_stats(view, lambda _: account.username) if view else None)


@router.get("/annotators", response_model=AccountList)
async def annotators(who: AdminDep, context: WebDep,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 200,
                     offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> AccountList:
    return AccountList(accounts=[_account_view(context, a.username)
                                 for a in context.accounts.all(limit, offset)])


@router.post("/annotators/{username}", response_model=AccountView,
             responses={404: {"model": Problem}})
async def change_account(username: Username, body: AccountChange, who: AdminDep,
                         context: WebDep) -> AccountView:
    """Suspend or reinstate an account, or change its role (the last active admin stays)."""
    try:
        context.accounts.update(username, role=body.role, suspended=body.suspended)
    except KeyError:
        raise HTTPException(404, "no such account") from None
    except AccountError as e:
        raise HTTPException(400, str(e)) from None
    return _account_view(context, username)


@router.get("/health", response_model=Health)
async def health(who: AdminDep, context: WebDep) -> Health:
    desk = context.port.desk
    verdict = context.port.health()
    return Health(status=verdict["status"], mode=verdict["mode"], detail=verdict["detail"],
                  round=desk.round, committed=desk.committed, pending=desk.pending,
                  seconds_since_commit=verdict.get("seconds_since_commit"),
                  refusals=dict(desk.counts), http_refused=context.limiter.refused)
