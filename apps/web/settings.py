"""How a node's web app behaves: cookies, signup, limits, password hashing. One frozen value
built by the command that serves the app (and by tests, with cheaper hashing)."""

from __future__ import annotations

from dataclasses import dataclass, field

from argon2 import PasswordHasher

from .limits import RateLimits

__all__ = ["WebSettings"]


@dataclass(frozen=True, slots=True)
class WebSettings:
    https: bool = False  # served over TLS: cookies get Secure
    signup_open: bool = True  # anyone may sign up as an annotator
    session_seconds: float = 7 * 24 * 3600
    rate: RateLimits = field(default_factory=RateLimits)
    # any request but a task import: room for the largest record in JSON's worst escaping
    max_body_bytes: int = 512 * 1024
    max_import_bytes: int = 16 * 1024 * 1024  # a task file (JSONL or CSV)
    max_tasks_per_request: int = 100
    # argon2id at OWASP's recommended floor (19 MiB, 2 passes); at most `hashing_slots`
    # hashes at once, so a burst of logins cannot take the machine's memory or cores
    argon2_time_cost: int = 2
    argon2_memory_kib: int = 19 * 1024
    argon2_parallelism: int = 1
    hashing_slots: int = 2

    def hasher(self) -> PasswordHasher:
        return PasswordHasher(time_cost=self.argon2_time_cost,
                              memory_cost=self.argon2_memory_kib,
                              parallelism=self.argon2_parallelism)
