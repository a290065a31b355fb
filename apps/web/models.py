"""The web API's request and response bodies: the OpenAPI schema built from these is the
contract the pages, the Python client and schemathesis work against.

Requests forbid unknown fields and bound every string, so a body is rejected (422, naming the
field, never echoing it) before a route runs. Keys and digests travel as lowercase hex,
records as standard base64 of their exact bytes (engine/curation/records.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from phalanx.engine.curation.records import MAX_RECORD_BYTES

from .accounts import MAX_PASSWORD, MIN_PASSWORD

USERNAME = r"^[a-z0-9][a-z0-9_.-]{2,31}$"
HEX32 = r"^[0-9a-f]{64}$"
HEX64 = r"^[0-9a-f]{128}$"
Role = Literal["annotator", "admin"]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(BaseModel):
    """Every 4xx: what was wrong, never what was sent."""

    detail: str
    reason: str | None = Field(None, description="for a refused record: why, one of the "
                                                 "curation log's refusal reasons")


# The answers every route may give besides its own: the body cap (413) and the rate limits
# (429) stand in front of all of them.
PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem} for code in (400, 401, 403, 413, 422, 429)}


# --- accounts ---------------------------------------------------------------------------------


class KeyRegistration(Request):
    public_key: str = Field(pattern=HEX32, description="the annotator's Ed25519 public key")
    proof: str = Field(pattern=HEX64, description="Ed25519 signature by that key over "
                       "b'phalanx/key/v1' + the username in UTF-8: the key is yours")


class Signup(Request):
    username: str = Field(pattern=USERNAME, description="3..32 of a-z 0-9 _ . - (starting "
                                                        "with a letter or digit)")
    password: str = Field(min_length=MIN_PASSWORD, max_length=MAX_PASSWORD)
    public_key: str | None = Field(None, pattern=HEX32)
    proof: str | None = Field(None, pattern=HEX64, description="required with public_key")


class Login(Request):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class Authenticated(BaseModel):
    username: str
    role: Role
    csrf: str = Field(description="send back as X-CSRF-Token on every POST, PUT and DELETE "
                                  "made with the session cookie")


class Me(Authenticated):
    public_key: str | None = Field(description="the current key (registered last)")
    keys: list[str]
    suspended: bool
    csrf: str | None = Field(None, description="the session's CSRF token (null with a bearer "
                                               "token)")  # type: ignore[assignment]


class IssuedToken(BaseModel):
    id: int
    token: str = Field(description="shown once: only its hash is kept")


class TokenInfo(BaseModel):
    id: int
    created: float


class TokenList(BaseModel):
    tokens: list[TokenInfo]


# --- annotating -------------------------------------------------------------------------------


class TaskView(BaseModel):
    """A task as an annotator sees it: never its gold answer, nor whether it has one."""

    digest: str
    id: str
    kind: Literal["single_choice", "multi_label", "rating", "pairwise", "free_text"]
    text: str
    options: list[str]
    completions: list[str]
    scale: list[float]
    max_length: int


class Head(BaseModel):
    seq: int = Field(description="the next record's seq")
    prev: str = Field(description="digest the next record links to (64 zeros at seq 0)")


class Tasks(BaseModel):
    tasks: list[TaskView]
    head: Head


class Submission(Request):
    record: str = Field(min_length=1, max_length=(MAX_RECORD_BYTES * 4) // 3 + 4,
                        description="the signed record's bytes, standard base64")


class Accepted(BaseModel):
    digest: str
    status: Literal["pending", "committed"]


class AnnotatorStats(BaseModel):
    public_key: str
    username: str | None = Field(description="on this node; null for an annotator who signed "
                                             "up elsewhere")
    committed: int
    pending: int
    gold_seen: int
    gold_correct: int
    weight: float = Field(description="reputation weight in [0, 1] the labels use")
    reward: float
    suspended: bool
    flags: list[str]


class Ranked(AnnotatorStats):
    rank: int


class Platform(BaseModel):
    round: int
    snapshot_root: str = Field(description="ordered root of the committed records' digests")
    tasks: int
    gold: int
    records: int
    pending: int
    annotators: int
    labelled: int
    mean_confidence: float | None
    alpha: float | None = Field(description="Krippendorff's alpha over committed answers")


class Stats(BaseModel):
    me: AnnotatorStats | None = Field(description="null until the account registers a key")
    rank: int | None
    platform: Platform


class Leaderboard(BaseModel):
    round: int
    rows: list[Ranked]


# --- admin ------------------------------------------------------------------------------------


class Imported(BaseModel):
    added: int
    total: int


class RoundPoint(BaseModel):
    round: int
    records: int
    alpha: float | None


class AdminStats(BaseModel):
    platform: Platform
    history: list[RoundPoint]
    annotators: list[AnnotatorStats]
    refusals: dict[str, int] = Field(description="records refused, by reason (this node)")


class AccountView(BaseModel):
    username: str
    role: Role
    suspended: bool
    keys: list[str]
    stats: AnnotatorStats | None


class AccountList(BaseModel):
    accounts: list[AccountView]


class AccountChange(Request):
    suspended: bool | None = None
    role: Role | None = None


class Health(BaseModel):
    status: Literal["ok", "degraded", "stalled"]
    mode: str = Field(description="'local': one desk committing its own records, no cluster; "
                                  "'node': a cluster node's desk")
    detail: str
    round: int
    committed: int
    pending: int
    seconds_since_commit: float | None
    refusals: dict[str, int]
    http_refused: int = Field(description="requests refused by the rate limits")
