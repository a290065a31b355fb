"""Columnar log of everything that happened on the simulated wire and to the nodes.

Kept in typed `array`s (a 1000-node run logs millions of rows) and turned into one polars
DataFrame at the end; written as Parquet it is byte-identical for equal (scenario, seed).
"""

from __future__ import annotations

from array import array
from typing import Literal

import polars as pl

# "membership": the first node to commit a change; "refused": a change a node could not ask for
EVENTS = ("deliver", "drop", "fault", "heal", "crash", "restart", "membership", "refused")
Record = Literal["all", "drops", "none"]


class EventLog:
    def __init__(self, record: Record = "all") -> None:
        self.record = record
        self.time = array("d")
        self.event = array("b")
        self.src = array("i")
        self.dst = array("i")
        self.kind = array("H")  # message kinds are 16-bit (services bring their own)
        self.round = array("i")
        self.size = array("q")
        self.latency = array("d")
        self.detail = array("i")
        self._details: dict[str, int] = {"": 0}
        self.delivered = 0
        self.dropped = 0
        self.dropped_by_reason: dict[str, int] = {}

    def _code(self, text: str) -> int:
        code = self._details.get(text)
        if code is None:
            code = self._details[text] = len(self._details)
        return code

    def _add(self, time: float, event: int, src: int, dst: int, kind: int, round: int,
             size: int, latency: float, detail: str) -> None:
        self.time.append(time)
        self.event.append(event)
        self.src.append(src)
        self.dst.append(dst)
        self.kind.append(kind)
        self.round.append(round)
        self.size.append(size)
        self.latency.append(latency)
        self.detail.append(self._code(detail))

    def deliver(self, time: float, src: int, dst: int, kind: int, round: int, size: int,
                latency: float) -> None:
        self.delivered += 1
        if self.record == "all":
            self._add(time, 0, src, dst, kind, round, size, latency, "")

    def drop(self, time: float, src: int, dst: int, kind: int, round: int, size: int,
             latency: float, reason: str) -> None:
        self.dropped += 1
        self.dropped_by_reason[reason] = self.dropped_by_reason.get(reason, 0) + 1
        if self.record != "none":
            self._add(time, 1, src, dst, kind, round, size, latency, reason)

    def node_event(self, time: float, event: str, detail: str, node: int = -1) -> None:
        """Faults, heals, crashes, restarts and membership changes are always recorded."""
        self._add(time, EVENTS.index(event), node, -1, 0, -1, 0, 0.0, detail)

    def frame(self, kind_names: dict[int, str]) -> pl.DataFrame:
        details = sorted(self._details, key=self._details.__getitem__)
        kinds = ["", *(kind_names[k] for k in sorted(kind_names))]
        codes = {0: 0, **{k: i + 1 for i, k in enumerate(sorted(kind_names))}}
        return pl.DataFrame({
            "time": pl.Series(self.time, dtype=pl.Float64),
            "event": pl.Series(self.event, dtype=pl.Int8).replace_strict(
                dict(enumerate(EVENTS)), return_dtype=pl.Utf8),
            "src": pl.Series(self.src, dtype=pl.Int32),
            "dst": pl.Series(self.dst, dtype=pl.Int32),
            "kind": pl.Series(self.kind, dtype=pl.UInt16).replace_strict(
                {c: kinds[i] for c, i in codes.items()}, return_dtype=pl.Utf8),
            "round": pl.Series(self.round, dtype=pl.Int32),
            "bytes": pl.Series(self.size, dtype=pl.Int64),
            "latency": pl.Series(self.latency, dtype=pl.Float64),
            "detail": pl.Series(self.detail, dtype=pl.Int32).replace_strict(
                dict(enumerate(details)), return_dtype=pl.Utf8),
        })
