"""The web API through the app's test client: accounts, CSRF, tokens, roles, keys, the
annotator's loop, admin routes, and every kind of bad request (4xx with a reason that never
repeats the input; refused records counted by reason)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import polars as pl
from fastapi.testclient import TestClient
from webkit import CHEAP, LOOSE, PASSWORD, Annotator, make_admin, make_app

from phalanx.apps.web.limits import RateLimits
from phalanx.apps.web.routes_auth import key_proof_message
from phalanx.apps.web.settings import WebSettings
from phalanx.engine.curation.records import (
    Annotation,
    SignedAnnotation,
    sign_annotation,
    signed_message,
)
from phalanx.net.codec import encode_record
from phalanx.net.crypto import Identity, sha256

SETTINGS = WebSettings(argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1,
                       rate=LOOSE)


def _login(app, username: str) -> tuple[TestClient, str]:  # type: ignore[no-untyped-def]
    http = TestClient(app)
    r = http.post("/api/auth/login", json={"username": username, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return http, r.json()["csrf"]


def test_signup_login_session_cookie_and_csrf(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path, SETTINGS)
    ada = Annotator.signup(app, "ada")
    cookie = ada.http.cookies.jar
    (session,) = [c for c in cookie if c.name == "phalanx_session"]
    assert session.has_nonstandard_attr("HttpOnly") and session.get_nonstandard_attr(
        "SameSite") in ("strict", "Strict")
    me = ada.get("/api/me").json()
    assert me["username"] == "ada" and me["role"] == "annotator"
    assert me["public_key"] == ada.identity.public_key.hex() and me["csrf"] == ada.csrf
    # an unsafe request with the cookie but without the header, or with a wrong one: 403
    assert ada.http.post("/api/tokens").status_code == 403
    assert ada.http.post("/api/tokens", headers={"X-CSRF-Token": "x" * 43}).status_code == 403
    assert ada.post("/api/tokens").status_code == 201
    # wrong password: 401, the same answer as an unknown user
    http = TestClient(app)
    wrong = http.post("/api/auth/login", json={"username": "ada", "password": "nope" * 4})
    unknown = http.post("/api/auth/login", json={"username": "bob", "password": "nope" * 4})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    # logout ends the session server-side
    assert ada.post("/api/auth/logout").status_code == 204
    assert ada.get("/api/me").status_code == 401


def test_signup_refuses_bad_names_passwords_taken_names_and_foreign_keys(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path, SETTINGS)
    Annotator.signup(app, "ada")
    http = TestClient(app)
    key = Identity.generate()

    def signup(username: str, password: str = PASSWORD, proof_for: str | None = None,
               identity: Identity = key) -> dict:  # type: ignore[type-arg]
        r = http.post("/api/auth/signup", json={
            "username": username, "password": password, "public_key": identity.public_key.hex(),
            "proof": identity.sign(key_proof_message(proof_for or username)).hex()})
        return {"status": r.status_code, "detail": r.json()["detail"]}

    assert signup("Ada!")["status"] == 422
    short = signup("carol", password="short")
    assert short["status"] == 422 and "short" not in short["detail"]
    assert signup("ada") == {"status": 409, "detail": "username: already taken"}
    # a key someone else holds cannot be claimed: the proof is a signature by that key
    stolen = signup("mallory", proof_for="someone-else")
    assert stolen["status"] == 400 and "proof" in stolen["detail"]


def test_tokens_are_shown_once_revocable_and_need_no_csrf(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path, SETTINGS)
    ada = Annotator.signup(app, "ada")
    issued = ada.post("/api/tokens").json()
    bearer = TestClient(app, headers={"Authorization": f"Bearer {issued['token']}"})
    assert bearer.get("/api/me").json()["username"] == "ada"
    assert bearer.post("/api/tokens").status_code == 201  # no CSRF header with a token
    listed = ada.get("/api/tokens").json()["tokens"]
    assert len(listed) == 2 and all(set(t) == {"id", "created"} for t in listed)
    assert ada.http.delete(f"/api/tokens/{issued['id']}",
                           headers={"X-CSRF-Token": ada.csrf}).status_code == 204
    assert bearer.get("/api/me").status_code == 401
    bob = Annotator.signup(app, "bob")
    other = bob.post("/api/tokens").json()["id"]  # ada cannot revoke bob's token
    assert ada.http.delete(f"/api/tokens/{other}",
                           headers={"X-CSRF-Token": ada.csrf}).status_code == 404
    assert TestClient(app, headers={"Authorization": "Basic abc"}).get(
        "/api/me").status_code == 401


def test_annotators_loop_tasks_submit_commit_stats_leaderboard(tmp_path: Path) -> None:
    app, port = make_app(tmp_path, SETTINGS)
    ada = Annotator.signup(app, "ada")
    tasks, signer = ada.fetch(3)
    assert len(tasks) == 3
    views = ada.get("/api/tasks", params={"count": 3}).json()["tasks"]
    assert all("gold" not in json.dumps(v) for v in views)
    digests = []
    for task in tasks:
        r = ada.submit_bytes(signer.sign(task, task.answer_from("cat")).encode())
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "pending"
        digests.append(r.json()["digest"])
    # the next fetch continues the chain and never repeats an answered task
    more, again = ada.fetch(3)
    assert again.seq == 3 and not {t.digest for t in more} & {t.digest for t in tasks}
    stats = ada.get("/api/stats").json()
    assert stats["me"]["pending"] == 3 and stats["me"]["committed"] == 0
    assert port.commit_now() == 3
    stats = ada.get("/api/stats").json()
    assert stats["me"]["committed"] == 3 and stats["rank"] == 1
    assert stats["platform"]["records"] == 3 and stats["platform"]["round"] == 0
    assert stats["platform"]["snapshot_root"] == port.desk.root.hex()
    board = ada.get("/api/leaderboard", params={"limit": 5}).json()
    assert board["rows"][0]["username"] == "ada" and board["rows"][0]["rank"] == 1


def test_an_annotator_can_neither_submit_as_another_nor_claim_their_key(tmp_path: Path) -> None:
    app, port = make_app(tmp_path, SETTINGS)
    ada, bob = Annotator.signup(app, "ada"), Annotator.signup(app, "bob")
    tasks, ada_signer = ada.fetch(1)
    record = ada_signer.sign(tasks[0], tasks[0].answer_from("dog")).encode()
    r = bob.submit_bytes(record)  # ada's genuine record, submitted by bob
    assert r.status_code == 403 and "not registered to this account" in r.json()["detail"]
    assert port.desk.pending == 0
    # bob cannot register ada's key (no proof), so never reads her stats as his
    r = bob.http.put("/api/me/key", headers={"X-CSRF-Token": bob.csrf}, json={
        "public_key": ada.identity.public_key.hex(),
        "proof": bob.identity.sign(key_proof_message("bob")).hex()})
    assert r.status_code == 400
    # a proof by ada's key for ada's name does not register it to bob either
    r = bob.http.put("/api/me/key", headers={"X-CSRF-Token": bob.csrf}, json={
        "public_key": ada.identity.public_key.hex(),
        "proof": ada.identity.sign(key_proof_message("ada")).hex()})
    assert r.status_code == 400
    # and with a proof for his name, a key that is ada's stays ada's
    r = bob.http.put("/api/me/key", headers={"X-CSRF-Token": bob.csrf}, json={
        "public_key": ada.identity.public_key.hex(),
        "proof": ada.identity.sign(key_proof_message("bob")).hex()})
    assert r.status_code == 409
    assert bob.get("/api/stats").json()["me"]["public_key"] == bob.identity.public_key.hex()
    # a second browser of bob's: a new key with its proof, now the current one
    laptop = Identity.generate()
    r = bob.http.put("/api/me/key", headers={"X-CSRF-Token": bob.csrf}, json={
        "public_key": laptop.public_key.hex(),
        "proof": laptop.sign(key_proof_message("bob")).hex()})
    assert r.status_code == 200 and r.json()["public_key"] == laptop.public_key.hex()
    assert len(r.json()["keys"]) == 2


def test_forged_altered_replayed_and_malformed_records_are_refused_and_counted(
        tmp_path: Path) -> None:
    app, port = make_app(tmp_path, SETTINGS)
    make_admin(tmp_path)
    ada = Annotator.signup(app, "ada")
    tasks, signer = ada.fetch(2)
    good = signer.sign(tasks[0], tasks[0].answer_from("cat"))
    assert ada.submit_bytes(good.encode()).status_code == 202
    replay = ada.submit_bytes(good.encode())
    assert replay.status_code == 409 and replay.json()["reason"] == "replay"
    # forged: ada's key named as annotator, signed by another key
    body = Annotation(task=tasks[1].digest, kind="single_choice",
                      annotator=ada.identity.public_key, seq=1, prev=good.digest, choice=(1,),
                      text="", client_time_ms=0)
    forger = Identity.generate()
    forged = SignedAnnotation(body, forger.sign(signed_message(
        sha256(encode_record(body))))).encode()
    r = ada.submit_bytes(forged)
    assert r.status_code == 400 and r.json()["reason"] == "bad_signature"
    # altered: a genuine record whose answer is changed after signing
    honest = sign_annotation(ada.identity, body).encode()
    altered = honest.replace(bytes([0x91, 0x01]), bytes([0x91, 0x02]), 1)
    assert altered != honest
    r = ada.submit_bytes(altered)
    assert r.status_code == 400 and r.json()["reason"] == "bad_signature"
    junk = ada.submit_bytes(b"\x93not a record")
    assert junk.status_code == 400 and junk.json()["reason"] == "malformed"
    assert "not a record" not in junk.text
    not_b64 = ada.post("/api/submit", json={"record": "@@@@"})
    assert not_b64.status_code == 400 and "@@@@" not in not_b64.text
    assert ada.submit_bytes(honest).status_code == 202  # the genuine one still goes in
    admin, _ = _login(app, "root")
    counts = admin.get("/api/admin/health").json()["refusals"]
    assert counts["replay"] == 1 and counts["bad_signature"] == 2 and counts["malformed"] == 1
    assert port.desk.pending == 2


def test_bad_json_unknown_fields_and_oversized_bodies_get_4xx_without_echo(
        tmp_path: Path) -> None:
    settings = WebSettings(argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1,
                           rate=LOOSE, max_body_bytes=4096)
    app, _ = make_app(tmp_path, settings)
    ada = Annotator.signup(app, "ada")
    secret = "SECRET-VALUE-123"
    cases = [
        ada.http.post("/api/auth/login", content=b'{"username": "' + secret.encode(),
                      headers={"content-type": "application/json"}),
        ada.http.post("/api/auth/login", json={"username": "ada", "password": "x" * 12,
                                                secret: 1}),
        ada.http.post("/api/auth/login", json={"username": ["x", secret], "password": 1}),
        ada.get("/api/tasks", params={"count": secret}),
        ada.get("/api/leaderboard", params={"limit": 10**30}),
    ]
    for r in cases:
        assert r.status_code == 422, r.text
        assert secret not in r.text and "10000000000" not in r.text
        assert r.json()["detail"]
    big = ada.post("/api/submit", json={"record": "A" * 10_000})
    assert big.status_code == 413 and "A" * 20 not in big.text
    # a body streamed without a length is cut at the cap too
    chunks = (b"x" * 1024 for _ in range(10))
    streamed = ada.http.post("/api/auth/login", content=chunks,
                             headers={"content-type": "application/json"})
    assert streamed.status_code == 413


def test_roles_admin_routes_import_export_and_suspension(tmp_path: Path) -> None:
    app, port = make_app(tmp_path, SETTINGS)
    make_admin(tmp_path)
    ada = Annotator.signup(app, "ada")
    for path in ("/api/admin/stats", "/api/admin/annotators", "/api/admin/health",
                 "/api/admin/labels"):
        assert ada.get(path).status_code == 403
    admin, csrf = _login(app, "root")
    unsafe = {"X-CSRF-Token": csrf}
    rows = "\n".join(json.dumps({"id": f"new{i}", "kind": "single_choice", "text": "t",
                                 "options": ["a", "b"]}) for i in range(5)).encode()
    r = admin.post("/api/admin/tasks", content=rows, headers={
        **unsafe, "content-type": "application/x-ndjson"})
    assert r.json() == {"added": 5, "total": 17}
    csv = b"id,kind,text,options,gold\nc1,single_choice,hello,yes|no,yes\n"
    r = admin.post("/api/admin/tasks", files={"file": ("more.csv", csv, "text/csv")},
                   headers=unsafe)
    assert r.json() == {"added": 1, "total": 18}
    bad = b'{"id": "x1", "kind": "SECRETKIND", "text": "t"}\n'
    r = admin.post("/api/admin/tasks?format=jsonl", content=bad, headers=unsafe)
    assert r.status_code == 400 and "SECRETKIND" not in r.text and "row 1" in r.text
    # an annotator answers, the round commits, the admin exports
    tasks, signer = ada.fetch(2)
    for task in tasks:
        ada.submit_bytes(signer.sign(task, task.answer_from(task.options[0])).encode())
    port.commit_now()
    jsonl = admin.get("/api/admin/labels", params={"format": "jsonl"})
    assert jsonl.status_code == 200 and len(jsonl.text.splitlines()) == 2
    parquet = admin.get("/api/admin/labels", params={"format": "parquet"})
    frame = pl.read_parquet(parquet.content)
    assert frame.height == 2 and set(frame["task_id"]) == {t.id for t in tasks}
    stats = admin.get("/api/admin/stats").json()
    assert stats["history"][-1]["records"] == 2 and stats["annotators"][0]["username"] == "ada"
    health = admin.get("/api/admin/health").json()
    assert health["mode"] == "local" and "no cluster" in health["detail"]
    listed = admin.get("/api/admin/annotators").json()["accounts"]
    assert {a["username"] for a in listed} == {"root", "ada"}
    # suspend ada: her session ends, she cannot log in or submit
    r = admin.post("/api/admin/annotators/ada", json={"suspended": True}, headers=unsafe)
    assert r.json()["suspended"] is True
    assert ada.get("/api/me").status_code == 401
    assert TestClient(app).post("/api/auth/login", json={
        "username": "ada", "password": PASSWORD}).status_code == 403
    # the last admin cannot demote themselves; unknown accounts are 404
    r = admin.post("/api/admin/annotators/root", json={"role": "annotator"}, headers=unsafe)
    assert r.status_code == 400
    assert admin.post("/api/admin/annotators/nobody", json={"suspended": False},
                      headers=unsafe).status_code == 404


def test_rate_limits_per_account_and_address_and_login_throttling(tmp_path: Path) -> None:
    settings = WebSettings(argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1,
                           rate=RateLimits(account_rate=1, account_burst=5, address_rate=1000,
                                           address_burst=1000, max_keys=50))
    app, _ = make_app(tmp_path, settings)
    ada = Annotator.signup(app, "ada")
    codes = [ada.get("/api/me").status_code for _ in range(8)]
    assert codes[:5] == [200] * 5 and codes[-1] == 429
    limited = ada.get("/api/me")
    assert int(limited.headers["retry-after"]) >= 1
    # a second account from the same address still has its own budget
    assert Annotator.signup(app, "bob").get("/api/me").status_code == 200
    # failed logins back off: after three free failures, the next try must wait
    http = TestClient(app)
    tries = [http.post("/api/auth/login", json={"username": "bob", "password": "wrong" * 3})
             for _ in range(3)]
    assert [r.status_code for r in tries] == [401, 401, 401]
    right = http.post("/api/auth/login", json={"username": "bob", "password": PASSWORD})
    assert right.status_code == 429 and int(right.headers["retry-after"]) >= 1
    # per address: a burst from one address is cut, and the table of addresses stays bounded
    tight = WebSettings(argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1,
                        rate=RateLimits(address_rate=1, address_burst=3, max_keys=50))
    (tmp_path / "two").mkdir()
    app2, _ = make_app(tmp_path / "two", tight)
    anon = TestClient(app2)
    assert [anon.get("/api/me").status_code for _ in range(4)] == [401, 401, 401, 429]
    limiter = app2.state.web.limiter
    for i in range(500):
        limiter.check_address(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter.addresses) == 50


def test_signup_can_be_closed_and_tasks_need_a_key(tmp_path: Path) -> None:
    app, _ = make_app(tmp_path, WebSettings(argon2_time_cost=1, argon2_memory_kib=1024,
                                            argon2_parallelism=1, signup_open=False))
    r = TestClient(app).post("/api/auth/signup", json={"username": "ada", "password": PASSWORD})
    assert r.status_code == 403
    (tmp_path / "open").mkdir()
    app2, _ = make_app(tmp_path / "open", CHEAP)
    keyless = TestClient(app2)
    assert keyless.post("/api/auth/signup", json={"username": "ada",
                                                  "password": PASSWORD}).status_code == 201
    assert keyless.get("/api/tasks").status_code == 409
    assert keyless.get("/api/stats").json()["me"] is None


def test_sessions_expire_and_a_suspended_accounts_tokens_stop_working(tmp_path: Path) -> None:
    settings = WebSettings(argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1,
                           rate=LOOSE, session_seconds=1.0)
    app, _ = make_app(tmp_path, settings)
    make_admin(tmp_path)
    ada = Annotator.signup(app, "ada")
    token = ada.post("/api/tokens").json()["token"]
    time.sleep(1.2)
    assert ada.get("/api/me").status_code == 401  # the cookie's session is over
    bearer = TestClient(app, headers={"Authorization": f"Bearer {token}"})
    assert bearer.get("/api/me").status_code == 200  # tokens live until revoked
    admin, csrf = _login(app, "root")
    admin.post("/api/admin/annotators/ada", json={"suspended": True},
               headers={"X-CSRF-Token": csrf})
    assert bearer.get("/api/me").status_code == 401
