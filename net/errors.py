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


class DecodeError(Exception):
    """A frame or payload was rejected; `reason` is one of REASONS, `detail` says what was wrong."""

    def __init__(self, reason: str, detail: str = "") -> None:
        # A plain check rather than `assert`, so a typo cannot slip through under `python -O`.
        if reason not in REASONS:
            raise ValueError(f"unknown DecodeError reason {reason!r}; allowed: {REASONS}")
        super().__init__(reason, detail)  # args kept so the error pickles across processes
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"
