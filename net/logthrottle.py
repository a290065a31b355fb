"""One log line per kind of failure per interval, with a count of the repeats held back: what
a flood of identical failures (a listener out of file descriptors, thousands of clients that
time out) writes to a node's log instead of a line, or a traceback, per attempt.

- `Throttle` decides, per key, whether a line goes out now;
- `ThrottleFilter`, on a logger, applies it to that logger's records: the kind is the logger,
  level, message template (its first line) and exception type; a line that goes out is one
  line (an OSError's traceback says nothing the errno does not, so it is dropped; other
  exceptions, bugs, keep theirs, once per interval); repeats are counted and summed up in one
  line when the interval ends (when there is an event loop to wake us then; else on the
  kind's next line);
- `throttle_accept_errors` installs, on an event loop, an exception handler that turns
  asyncio's per-attempt "socket.accept() out of system resource" report (EMFILE, ENFILE,
  ENOBUFS, ENOMEM: asyncio itself then pauses that listener for a second) into such a line
  (and asyncio's retry of a listener closed meanwhile, at shutdown, into an info line rather
  than a traceback).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable
from typing import Any

INTERVAL = 10.0  # seconds: at most one line per kind of failure this often
MAX_KINDS = 1024  # keys remembered at once; expired ones are forgotten first
HELD = "throttle_held"  # LogRecord attribute: the repeats a summary line stands for

accept_log = logging.getLogger("phalanx.net.accept")


class Throttle:
    """Per key, a window of `interval` seconds that opens with a line let through; what comes
    within it is held back and counted, and `summarize(key, held, context)` is called when it
    ends (on the running event loop; without one, the kind's next line carries the count).
    A summary opens a new window, so a steady flood gives one line per interval."""

    def __init__(self, interval: float = INTERVAL,
                 summarize: Callable[[Hashable, int, Any], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not interval > 0:
            raise ValueError("interval must be > 0")
        self.interval, self.summarize, self.clock = interval, summarize, clock
        self._windows: dict[Hashable, list[float]] = {}  # key -> [window end, held]
        self._pending: set[Hashable] = set()  # kinds with a summary scheduled

    def admit(self, key: Hashable, context: Any = None) -> int | None:
        """None: hold this one back (counted). Otherwise it goes out, and the number held back
        since the last line of this kind (not yet summed up) is returned."""
        now = self.clock()
        window = self._windows.get(key)
        if window is not None and now < window[0]:
            window[1] += 1
            self._summarize_later(key, context)
            return None
        held = int(window[1]) if window is not None else 0
        self._forget_expired(now)
        self._windows[key] = [now + self.interval, 0]
        return held

    def _summarize_later(self, key: Hashable, context: Any) -> None:
        if self.summarize is None or key in self._pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop in this thread
            return
        self._pending.add(key)
        self._schedule(loop, key, context)

    def _schedule(self, loop: asyncio.AbstractEventLoop, key: Hashable, context: Any) -> None:
        end = self._windows[key][0]
        loop.call_later(max(0.0, end - self.clock()), self._window_ended, loop, key, context,
                        end)

    def _window_ended(self, loop: asyncio.AbstractEventLoop, key: Hashable, context: Any,
                      end: float) -> None:
        window = self._windows.get(key)
        if window is not None and window[0] != end:
            # a line of this kind went out first (the timer ran late) and reported those
            # repeats; what was held since is summed up when the new window ends
            self._schedule(loop, key, context)
            return
        self._pending.discard(key)
        if window is None or not window[1]:
            return
        held = int(window[1])
        self._windows[key] = [self.clock() + self.interval, 0]
        assert self.summarize is not None
        self.summarize(key, held, context)

    def _forget_expired(self, now: float) -> None:
        if len(self._windows) >= MAX_KINDS:
            self._windows = {k: w for k, w in self._windows.items()
                             if w[0] > now or k in self._pending}
            while len(self._windows) >= MAX_KINDS:  # all live: drop the oldest
                del self._windows[next(iter(self._windows))]

    def held_note(self, held: int) -> str:
        """What a line that goes out says of the repeats held back before it."""
        return f" ({held} more like it were held back)" if held else ""

    def summary_note(self, held: int) -> str:
        return f" (repeated {held} times in the last {self.interval:g} s)"


class ThrottleFilter(logging.Filter):
    def __init__(self, interval: float = INTERVAL) -> None:
        super().__init__()
        self.throttle = Throttle(interval, self._summary)

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, HELD, None) is not None:  # our own summary line
            return True
        exc = record.exc_info[1] if record.exc_info else None
        # a message's first line: asyncio's reports name the task or socket on the next lines
        first = str(record.msg).split("\n", 1)[0]
        key = (record.name, record.levelno, first, type(exc).__name__)
        held = self.throttle.admit(key, record)
        if held is None:
            return False
        _one_line(record, self.throttle.held_note(held))
        return True

    def _summary(self, key: Hashable, held: int, record: logging.LogRecord) -> None:
        summary = logging.makeLogRecord({**record.__dict__, "created": time.time(),
                                         HELD: held})
        _one_line(summary, self.throttle.summary_note(held), drop_traceback=True)
        logging.getLogger(record.name).handle(summary)


def _one_line(record: logging.LogRecord, note: str, drop_traceback: bool = False) -> None:
    """Rewrite `record` in place: its message on one line, the exception named when its
    traceback is dropped, then `note` (on the repeats)."""
    lines = record.getMessage().splitlines()
    message = lines[0] if lines else ""
    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, OSError) or drop_traceback:
        if exc is not None:
            message += f": {type(exc).__name__}: {exc}"
        record.exc_info, record.exc_text = None, None
    record.msg, record.args = message + note, None


def throttle_logger(logger: logging.Logger, interval: float = INTERVAL) -> ThrottleFilter:
    """The logger's ThrottleFilter, added once."""
    for existing in logger.filters:
        if isinstance(existing, ThrottleFilter):
            return existing
    added = ThrottleFilter(interval)
    logger.addFilter(added)
    return added


def throttle_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Install (once per loop) the exception handler described in the module's doc; every
    other report goes on to the handler that was there before (asyncio's by default, whose
    logger is throttled too)."""
    previous = loop.get_exception_handler()
    if getattr(previous, "throttles_accept", False):
        return
    throttle_logger(accept_log)
    throttle_logger(logging.getLogger("asyncio"))

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and "accept" in str(context.get("message", "")):
            # formatted here: each listener and errno is a kind of its own
            accept_log.warning(f"listener {_sockname(context.get('socket'))}: accept() failed: "
                               f"{exc.strerror or exc}; asyncio pauses it 1 s and retries")
            return
        if _resumes_closed_listener(context):
            accept_log.info("a listener closed while paused after failed accepts; asyncio's "
                            "retry found nothing to resume")
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    handler.throttles_accept = True  # type: ignore[attr-defined]
    loop.set_exception_handler(handler)


def _resumes_closed_listener(context: dict[str, Any]) -> bool:
    """asyncio's delayed retry of a paused listener that was closed meanwhile (at shutdown):
    it raises on the closed socket's descriptor, -1, harmlessly."""
    callback = getattr(context.get("handle"), "_callback", None)
    return getattr(callback, "__name__", "") == "_start_serving" and isinstance(
        context.get("exception"), ValueError)


def _sockname(sock: Any) -> str:
    try:
        host, port = sock.getsockname()[:2]
        return f"{host}:{port}"
    except (AttributeError, OSError, TypeError, ValueError):
        return "?"
