"""Schemathesis against the web app's own OpenAPI schema: generated requests, valid and not,
to every route as a signed-in admin with a registered key. No answer may be a 500, and
every answer must match the schema it is documented with (status, content type, body).

One check is left out: "schema-valid data is accepted". Some rules are beyond a JSON schema
(a key's proof must verify, a record must be signed, a task file must parse), so a request
can fit the schema and still be refused, rightly, with 400."""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance
from webkit import CHEAP, LOOSE, PASSWORD, make_app

from phalanx.apps.web.accounts import Accounts
from phalanx.apps.web.settings import WebSettings
from phalanx.net.crypto import Identity

FOLDER = Path(tempfile.mkdtemp(prefix="phalanx-schemathesis-"))
APP, PORT = make_app(FOLDER, WebSettings(argon2_time_cost=1, argon2_memory_kib=1024,
                                         argon2_parallelism=1, rate=LOOSE))
ACCOUNTS: Accounts = APP.state.web.accounts
ADMIN = ACCOUNTS.create("root", PASSWORD, "admin", Identity.generate().public_key)
assert CHEAP.argon2_memory_kib == 1024
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: object, value: object) -> bytes:
    """Task files as generated text (the schema says a string): sent as UTF-8."""
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else bytes(
        str(value), "utf-8")
_token = [ACCOUNTS.issue_token(ADMIN).secret]


def _bearer() -> dict[str, str]:
    """The admin's token, issued again when a generated DELETE /api/tokens/{id} revoked it."""
    if ACCOUNTS.token_account(_token[0]) is None:
        _token[0] = ACCOUNTS.issue_token(ADMIN).secret
    return {"Authorization": f"Bearer {_token[0]}"}


@schema.parametrize()
@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_generated_request_gets_a_server_error(case: schemathesis.Case) -> None:
    case.call_and_validate(headers=_bearer(), excluded_checks=[positive_data_acceptance])
