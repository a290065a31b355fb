"""Who is asking: a session cookie (browser) or a bearer token (script), as FastAPI
dependencies that routes declare.

- A cookie session must echo its CSRF token in `X-CSRF-Token` on every unsafe method
  (double submit: a page of another origin can make the browser send the cookie, but cannot
  read the token); a bearer token is not sent by browsers on their own, so it needs none.
- Each authenticated request spends a token of the account's rate bucket (429 past it).
- Suspended accounts are refused (their sessions are dropped when suspended; tokens stop
  working at once).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, HTTPException, Request

from .accounts import Account, Session
from .context import WebContext, web

__all__ = ["SESSION_COOKIE", "Caller", "admin", "caller", "client_address", "too_many"]

SESSION_COOKIE = "phalanx_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_SECRET_CHARS = 200


@dataclass(frozen=True, slots=True)
class Caller:
    account: Account
    via: Literal["session", "token"]
    session: Session | None


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def too_many(wait: float) -> HTTPException:
    return HTTPException(429, "too many requests; slow down",
                         headers={"Retry-After": str(max(1, round(wait + 0.5)))})


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret or len(secret) > MAX_SECRET_CHARS:
        raise HTTPException(401, "Authorization must be 'Bearer <token>'",
                            headers={"WWW-Authenticate": "Bearer"})
    return secret.strip()


def _identify(request: Request, context: WebContext) -> Caller:
    secret = _bearer(request)
    if secret is not None:
        account = context.accounts.token_account(secret)
        if account is None:
            raise HTTPException(401, "unknown or revoked token",
                                headers={"WWW-Authenticate": "Bearer"})
        return Caller(account, "token", None)
    cookie = request.cookies.get(SESSION_COOKIE)
    session = context.accounts.session(cookie) if cookie and len(
        cookie) <= MAX_SECRET_CHARS else None
    if session is None:
        raise HTTPException(401, "not logged in (or the session expired)")
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
            raise HTTPException(403, f"missing or wrong {CSRF_HEADER} header")
    return Caller(session.account, "session", session)


async def caller(request: Request, context: Annotated[WebContext, Depends(web)]) -> Caller:
    """The signed-in account (401 otherwise), within its rate limit (429 otherwise)."""
    who = _identify(request, context)
    if who.account.suspended:
        raise HTTPException(403, "this account is suspended")
    wait = context.limiter.check_account(who.account.id)
    if wait:
        raise too_many(wait)
    return who


async def admin(who: Annotated[Caller, Depends(caller)]) -> Caller:
    if who.account.role != "admin":
        raise HTTPException(403, "admins only")
    return who


CallerDep = Annotated[Caller, Depends(caller)]
AdminDep = Annotated[Caller, Depends(admin)]
WebDep = Annotated[WebContext, Depends(web)]
