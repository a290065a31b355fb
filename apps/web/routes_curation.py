"""What an annotator does: fetch tasks, submit signed records, read their standing and the
leaderboard. Routes are async: they read the desk on the event loop that owns it."""

from __future__ import annotations

import base64
import binascii
import sqlite3
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import JSONResponse

from phalanx.engine.curation.records import RecordRefused, decode_annotation

from .auth import CallerDep, WebDep
from .context import WebContext
from .models import PROBLEMS, Accepted, Head, Leaderboard, Problem, Ranked, Stats, Submission, Tasks
from .views import NameOf, annotator_stats, platform, rank_of, task_view

__all__ = ["REFUSAL_TEXT", "name_of", "refused", "router"]

router = APIRouter(prefix="/api", tags=["annotating"],
                   responses=PROBLEMS)

# What a refused record is told: a fixed line per reason (the log's own messages may quote
# the record's fields, and an answer never repeats its request).
REFUSAL_TEXT = {
    "oversized": "the record is larger than any task allows",
    "malformed": "not an annotation record",
    "altered": "the record's content does not match its digest",
    "replay": "this record is held already",
    "bad_signature": "the signature is not the annotator key's over this record",
    "unknown_task": "no such task on this node",
    "invalid_answer": "the answer does not fit the task's schema",
    "chain_link": "the record does not follow the annotator's previous record",
    "sequence_gap": "the annotator's previous record is not held here",
    "flood": "too many records: the log's bounds are reached",
    "equivocation": "a second record at the same seq",
}
_CONFLICTS = {"replay": 409, "chain_link": 409, "sequence_gap": 409, "flood": 429}


def refused(e: RecordRefused) -> JSONResponse:
    return JSONResponse({"detail": f"record refused: {REFUSAL_TEXT.get(e.reason, e.reason)}",
                         "reason": e.reason}, status_code=_CONFLICTS.get(e.reason, 400))


def _key(who: CallerDep) -> bytes:
    if who.account.key is None:
        raise HTTPException(409, "register a public key first (PUT /api/me/key)")
    return who.account.key


def name_of(context: WebContext) -> NameOf:
    def name(key: bytes) -> str | None:
        account = context.accounts.by_key(key)
        return account.username if account else None
    return name


@router.get("/tasks", response_model=Tasks, responses={409: {"model": Problem}})
async def tasks(who: CallerDep, context: WebDep,
                count: Annotated[int, Query(ge=1, le=100)] = 10) -> Tasks:
    """The caller's next tasks (blind: no answers of others, no gold marks) and the head of
    their chain, which their next record links to."""
    key = _key(who)
    desk = context.port.desk
    count = min(count, context.settings.max_tasks_per_request)
    seq, prev = desk.head(key)
    return Tasks(tasks=[task_view(t) for t in desk.next_tasks(key, count)],
                 head=Head(seq=seq, prev=prev.hex()))


@router.post("/submit", status_code=202, response_model=Accepted,
             responses={409: {"model": Problem}})
async def submit(body: Submission, who: CallerDep, context: WebDep) -> Accepted | JSONResponse:
    """A record signed by one of the caller's registered keys: verified, held durably, then
    acknowledged (202: pending until a round commits it)."""
    try:
        raw = base64.b64decode(body.record, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(400, "record: not standard base64") from None
    try:
        annotator = decode_annotation(raw).body.annotator
    except RecordRefused:
        annotator = None  # not a record: the desk refuses it below, and counts it
    desk = context.port.desk
    if annotator is not None:
        if annotator not in who.account.keys:
            raise HTTPException(403, "the record is signed for a key not registered to this "
                                     "account")
        if desk.is_suspended(annotator):
            raise HTTPException(403, "this annotator is suspended by the platform's "
                                     "reputation rules")
    try:
        digest = await context.port.submit(raw)
    except RecordRefused as e:
        return refused(e)
    except (OSError, sqlite3.Error):  # held here, not durable: the client must not count it
        raise HTTPException(503, "the record could not be stored; try again") from None
    status = "committed" if digest in desk.committed_log else "pending"
    return Accepted(digest=digest.hex(), status=status)


@router.get("/stats", response_model=Stats)
async def stats(who: CallerDep, context: WebDep) -> Stats:
    """The caller's own standing (by their current key) and the platform's summary."""
    desk = context.port.desk
    key = who.account.key
    me = annotator_stats(desk.annotator(key), name_of(context)) if key else None
    return Stats(me=me, rank=rank_of(desk, key) if key else None,
                 platform=platform(desk.stats()))


@router.get("/leaderboard", response_model=Leaderboard)
async def leaderboard(who: CallerDep, context: WebDep,
                      limit: Annotated[int, Query(ge=1, le=200)] = 50) -> Leaderboard:
    desk = context.port.desk
    name = name_of(context)
    rows = [Ranked(rank=i, **annotator_stats(view, name).model_dump())
            for i, view in enumerate(desk.leaderboard(limit), start=1)]
    return Leaderboard(round=desk.round, rows=rows)

