"""Sign-up, login, logout, the caller's own account, keys and API tokens."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import APIRouter, HTTPException, Path, Request, Response
from starlette.concurrency import run_in_threadpool

from phalanx.net.crypto import verify_signature

from .accounts import (
    Account,
    AccountConflict,
    AccountError,
    Session,
    check_password,
    check_username,
)
from .auth import SESSION_COOKIE, CallerDep, WebDep, client_address, too_many
from .context import WebContext
from .models import (
    PROBLEMS,
    Authenticated,
    IssuedToken,
    KeyRegistration,
    Login,
    Me,
    Problem,
    Signup,
    TokenInfo,
    TokenList,
)

__all__ = ["KEY_PROOF_DOMAIN", "key_proof_message", "router"]

KEY_PROOF_DOMAIN = b"phalanx/key/v1"
T = TypeVar("T")

router = APIRouter(prefix="/api", tags=["accounts"],
                   responses=PROBLEMS)


def key_proof_message(username: str) -> bytes:
    """What a key signs to show it belongs to whoever registers it for `username`."""
    return KEY_PROOF_DOMAIN + username.encode()


def _checked_key(username: str, public_key: str, proof: str) -> bytes:
    key = bytes.fromhex(public_key)
    if not verify_signature(key, key_proof_message(username), bytes.fromhex(proof)):
        raise HTTPException(400, "proof: not a signature of this key over "
                                 "'phalanx/key/v1' + the username")
    return key


async def _hashing(context: WebContext, work: Callable[[], T]) -> T:
    """argon2 work off the event loop, a bounded number at once."""
    async with context.hashing:
        return await run_in_threadpool(work)


def _start_session(response: Response, context: WebContext, session: Session) -> Authenticated:
    response.set_cookie(SESSION_COOKIE, session.secret, max_age=int(
        context.settings.session_seconds), httponly=True, samesite="strict",
        secure=context.settings.https, path="/")
    return Authenticated(username=session.account.username, role=session.account.role,
                         csrf=session.csrf)


@router.post("/auth/signup", status_code=201, response_model=Authenticated,
             responses={409: {"model": Problem}})
async def signup(body: Signup, request: Request, response: Response,
                 context: WebDep) -> Authenticated:
    """Make an annotator account (admins are made with `phalanx web admin create`), and log
    in. A key given here must come with its proof."""
    if not context.settings.signup_open:
        raise HTTPException(403, "sign-up is closed on this node; ask its admin")
    try:
        check_username(body.username)
        check_password(body.password)
    except AccountError as e:
        raise HTTPException(400, str(e)) from None
    key = None
    if body.public_key is not None or body.proof is not None:
        if body.public_key is None or body.proof is None:
            raise HTTPException(400, "public_key and proof go together")
        key = _checked_key(body.username, body.public_key, body.proof)
    try:
        account = await _hashing(context, lambda: context.accounts.create(
            body.username, body.password, "annotator", key))
    except AccountError as e:
        raise HTTPException(409 if isinstance(e, AccountConflict) else 400, str(e)) from None
    return _start_session(response, context, context.accounts.open_session(account))


@router.post("/auth/login", response_model=Authenticated)
async def login(body: Login, request: Request, response: Response,
                context: WebDep) -> Authenticated:
    address = client_address(request)
    wait = context.logins.wait(body.username, address)
    if wait:
        raise too_many(wait)
    account = await _hashing(context, lambda: context.accounts.authenticate(
        body.username, body.password))
    if account is None:
        context.logins.failed(body.username, address)
        raise HTTPException(401, "wrong username or password")
    if account.suspended:
        raise HTTPException(403, "this account is suspended")
    context.logins.succeeded(body.username)
    return _start_session(response, context, context.accounts.open_session(account))


@router.post("/auth/logout", status_code=204)
async def logout(who: CallerDep, response: Response, context: WebDep) -> None:
    if who.session is not None:
        context.accounts.close_session(who.session.secret)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                           secure=context.settings.https)


def _me(account: Account, csrf: str | None) -> Me:
    return Me(username=account.username, role=account.role, csrf=csrf,
              public_key=account.key.hex() if account.key else None,
              keys=[k.hex() for k in account.keys], suspended=account.suspended)


@router.get("/me", response_model=Me)
async def me(who: CallerDep) -> Me:
    return _me(who.account, who.session.csrf if who.session else None)


@router.put("/me/key", response_model=Me, responses={409: {"model": Problem}})
async def register_key(body: KeyRegistration, who: CallerDep, context: WebDep) -> Me:
    """Register a key (a new browser's, or a client's): it becomes the current one; records
    signed by any of the account's keys are accepted."""
    key = _checked_key(who.account.username, body.public_key, body.proof)
    try:
        account = context.accounts.add_key(who.account, key)
    except AccountError as e:
        raise HTTPException(409 if isinstance(e, AccountConflict) else 400, str(e)) from None
    return _me(account, who.session.csrf if who.session else None)


@router.post("/tokens", status_code=201, response_model=IssuedToken)
async def issue_token(who: CallerDep, context: WebDep) -> IssuedToken:
    try:
        token = context.accounts.issue_token(who.account)
    except AccountError as e:
        raise HTTPException(400, str(e)) from None
    return IssuedToken(id=token.id, token=token.secret)


@router.get("/tokens", response_model=TokenList)
async def list_tokens(who: CallerDep, context: WebDep) -> TokenList:
    return TokenList(tokens=[TokenInfo(id=i, created=c)
                             for i, c in context.accounts.tokens(who.account)])


@router.delete("/tokens/{token_id}", status_code=204, responses={404: {"model": Problem}})
async def revoke_token(token_id: Annotated[int, Path(ge=1, le=2**62)], who: CallerDep, context: WebDep) -> None:
    if not context.accounts.revoke_token(who.account, token_id):
        raise HTTPException(404, "no such token on this account")
