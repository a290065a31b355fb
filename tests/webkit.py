"""What the web app's tests share: a small task set, an app over a LocalPort with cheap
password hashing, and annotators who sign up with their own keys."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from phalanx.apps.web.accounts import Accounts
from phalanx.apps.web.app import create_app
from phalanx.apps.web.client import task_from_view
from phalanx.apps.web.limits import RateLimits
from phalanx.apps.web.port import LocalPort
from phalanx.apps.web.routes_auth import key_proof_message
from phalanx.apps.web.settings import WebSettings
from phalanx.engine.curation.client import AnnotatorClient
from phalanx.engine.curation.desk import CurationDesk
from phalanx.engine.curation.store import MemoryStore, SqliteStore
from phalanx.engine.curation.tasks import Answer, Task, TaskSet
from phalanx.net.crypto import Identity

PASSWORD = "correct horse battery"
# argon2id made cheap for tests (the product's default is OWASP's floor)
CHEAP = WebSettings(argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1)
LOOSE = RateLimits(account_rate=10_000, account_burst=10_000, address_rate=10_000,
                   address_burst=10_000)


def task_set(n: int = 12, gold: int = 2) -> TaskSet:
    tasks = [Task.make(id=f"t{i:03d}", kind="single_choice", text=f"Is item {i} a cat?",
                       options=("cat", "dog", "bird")) for i in range(n)]
    return TaskSet(tasks, {f"t{i:03d}": Answer((0,)) for i in range(gold)})


def local_port(folder: Path, tasks: TaskSet | None = None, sqlite: bool = False) -> LocalPort:
    """A desk in memory, or over SQLite (only for a server on one event loop: the test client
    runs each request on a thread of its own, and a SQLite connection stays on its thread)."""
    store = SqliteStore(folder / "records.sqlite") if sqlite else MemoryStore()
    return LocalPort(CurationDesk(tasks or task_set(), store=store), commit_seconds=0.2)


def make_app(folder: Path, settings: WebSettings = CHEAP,
             port: LocalPort | None = None) -> tuple[FastAPI, LocalPort]:
    port = port or local_port(folder)
    return create_app(port, accounts_path=folder / "web.sqlite", settings=settings), port


def make_admin(folder: Path, username: str = "root") -> None:
    Accounts(folder / "web.sqlite", hasher=CHEAP.hasher()).create(username, PASSWORD, "admin")


@dataclass
class Annotator:
    """A signed-up annotator driving the app through a TestClient (cookie session)."""

    http: TestClient
    username: str
    identity: Identity
    csrf: str

    @classmethod
    def signup(cls, app: FastAPI, username: str, identity: Identity | None = None,
               client: TestClient | None = None) -> Annotator:
        identity = identity or Identity.generate()
        http = client or TestClient(app)
        r = http.post("/api/auth/signup", json={
            "username": username, "password": PASSWORD, "public_key": identity.public_key.hex(),
            "proof": identity.sign(key_proof_message(username)).hex()})
        assert r.status_code == 201, r.text
        return cls(http, username, identity, r.json()["csrf"])

    def get(self, path: str, **kw: Any) -> Any:
        return self.http.get(path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.http.post(path, headers={"X-CSRF-Token": self.csrf}, **kw)

    def fetch(self, count: int = 3) -> tuple[list[Task], AnnotatorClient]:
        r = self.get("/api/tasks", params={"count": count})
        assert r.status_code == 200, r.text
        body = r.json()
        signer = AnnotatorClient(self.identity, body["head"]["seq"],
                                 bytes.fromhex(body["head"]["prev"]))
        return [task_from_view(v) for v in body["tasks"]], signer

    def submit_bytes(self, data: bytes) -> Any:
        return self.post("/api/submit", json={"record": base64.b64encode(data).decode()})
