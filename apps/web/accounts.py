"""A node's web accounts, in the web app's own SQLite file: who may log in, with which role,
and which Ed25519 public keys are theirs.

- Passwords: argon2id hashes (argon2-cffi), rehashed on login when the parameters change.
- Sessions (browser) and API tokens (scripts): random secrets handed out once; only their
  SHA-256 is stored (a high-entropy secret needs no slow hash), so a copy of the file lets
  nobody log in. A session also holds the CSRF token its unsafe requests must echo.
- Keys: an account registers one or more public keys (one per browser or client); a key
  belongs to one account at most. Records are signed by keys, so this is what ties an
  annotation to a person on this node; across nodes the key is the identity.

Accounts are per node and never replicated. The first admin is made on the node's machine
with `phalanx web admin create` (signup over the web always makes annotators).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = ["ROLES", "Account", "AccountConflict", "AccountError", "Accounts", "ApiToken", "Session",
           "check_password", "check_username"]

Role = Literal["annotator", "admin"]
ROLES: Final = ("annotator", "admin")
USERNAME = re.compile(r"[a-z0-9][a-z0-9_.-]{2,31}")  # models.USERNAME, anchored
MIN_PASSWORD, MAX_PASSWORD = 10, 256
MAX_KEYS_PER_ACCOUNT = 16
MAX_TOKENS_PER_ACCOUNT = 32
MAX_SESSIONS_PER_ACCOUNT = 32  # the oldest is dropped past this (logins on many browsers)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    id INTEGER PRIMARY KEY, username TEXT UNIQUE NOT NULL, password TEXT NOT NULL,
    role TEXT NOT NULL, suspended INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
    public_key BLOB PRIMARY KEY, account INTEGER NOT NULL REFERENCES accounts(id),
    added REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    secret BLOB PRIMARY KEY, account INTEGER NOT NULL REFERENCES accounts(id),
    csrf TEXT NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    id INTEGER PRIMARY KEY, secret BLOB UNIQUE NOT NULL,
    account INTEGER NOT NULL REFERENCES accounts(id), created REAL NOT NULL);
"""


class AccountError(ValueError):
    """A request about accounts that cannot be met; the message is one line for the client
    and never repeats a password or a secret."""


class AccountConflict(AccountError):
    """A username or key that another account holds already."""


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    username: str
    role: Role
    suspended: bool
    keys: tuple[bytes, ...]  # oldest first; the last is the current one

    @property
    def key(self) -> bytes | None:
        """The key registered last (the current browser's or client's)."""
        return self.keys[-1] if self.keys else None


@dataclass(frozen=True, slots=True)
class Session:
    account: Account
    csrf: str
    secret: str  # the cookie's value (shown to the client once, at login)


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: int
    secret: str  # "phx_" + random: shown once


def check_username(username: str) -> str:
    if not USERNAME.fullmatch(username):
        raise AccountError("username: 3..32 characters of a-z, 0-9, '_', '.', '-', starting "
                           "with a letter or digit")
    return username


