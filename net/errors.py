"""The single exception type of the wire layer: everything a peer can send us wrong maps to one
of a fixed set of reasons, so drivers can count and log rejections without parsing text."""

from __future__ import annotations

REASONS: tuple[str, ...] = (
    "too_large",
    "malformed",
    "bad_version",
    "unknown_kind",
    "unknown_sender",
    "bad_digest",
    "bad_signature",
    "bad_payload",
    "round_mismatch",
    "replay",
)


class ReasonedError(Exception):
    """An error whose `reason` is one of its class's fixed `REASONS` (counted and logged without
    parsing text) and whose `detail` says what was wrong."""

    REASONS: tuple[str, ...] = ()

    def __init__(self, reason: str, detail: str = "") -> None:
        # A plain check rather than `assert`, so a typo cannot slip through under `python -O`.
        if reason not in self.REASONS:
            raise ValueError(f"unknown {type(self).__name__} reason {reason!r}; "
                             f"allowed: {self.REASONS}")
        super().__init__(reason, detail)  # args kept so the error pickles across processes
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


class DecodeError(ReasonedError):
    """A frame or payload was rejected; `reason` is one of REASONS, `detail` says what was wrong."""

    REASONS = REASONS
