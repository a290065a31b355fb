"""A real node's log: the story an operator reads, told with Python `logging`.

`NodeStory` turns what the node already reports into log lines: its start (members, listen
address, store, rounds on disk), its peers coming and going (polled from the transport),
suspicions, view changes, exclusions, membership changes, state sync (catch-up by records, a
checkpoint installed), one line per `every` committed rounds (round, loss, model hash prefix,
wall time per round) and its shutdown. Every line carries an `event` name and the node's id;
`configure_logging` writes them as text or as JSON lines, with UTC timestamps.

The log grows with what happens, not with traffic or time: commits are summarized, and
anything that can repeat (a flapping peer, a suspicion, view changes, rejected frames) is
logged at most a few times per `interval` per subject, with the count of what was held back; a state
that changed meanwhile is logged once the interval allows (`tick`), so the last line about a
peer is always its current state.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import math
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from phalanx.engine.events import (
    Excluded,
    Finished,
    MembershipChanged,
    Metric,
    Rejected,
    RoundCommitted,
    Suspicion,
    ViewChanged,
)
from phalanx.net.messages import RoundRecord

LOGGER = "phalanx.node"
LEVELS = ("debug", "info", "warning", "error")
_HANDLER_MARK = "_phalanx_node_handler"  # handlers we installed, replaced on a reconfigure


def _utc(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


class TextFormatter(logging.Formatter):
    """`<UTC time> <LEVEL> node <id> <event>: <message>`; other records (the transport's)
    `<UTC time> <LEVEL> <logger>: <message>`."""

    def format(self, record: logging.LogRecord) -> str:
        story = getattr(record, "story", None)
        where = f"node {story['node']} {story['event']}" if story else record.name
        line = f"{_utc(record.created)} {record.levelname:<7} {where}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the story's fields
    (event, node, and what the event is about: round, peer, ...)."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {"time": _utc(record.created), "level": record.levelname.lower(),
                                "logger": record.name, "message": record.getMessage()}
        data.update(getattr(record, "story", None) or {})
        if record.exc_info:
            data["error"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def configure_logging(level: str = "info", json_lines: bool = False,
                      stream: TextIO | None = sys.stderr, file: Path | None = None,
                      max_bytes: int = 20 * 1024 * 1024, backups: int = 3) -> None:
    """Send phalanx's loggers (the node's story, the transport's warnings) to `stream` and/or
    `file` (rotated at `max_bytes`, `backups` old files kept). Replaces what an earlier call
    installed, so a process (or a test) may call it again."""
    root = logging.getLogger("phalanx")
    for handler in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level.upper())
    root.propagate = False  # one copy of each line, whatever the application's root logger does
    formatter = JsonFormatter() if json_lines else TextFormatter()
    handlers: list[logging.Handler] = []
    if stream is not None:
        handlers.append(logging.StreamHandler(stream))
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.handlers.RotatingFileHandler(
            file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"))
    for handler in handlers:
        setattr(handler, _HANDLER_MARK, True)
        handler.setFormatter(formatter)
        root.addHandler(handler)


def record_loss(record: RoundRecord, open_frame: Callable[[bytes], Any]) -> float | None:
    """The train loss a committed round reported (the mean of its gradients' losses, as the
    node computes it when it commits), read back from the stored record; None if none of its
    gradients opens."""
    losses = []
    for frame in record.gradients:
        try:
            losses.append(float(open_frame(frame).message.loss))
        except Exception:  # a frame this keyring cannot open tells us nothing
            continue
    return float(np.mean(losses)) if losses else None


class Throttle:
    """At most `burst` lines per key in any `interval` seconds; what was held back is counted
    and handed to the next line let through. Keys are bounded sets (peers, reasons, kinds)."""

    def __init__(self, interval: float, burst: int = 4) -> None:
        self.interval, self.burst = interval, burst
        self.sent: dict[Hashable, deque[float]] = {}
        self.held: Counter[Hashable] = Counter()

    def ready(self, key: Hashable, now: float) -> bool:
        times = self.sent.get(key)
        return not times or len(times) < self.burst or now - times[0] >= self.interval

    def admit(self, key: Hashable, now: float) -> int | None:
        """The count held back since the last line (the caller logs now), or None (hold)."""
        if not self.ready(key, now):
            self.held[key] += 1
            return None
        self.sent.setdefault(key, deque(maxlen=self.burst)).append(now)
        return self.held.pop(key, 0)


@dataclass
class _Toggle:
    """A subject's on/off state: what was last logged, what holds now, and since when."""

    logged: bool | None = None
    now: bool | None = None
    since: float = 0.0
    detail: str = ""
    flips: int = 0  # changes since the last line
    at: float = 0.0  # when the last line was logged


_CAUGHT_UP = 5  # live commits in a row that end a catch-up (records often trickle in
# between the first live ones)


@dataclass
class _CatchUp:
    """A node catching up by state sync: since when, from which round (or checkpoint), how
    far."""

    since: float
    first: int
    checkpoint: bool = False  # it began by installing a checkpoint of round `first`
    quiet: bool = False  # held back (a node that keeps falling behind): no lines
    last: int = -1  # the last round fetched by sync
    at: float = 0.0  # when it was applied
    synced: int = 0
    live: int = 0  # live commits since it

    def add(self, m: RoundCommitted, now: float) -> None:
        if m.via_sync:
            self.last, self.synced, self.live, self.at = m.round, self.synced + 1, 0, now
        else:
            self.live += 1


def _held(count: int) -> str:
    return f" ({count} more since the last line)" if count else ""


class NodeStory:
    """The log lines of one node (see the module's doc). `base()` reads the node's log base
    (above 0 once it installed a peer's checkpoint)."""

    def __init__(self, node_id: int, every: int = 100, interval: float = 60.0,
                 base: Callable[[], int] = lambda: 0,
                 clock: Callable[[], float] = time.time) -> None:
        self.node, self.every, self.base, self.clock = node_id, every, base, clock
        self.log = logging.getLogger(LOGGER)
        self.throttle = Throttle(interval)
        self.peers: dict[int, _Toggle] = {}
        self.suspects: dict[int, _Toggle] = {}
        self.refused: Counter[str] = Counter()  # transport refusals already reported
        self.last_round = -1
        self.last_base = 0
        self.mark: tuple[float, int] | None = None  # (time, round) of the last commit line
        self.sync: _CatchUp | None = None
        self.committed = 0  # rounds this process committed (live or by sync)

    def say(self, level: int, event: str, message: str, **fields: Any) -> None:
        self.log.log(level, message, extra={"story": {"event": event, "node": self.node,
                                                      **fields}})

    # ---- start and stop -------------------------------------------------------------------

    def started(self, *, role: str, members: Iterable[int], listen: str, store: Path,
                rounds: int, base: int, model_hash: str, last_loss: float | None) -> None:
        self.last_round, self.last_base = rounds - 1, base
        self.mark = (self.clock(), rounds - 1)
        members = list(members)
        if rounds:
            loss = f"{last_loss:.4f}" if last_loss is not None else "not recorded"
            disk = (f"restart with {rounds} committed rounds on disk (rounds {base}..{rounds - 1}"
                    f"{', from a checkpoint' if base else ''}; model {model_hash[:12]}, last "
                    f"train loss {loss})")
        else:
            disk = "first start: no rounds on disk"
        self.say(logging.INFO, "start", f"{role}, members {members}, listening on {listen}, "
                 f"store {store}; {disk}", role=role, members=members, listen=listen,
                 store=str(store), rounds_on_disk=rounds, log_base=base,
                 model_hash=model_hash)

    def waited(self, up: int, peers: int, seconds: float) -> None:
        self.say(logging.WARNING, "peers", f"{up} of {peers} peers reachable after "
                 f"{seconds:g} s; starting with them", up=up, peers=peers)

    def stopped(self, reason: str, round: int, model_hash: str) -> None:
        self._sync_done(self.clock())
        self.say(logging.INFO, "stop", f"{reason}: at round {round}, model {model_hash[:12]}, "
                 f"{self.committed} rounds committed by this process", reason=reason,
                 round=round, committed=self.committed, model_hash=model_hash)

    # ---- metrics ------------------------------------------------------------------------------

    def metric(self, metric: Metric) -> None:
        now = self.clock()
        match metric:
            case RoundCommitted():
                self._committed(metric, now)
            case Finished(rounds=rounds, model_hash=h):
                self._sync_done(now)
                self.say(logging.INFO, "finished", f"all {rounds} rounds committed, model "
                         f"{h.hex()[:12]}", rounds=rounds, model_hash=h.hex())
            case ViewChanged(round=rnd, view=view):
                if (held := self.throttle.admit("view", now)) is not None:
                    self.say(logging.INFO, "view", f"round {rnd} moved to view {view}: no "
                             f"commit in time under the previous leader{_held(held)}",
                             round=rnd, view=view, held=held)
            case Suspicion(peer=peer, round=rnd, suspected=on, reason=reason):
                self._toggle(self.suspects, peer, on, now,
                             f"at round {rnd} ({reason})")
            case Excluded(offender=offender, round=rnd):
                self.say(logging.WARNING, "excluded", f"peer {offender} excluded at round "
                         f"{rnd}: it signed two conflicting messages (proof kept in the log)",
                         peer=offender, round=rnd)
            case MembershipChanged(round=rnd, op=op, subject=subject, members=members):
                self.say(logging.INFO, "membership", f"node {subject} {op}s from round {rnd}: "
                         f"members {list(members)}", round=rnd, op=op, subject=subject,
                         members=list(members))
            case Rejected(reason=reason, sender=sender):
                if (held := self.throttle.admit(("rejected", reason), now)) is not None:
                    source = f"node {sender}" if sender is not None else "an unknown sender"
                    self.say(logging.INFO, "rejected", f"a message from {source} refused: "
                             f"{reason}{_held(held)}", reason=reason, sender=sender, held=held)

    def _committed(self, m: RoundCommitted, now: float) -> None:
        self.committed += 1
        base = self.base()
        if m.via_sync and base != self.last_base:
            self.say(logging.INFO, "checkpoint", f"installed the state after round {m.round} "
                     f"that f + 1 peers offered alike (commit certificate checked); the log "
                     f"now starts at round {base}", round=m.round, log_base=base)
            self.last_base = base
            self.mark = (now, m.round)
            self.sync = self.sync or _CatchUp(now, m.round, checkpoint=True)
        elif m.via_sync and self.sync is None:
            held = self.throttle.admit("sync", now)
            self.sync = _CatchUp(now, m.round, quiet=held is None)
            if held is not None:
                self.say(logging.INFO, "sync", f"catching up from round {m.round}: fetching "
                         f"certified rounds from peers{_held(held)}", round=m.round, held=held)
        if self.sync is not None:
            self.sync.add(m, now)
            if self.sync.live >= _CAUGHT_UP:
                self._sync_done(now)
        self.last_round = m.round
        if (m.round + 1) % self.every == 0:
            self._progress(m, now)

    def _progress(self, m: RoundCommitted, now: float) -> None:
        then, last = self.mark if self.mark is not None else (now, m.round)
        rounds = m.round - last
        pace = f", {1000 * (now - then) / rounds:.1f} ms/round over {rounds} rounds" \
            if rounds > 0 else ""
        loss = f"{m.train_loss:.4f}" if math.isfinite(m.train_loss) else "-"
        self.say(logging.INFO, "commit", f"round {m.round} committed (view {m.view}, "
                 f"{m.contributors} gradients{', by state sync' if m.via_sync else ''}): "
                 f"train loss {loss}, model {m.model_hash.hex()[:12]}{pace}", round=m.round,
                 view=m.view, contributors=m.contributors, train_loss=m.train_loss,
                 model_hash=m.model_hash.hex(), via_sync=m.via_sync,
                 seconds_per_round=(now - then) / rounds if rounds > 0 else None)
        self.mark = (now, m.round)

    def _sync_done(self, now: float) -> None:
        c, self.sync = self.sync, None
        if c is None or c.quiet:
            return
        how = (f"from a checkpoint of round {c.first}, then {c.synced - 1} rounds by state sync"
               if c.checkpoint else f"{c.synced} rounds by state sync from round {c.first}")
        self.say(logging.INFO, "sync", f"caught up at round {c.last}: {how}, in "
                 f"{c.at - c.since:.1f} s", first=c.first, last=c.last, rounds=c.synced,
                 checkpoint=c.checkpoint, seconds=c.at - c.since)

    # ---- peers (what the transport knows) -------------------------------------------------

    def peer_states(self, states: Mapping[int, bool]) -> None:
        """The transport's word on each peer (True: a link up and heard from)."""
        now = self.clock()
        for peer, up in states.items():
            self._toggle(self.peers, peer, up, now, "")

    def refusals(self, counts: Mapping[str, int]) -> None:
        """The transport's refusals so far (a peer's frames it would not take), by reason."""
        now = self.clock()
        for reason, total in counts.items():
            new = total - self.refused[reason]
            if new > 0 and self.throttle.ready(("refused", reason), now):
                self.throttle.admit(("refused", reason), now)
                self.refused[reason] = total
                self.say(logging.WARNING, "refused", f"the transport refused {new} "
                         f"connections or records: {reason}", reason=reason, count=new)

    def tick(self) -> None:
        """Log the states that changed while their subject was held back."""
        now = self.clock()
        for table in (self.peers, self.suspects):
            for key, t in table.items():
                if t.now != t.logged:
                    self._say_toggle(table, key, t, now)

    def _toggle(self, table: dict[int, _Toggle], key: int, on: bool, now: float,
                detail: str) -> None:
        t = table.setdefault(key, _Toggle())
        if t.now == on:
            return
        t.flips += t.now is not None
        t.now, t.since, t.detail = on, now, detail
        self._say_toggle(table, key, t, now)

    def _say_toggle(self, table: dict[int, _Toggle], key: int, t: _Toggle, now: float) -> None:
        kind = "peer" if table is self.peers else "suspect"
        if kind == "peer" and t.logged is None and not t.now:
            return  # not reached yet at start: the first news of a peer is that it is up
        if not self.throttle.ready((kind, key), now):
            return  # `tick` says it once the interval allows
        self.throttle.admit((kind, key), now)
        more = f" (changed {t.flips} times since the last line)" if t.flips > 1 else ""
        was, then = t.logged, t.at
        t.logged, t.flips, t.at = t.now, 0, now
        if kind == "peer":
            if t.now:
                text = ("connected" if was is None else
                        f"back up: link restored after {now - then:.1f} s down")
                self.say(logging.INFO, "peer", f"peer {key} {text}{more}", peer=key, up=True)
            else:
                self.say(logging.WARNING, "peer", f"peer {key} down: link lost{more}",
                         peer=key, up=False)
        elif t.now:
            self.say(logging.WARNING, "suspect", f"suspecting peer {key} is down {t.detail}"
                     f"{more}", peer=key, suspected=True)
        else:
            self.say(logging.INFO, "suspect", f"peer {key} no longer suspected {t.detail}"
                     f"{more}", peer=key, suspected=False)