def check_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AccountError(f"password: {MIN_PASSWORD}..{MAX_PASSWORD} characters")
    return password


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class Accounts:
    """The accounts file. Safe to call from the app's worker threads (one connection, one
    lock: these are short statements; the slow part, argon2, runs outside the lock)."""

    def __init__(self, path: str | Path, *, hasher: PasswordHasher | None = None,
                 session_seconds: float = 7 * 24 * 3600,
                 clock: Callable[[], float] = time.time) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._hasher = hasher or PasswordHasher()  # argon2id, RFC 9106's low-memory profile
        self._session_seconds = session_seconds
        self._clock = clock
        # A hash to check unknown usernames against, so a login takes as long whether or not
        # the name exists (no user enumeration by timing).
        self._decoy = self._hasher.hash(secrets.token_hex(16))

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # --- accounts -------------------------------------------------------------------------

    def create(self, username: str, password: str, role: Role = "annotator",
               public_key: bytes | None = None) -> Account:
        check_username(username)
        check_password(password)
        if role not in ROLES:
            raise AccountError(f"role: one of {', '.join(ROLES)}")
        hashed = self._hasher.hash(password)
        with self._tx() as db:
            if db.execute("SELECT 1 FROM accounts WHERE username = ?", (username,)).fetchone():
                raise AccountConflict("username: already taken")
            if public_key is not None:
                self._check_key_free(db, public_key, None)
            cur = db.execute("INSERT INTO accounts (username, password, role, created) "
                             "VALUES (?, ?, ?, ?)", (username, hashed, role, self._clock()))
            account_id = int(cur.lastrowid or 0)
            if public_key is not None:
                db.execute("INSERT INTO keys VALUES (?, ?, ?)",
                           (public_key, account_id, self._clock()))
        return self._get(account_id)

    def count(self, role: Role | None = None) -> int:
        with self._lock:
            if role is None:
                return int(self._db.execute("SELECT COUNT(*) FROM accounts").fetchone()[0])
            return int(self._db.execute("SELECT COUNT(*) FROM accounts WHERE role = ?",
                                        (role,)).fetchone()[0])

    def by_name(self, username: str) -> Account | None:
        with self._lock:
            row = self._db.execute("SELECT id FROM accounts WHERE username = ?",
                                   (username,)).fetchone()
        return None if row is None else self._get(int(row[0]))

    def by_key(self, public_key: bytes) -> Account | None:
        with self._lock:
            row = self._db.execute("SELECT account FROM keys WHERE public_key = ?",
                                   (public_key,)).fetchone()
        return None if row is None else self._get(int(row[0]))

    def all(self, limit: int = 1000, offset: int = 0) -> list[Account]:
        with self._lock:
            ids = [int(r[0]) for r in self._db.execute(
                "SELECT id FROM accounts ORDER BY username LIMIT ? OFFSET ?", (limit, offset))]
        return [self._get(i) for i in ids]

    def update(self, username: str, *, role: Role | None = None,
               suspended: bool | None = None) -> Account:
        """Change an account's role or suspension; the last admin cannot stop being one."""
        if role is not None and role not in ROLES:
            raise AccountError(f"role: one of {', '.join(ROLES)}")
        with self._tx() as db:
            row = db.execute("SELECT id, role FROM accounts WHERE username = ?",
                             (username,)).fetchone()
            if row is None:
                raise KeyError(username)
            account_id, current = int(row[0]), row[1]
            demoted = current == "admin" and (role == "annotator" or suspended)
            admins = db.execute("SELECT COUNT(*) FROM accounts WHERE role = 'admin' "
                                "AND suspended = 0").fetchone()[0]
            if demoted and admins <= 1:
                raise AccountError("the last active admin cannot be demoted or suspended")
            if role is not None:
                db.execute("UPDATE accounts SET role = ? WHERE id = ?", (role, account_id))
            if suspended is not None:
                db.execute("UPDATE accounts SET suspended = ? WHERE id = ?",
                           (int(suspended), account_id))
                if suspended:  # out at once, on every browser and script
                    db.execute("DELETE FROM sessions WHERE account = ?", (account_id,))
        return self._get(account_id)

    def _get(self, account_id: int) -> Account:
        with self._lock:
            row = self._db.execute("SELECT username, role, suspended FROM accounts "
                                   "WHERE id = ?", (account_id,)).fetchone()
            keys = tuple(bytes(k) for (k,) in self._db.execute(
                "SELECT public_key FROM keys WHERE account = ? ORDER BY added, rowid",
                (account_id,)))
        if row is None:
            raise KeyError(account_id)
        return Account(account_id, row[0], row[1], bool(row[2]), keys)

    # --- passwords and sessions -----------------------------------------------------------

    def authenticate(self, username: str, password: str) -> Account | None:
        """The account when the password is right, else None (as slow either way)."""
        with self._lock:
            row = self._db.execute("SELECT id, password FROM accounts WHERE username = ?",
                                   (username,)).fetchone()
        stored = row[1] if row else self._decoy
        try:
            self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None:
            return None
        if self._hasher.check_needs_rehash(stored):
            with self._tx() as db:
                db.execute("UPDATE accounts SET password = ? WHERE id = ?",
                           (self._hasher.hash(password), row[0]))
        return self._get(int(row[0]))

    def open_session(self, account: Account) -> Session:
        secret, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = self._clock()
        with self._tx() as db:
            db.execute("DELETE FROM sessions WHERE expires <= ?", (now,))
            db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?)",
                       (_digest(secret), account.id, csrf, now + self._session_seconds))
            db.execute("DELETE FROM sessions WHERE account = ? AND secret NOT IN (SELECT "
                       "secret FROM sessions WHERE account = ? ORDER BY expires DESC LIMIT ?)",
                       (account.id, account.id, MAX_SESSIONS_PER_ACCOUNT))
        return Session(account, csrf, secret)

    def session(self, secret: str) -> Session | None:
        """The live session a cookie names, or None (unknown, expired, or suspended)."""
        with self._lock:
            row = self._db.execute("SELECT account, csrf, expires FROM sessions "
                                   "WHERE secret = ?", (_digest(secret),)).fetchone()
        if row is None or row[2] <= self._clock():
            return None
        account = self._get(int(row[0]))
        return None if account.suspended else Session(account, row[1], secret)

    def close_session(self, secret: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM sessions WHERE secret = ?", (_digest(secret),))

    # --- API tokens -----------------------------------------------------------------------

    def issue_token(self, account: Account) -> ApiToken:
        secret = "phx_" + secrets.token_urlsafe(32)
        with self._tx() as db:
            held = db.execute("SELECT COUNT(*) FROM tokens WHERE account = ?",
                              (account.id,)).fetchone()[0]
            if held >= MAX_TOKENS_PER_ACCOUNT:
                raise AccountError(f"an account holds at most {MAX_TOKENS_PER_ACCOUNT} tokens; "
                                   f"revoke one first")
            cur = db.execute("INSERT INTO tokens (secret, account, created) VALUES (?, ?, ?)",
                             (_digest(secret), account.id, self._clock()))
        return ApiToken(int(cur.lastrowid or 0), secret)

    def token_account(self, secret: str) -> Account | None:
        with self._lock:
            row = self._db.execute("SELECT account FROM tokens WHERE secret = ?",
                                   (_digest(secret),)).fetchone()
        if row is None:
            return None
        account = self._get(int(row[0]))
        return None if account.suspended else account

    def tokens(self, account: Account) -> list[tuple[int, float]]:
        """(id, created) of the account's tokens (their secrets are not kept)."""
        with self._lock:
            return [(int(i), float(c)) for i, c in self._db.execute(
                "SELECT id, created FROM tokens WHERE account = ? ORDER BY id", (account.id,))]

    def revoke_token(self, account: Account, token_id: int) -> bool:
        """Whether the account had that token (another account's token is not theirs)."""
        with self._tx() as db:
            cur = db.execute("DELETE FROM tokens WHERE id = ? AND account = ?",
                             (token_id, account.id))
        return cur.rowcount > 0

    # --- keys -----------------------------------------------------------------------------

    def add_key(self, account: Account, public_key: bytes) -> Account:
        """Register a key to the account (a new browser): it becomes the current one."""
        with self._tx() as db:
            self._check_key_free(db, public_key, account.id)
            held = db.execute("SELECT COUNT(*) FROM keys WHERE account = ?",
                              (account.id,)).fetchone()[0]
            if held >= MAX_KEYS_PER_ACCOUNT:
                raise AccountError(f"an account registers at most {MAX_KEYS_PER_ACCOUNT} keys")
            db.execute("INSERT OR REPLACE INTO keys VALUES (?, ?, ?)",
                       (public_key, account.id, self._clock()))
        return self._get(account.id)

    @staticmethod
    def _check_key_free(db: sqlite3.Connection, public_key: bytes, owner: int | None) -> None:
        if len(public_key) != 32:
            raise AccountError("public_key: 32 bytes (64 hex digits) of an Ed25519 key")
        row = db.execute("SELECT account FROM keys WHERE public_key = ?",
                         (public_key,)).fetchone()
        if row is not None and row[0] != owner:
            raise AccountConflict("public_key: registered to another account")

    def close(self) -> None:
        with self._lock:
            self._db.close()
