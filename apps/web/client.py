"""A small Python client of a node's web API: an annotator (or a script, or the benchmark)
signs in, fetches tasks, signs each answer with their own Ed25519 key and submits it.

    async with WebClient("https://node:8443", Identity.load_or_create("me.key"),
                         verify="node-cert.pem") as client:
        await client.login("ada", password)          # or WebClient(..., token="phx_...")
        for task in await client.tasks(5):
            await client.answer(task, task.options[0])

The key never leaves the client: the node sees public keys and signed records only. A
submission whose answer was lost on the way (a timeout, a restarted node) is sent again as
the same bytes; the node's "replay" (409) then means it holds it, which is an acknowledgement.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx2 as httpx

from phalanx.engine.curation.client import AnnotatorClient
from phalanx.engine.curation.records import SignedAnnotation, decode_annotation
from phalanx.engine.curation.tasks import Task
from phalanx.net.crypto import Identity

from .routes_auth import key_proof_message

__all__ = ["ApiError", "WebClient"]


class ApiError(RuntimeError):
    """A request the node refused: its status, its one-line reason, and a refused record's
    reason code (e.g. "bad_signature")."""

    def __init__(self, status: int, detail: str, reason: str | None = None) -> None:
        super().__init__(f"{status}: {detail}")
        self.status, self.detail, self.reason = status, detail, reason


@dataclass(frozen=True, slots=True)
class Receipt:
    digest: str
    status: str  # "pending" | "committed" | "held" (a resend the node already had)


def task_from_view(view: dict[str, Any]) -> Task:
    """The task a node described, rebuilt; ValueError when it does not hash to the digest the
    node gave (the record would be signed over a task the node does not hold)."""
    task = Task.make(id=view["id"], kind=view["kind"], text=view["text"],
                     options=view["options"], completions=view["completions"],
                     scale=view["scale"], max_length=view["max_length"])
    if task.digest.hex() != view["digest"]:
        raise ValueError(f"task {view['id'][:40]!r}: content does not match its digest")
    return task


class WebClient:
    def __init__(self, base_url: str, identity: Identity, *, token: str | None = None,
                 verify: bool | str = True, timeout: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        """`verify`: True (system CAs), a CA/certificate file (a node's self-signed one), or
        False; `transport`: for tests (an in-process app)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.AsyncClient(base_url=base_url, verify=verify, timeout=timeout,
                                      headers=headers, transport=transport)
        self.signer = AnnotatorClient(identity)
        self.csrf: str | None = None

    async def __aenter__(self) -> WebClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.aclose()

    @property
    def public_key(self) -> bytes:
        return self.signer.public_key

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = kwargs.pop("headers", {})
        if self.csrf is not None and method not in ("GET", "HEAD"):
            headers["X-CSRF-Token"] = self.csrf
        response = await self.http.request(method, path, headers=headers, **kwargs)
        if response.status_code >= 400:
            try:
                body = response.json()
                detail, reason = str(body.get("detail")), body.get("reason")
            except ValueError:
                detail, reason = response.text[:200], None
            raise ApiError(response.status_code, detail, reason)
        return response

    # --- accounts -------------------------------------------------------------------------

    def _proof(self, username: str) -> str:
        return self.signer.identity.sign(key_proof_message(username)).hex()

    async def signup(self, username: str, password: str) -> dict[str, Any]:
        """A new annotator account with this client's key registered."""
        body = (await self._call("POST", "/api/auth/signup", json={
            "username": username, "password": password,
            "public_key": self.public_key.hex(), "proof": self._proof(username)})).json()
        self.csrf = body["csrf"]
        return dict(body)

    async def login(self, username: str, password: str) -> dict[str, Any]:
        """Log in; registers this client's key to the account if it is not yet."""
        body = (await self._call("POST", "/api/auth/login", json={
            "username": username, "password": password})).json()
        self.csrf = body["csrf"]
        me = await self.me()
        if self.public_key.hex() not in me["keys"]:
            await self._call("PUT", "/api/me/key", json={
                "public_key": self.public_key.hex(), "proof": self._proof(username)})
        return dict(body)

    async def me(self) -> dict[str, Any]:
        return dict((await self._call("GET", "/api/me")).json())

    async def issue_token(self) -> str:
        """A fresh API token for this account (shown once), used by this client from now."""
        token = (await self._call("POST", "/api/tokens")).json()["token"]
        self.http.headers["Authorization"] = f"Bearer {token}"
        return str(token)

    # --- annotating -----------------------------------------------------------------------

    async def tasks(self, count: int = 10) -> list[Task]:
        """The next tasks, checked against their digests; the signer resumes from the head
        the node reports (so a client that restarted links its next record right)."""
        return self.take_tasks((await self._call("GET", "/api/tasks",
                                                 params={"count": count})).json())

    def take_tasks(self, body: dict[str, Any]) -> list[Task]:
        """The tasks of a /api/tasks answer (`tasks` fetches it; a caller with its own
        connection may too), the signer resumed from the head it reports."""
        head = body["head"]
        if head["seq"] >= self.signer.seq:
            self.signer.resume(head["seq"], bytes.fromhex(head["prev"]))
        return [task_from_view(view) for view in body["tasks"]]

    def sign(self, task: Task, value: object, client_time_ms: int = 0) -> SignedAnnotation:
        """The next record: `value` in the task's own terms (an option, a rating, ...)."""
        return self.signer.sign(task, task.answer_from(value), client_time_ms)

    async def submit(self, record: SignedAnnotation | bytes) -> Receipt:
        data = record.encode() if isinstance(record, SignedAnnotation) else record
        try:
            body = (await self._call("POST", "/api/submit", json={
                "record": base64.b64encode(data).decode()})).json()
        except ApiError as e:
            if e.reason == "replay":  # the node holds it: a resend after a lost answer
                return Receipt(decode_annotation(data).digest.hex(), "held")
            raise
        return Receipt(body["digest"], body["status"])

    async def answer(self, task: Task, value: object) -> Receipt:
        return await self.submit(self.sign(task, value))

    async def stats(self) -> dict[str, Any]:
        return dict((await self._call("GET", "/api/stats")).json())

    async def leaderboard(self, limit: int = 50) -> dict[str, Any]:
        return dict((await self._call("GET", "/api/leaderboard",
                                      params={"limit": limit})).json())
