"""A node's HTTP endpoint against slow and hostile clients (apps/http_guard.py): a slowloris
of 5,000 half-sent requests against a real node of a real cluster, the refusals one by one
(deadlines, the body cap, answers that never echo the request), the accept loop out of file
descriptors, and the settings that set the limits."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import math
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from realkit import free_ports, real_nodes
from rich.console import Console

from phalanx.apps.http_guard import HttpLimits
from phalanx.apps.node import RealNode
from phalanx.apps.node_settings import load_node_file
from phalanx.apps.status import EmbeddedServer, status_server
from phalanx.net.crypto import Identity
from phalanx.net.handshake import DialerHandshake
from phalanx.net.logthrottle import ThrottleFilter
from phalanx.net.tcp import HEADER, pack_frame
from phalanx.scenario.schema import ScenarioError, parse_scenario

ATTACKER = Path(__file__).with_name("slowloris.py")
SECRET = b"SECRET-0123456789"  # what no answer may contain
ATTACK_SECONDS = 12.0  # at least: past the 10 s header timeout


def exchange(port: int, request: bytes, timeout: float = 10.0) -> bytes:
    """Send `request` raw; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):  # refused mid-send
            s.sendall(request)
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := s.recv(65536):
                answer += chunk
    return answer


def post(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nhost: x\r\ncontent-type: application/json"
            b"\r\nconnection: close\r\n" + extra + b"content-length: %d\r\n\r\n" % len(body)
            + body)


def check_refusals(port: int) -> None:
    """What no client may get back: its own input."""
    huge = exchange(port, b"POST /membership HTTP/1.1\r\nhost: x\r\ncontent-type: "
                          b"application/json\r\ncontent-length: 200000000\r\n\r\n" + SECRET * 4000)
    assert huge.startswith(b"HTTP/1.1 413") and b"request body too large" in huge, huge[:200]
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(SECRET * 1000), SECRET * 1000) for _ in range(8))
    chunked = exchange(port, b"POST /membership HTTP/1.1\r\nhost: x\r\ntransfer-encoding: "
                             b"chunked\r\n\r\n" + chunks + b"0\r\n\r\n")
    assert chunked.startswith(b"HTTP/1.1 413"), chunked[:200]
    wrong = exchange(port, post("/membership", json.dumps({"change": SECRET.decode()}).encode()))
    assert wrong.startswith(b"HTTP/1.1 422") and b"body.change" in wrong, wrong
    extra = exchange(port, post("/membership", json.dumps({"change": "join", SECRET.decode(): 1}).encode()))
    assert extra.startswith(b"HTTP/1.1 422") and b"does not take" in extra, extra
    garbled = exchange(port, post("/membership", b"{" + SECRET))
    assert garbled.startswith(b"HTTP/1.1 422"), garbled
    missing = exchange(port, b"GET /" + SECRET + b" HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    assert missing.startswith(b"HTTP/1.1 404"), missing
    for answer in (huge, chunked, wrong, extra, garbled, missing):
        assert SECRET not in answer and len(answer) < 1000, answer


# ---- the slowloris against a real node -------------------------------------------------------


SCENARIO = {  # quickstart, with rounds enough to outlast the test
    "name": "slowloris", "seed": 7, "nodes": {"count": 4},
    "workload": {"kind": "mlp", "features": 16, "classes": 4, "hidden": 32},
    "training": {"rounds": 5000, "batch": 64},
    "real": {"round_timeout": 0.3, "view_timeout": 1.5, "start_wait": 30.0}}


def p2p_handshake(folder: Path, port: int, as_node: int, to: int) -> None:
    """Authenticate to node `to`'s p2p listener as member `as_node` (with its key): the
    listener accepted us and answered the dialer's hello with its own, signed."""
    keyring = {i: Identity.load(folder / f"node-{i}" / "node.key").public_key
               for i in (as_node, to)}
    hs = DialerHandshake(Identity.load(folder / f"node-{as_node}" / "node.key"), as_node,
                         keyring, expect=to, encrypt=False)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(pack_frame(hs.hello))
        reader = s.makefile("rb")
        records = []
        for _ in range(2):
            (size,) = HEADER.unpack(reader.read(HEADER.size))
            records.append(reader.read(size))
        signature, _session = hs.on_reply(*records)  # raises unless node `to` signed it
        s.sendall(pack_frame(signature))


def get_status(url: str) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=10) as response:
        status = json.loads(response.read())
    return time.perf_counter() - start, status


async def until(check: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.perf_counter() + timeout
    while not check():
        assert time.perf_counter() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.05)


class Polls:
    """/status asked every 0.2 s from another thread while the attack lasts: the latencies."""

    def __init__(self, url: str) -> None:
        self.url, self.latencies = url, list[float]()
        self.last: dict[str, Any] = {}
        self.task = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            try:
                latency, self.last = await asyncio.to_thread(get_status, self.url)
            except OSError:  # refused, reset or timed out: counts as unanswered
                latency = math.inf
            self.latencies.append(latency)
            await asyncio.sleep(0.2)


async def slowloris(folder: Path) -> dict[str, Any]:
    web = free_ports(1)[0]
    nodes = real_nodes(folder, parse_scenario(SCENARIO), web_port=web)
    runs = [asyncio.create_task(node.run()) for node in nodes]
    target = nodes[0]
    attacker = None
    try:
        await until(lambda: target.node.round >= 3, 60, "round 3")
        attacker = await asyncio.create_subprocess_exec(
            sys.executable, str(ATTACKER), str(web), "5000", "120",
            stdout=asyncio.subprocess.PIPE)
        assert attacker.stdout is not None
        opened = json.loads(await attacker.stdout.readline())  # all 5,000 half-sent
        started, round_then = time.perf_counter(), target.node.round
        polls = Polls(f"http://127.0.0.1:{web}/status")
        # a member stops; while it is away its key dials the attacked node's p2p listener and
        # completes the handshake; then the member comes back and catches up
        nodes[3].stop.set()
        await runs[3]
        await asyncio.to_thread(p2p_handshake, folder, target.transport.address[1], 3, 0)
        await asyncio.to_thread(check_refusals, web)
        nodes[3] = back = RealNode(nodes[3].plan, Console(file=io.StringIO()))
        runs[3] = asyncio.create_task(back.run())
        left_at = target.node.round
        await until(lambda: back.node.round > left_at + 5
                    and target.transport.heard_ago().get(3, 99.0) < 1.0, 60, "node 3 back")
        while len(polls.latencies) < 20 or time.perf_counter() - started < ATTACK_SECONDS:
            await asyncio.sleep(0.1)
        polls.task.cancel()
        seconds, committed = time.perf_counter() - started, target.node.round - round_then
        attacker.kill()
        last = (await attacker.stdout.read()).splitlines()[-1]
        return {"opened": opened, "last": json.loads(last), "seconds": seconds,
                "committed": committed, "latencies": polls.latencies, "http": polls.last["http"],
                "console": target.out.file.getvalue()}
    finally:
        if attacker is not None and attacker.returncode is None:
            attacker.kill()
            await attacker.wait()
        for node in nodes:
            node.stop.set()
        await asyncio.gather(*runs, return_exceptions=True)


def test_a_node_under_slowloris_keeps_committing_and_serving(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """5,000 half-sent requests against a node's endpoint, from another process: the node
    keeps committing, its p2p listener keeps accepting, /status answers, the log stays small."""
    logged = io.StringIO()  # what the node's log would get: its warnings and errors
    handler = logging.StreamHandler(logged)
    handler.setLevel(logging.WARNING)
    logging.getLogger().addHandler(handler)
    try:
        found = asyncio.run(slowloris(tmp_path))
    finally:
        logging.getLogger().removeHandler(handler)
    out, err = capfd.readouterr()
    said = out + err + found["console"] + logged.getvalue()
    http, latencies = found["http"], found["latencies"]
    with capfd.disabled():
        print(f"\nslowloris: {found['opened']} when all were opened, {found['last']} at the "
              f"end; node 0 committed {found['committed']} rounds in "
              f"{found['seconds']:.1f} s under attack; /status slowest {max(latencies):.2f} s "
              f"of {len(latencies)}; http {http}; {len(said)} bytes logged:\n{said}")
    assert found["opened"]["opened"] == 5000 and found["last"]["sent"] >= 5000
    assert found["committed"] >= 5
    assert max(latencies) < 5.0
    assert http["open"] <= http["max_connections"] == 256
    # every connection beyond the cap was closed one of three ways: evicted for a newer one,
    # refused, or (on a slow machine, the attack lasting longer) timed out on its headers
    assert http["evicted"] + http["refused"] + http["header_timeout"] >= 5000 - 256, http
    assert "Traceback" not in said and len(said) < 16 * 1024, said[-3000:]


# ---- the refusals, one by one, on an endpoint in this process --------------------------------


async def _serving(limits: HttpLimits) -> tuple[EmbeddedServer, asyncio.Task[None], int]:
    server = status_server(lambda: {"epoch": 1}, "127.0.0.1", 0, lambda op: None, limits)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    return server, task, server.servers[0].sockets[0].getsockname()[1]


def test_slow_oversized_and_excess_requests_get_short_answers() -> None:
    limits = HttpLimits(max_connections=8, header_timeout=0.5, body_timeout=0.5,
                        max_body_bytes=1000)

    async def run() -> dict:
        server, task, port = await _serving(limits)

        def call(request: bytes) -> tuple[bytes, float]:
            start = time.perf_counter()
            return exchange(port, request), time.perf_counter() - start

        try:
            await asyncio.to_thread(check_refusals, port)
            slow_head, head_s = await asyncio.to_thread(call, b"GET /status HTTP/1.1\r\nhost")
            slow_body, body_s = await asyncio.to_thread(
                call, b"POST /membership HTTP/1.1\r\nhost: x\r\ncontent-length: 99\r\n\r\n{")
            silent, silent_s = await asyncio.to_thread(call, b"")
            assert slow_head.startswith(b"HTTP/1.1 408") and b"headers" in slow_head
            assert slow_body.startswith(b"HTTP/1.1 408") and b"body" in slow_body
            assert silent == b""  # nothing of a request came: closed without an answer
            assert all(0.4 < s < 3 for s in (head_s, body_s, silent_s)), (head_s, body_s)
            # 20 connections that never finish their headers, against a cap of 8: the oldest
            # make room, and a client that sends its request at once is answered
            crowd = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
            for s in crowd:
                s.sendall(b"GET /status HTTP/1.1\r\n")
            await asyncio.sleep(0.2)
            held = len(server.guard.open)
            ok, _ = await asyncio.to_thread(
                call, b"GET /status HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            assert ok.startswith(b"HTTP/1.1 200") and b'"epoch":1' in ok, ok
            assert held <= 8
            for s in crowd:
                s.close()
            return dict(server.guard.counts)
        finally:
            server.should_exit = True
            await task

    counts = asyncio.run(run())
    assert counts["body_too_large"] == 2 and counts["header_timeout"] >= 2
    assert counts["body_timeout"] == 1 and counts["evicted"] >= 12


def test_out_of_file_descriptors_the_listeners_log_one_line_per_interval(
        tmp_path: Path) -> None:
    """A node whose open-file limit is far below its HTTP cap (what the settings refuse) runs
    out of descriptors: asyncio's accept loop pauses each listener a second per failure, and
    each failure is one line per 10 s, not a traceback per attempt."""
    script = tmp_path / "starved.py"
    script.write_text(textwrap.dedent("""
        import asyncio, resource, sys
        from phalanx.apps.http_guard import HttpLimits
        from phalanx.apps.status import status_server
        from phalanx.net.crypto import Identity
        from phalanx.net.tcp import TcpTransport

        async def main():
            me = Identity.generate()
            p2p = TcpTransport(0, {0: ("127.0.0.1", 0)}, lambda f: None, identity=me,
                               keyring={0: me.public_key})
            await p2p.start()
            web = status_server(lambda: {}, "127.0.0.1", 0, limits=HttpLimits(10_000))
            serving = asyncio.create_task(web.serve())
            while not web.started:
                await asyncio.sleep(0.01)
            resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
            print(web.servers[0].sockets[0].getsockname()[1], p2p.address[1], flush=True)
            await asyncio.sleep(float(sys.argv[1]))
            web.should_exit = True
            await serving
            await p2p.close()

        asyncio.run(main())
    """))
    node = subprocess.Popen([sys.executable, str(script), "4"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ)
    assert node.stdout is not None
    web_port, p2p_port = map(int, node.stdout.readline().split())
    held = []
    for _ in range(150):  # the node has some 50 descriptors to spare: it runs out
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", web_port))
        held.append(s)
    time.sleep(1.5)
    for _ in range(20):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", p2p_port))
        held.append(s)
    _, err = node.communicate(timeout=30)
    for s in held:
        s.close()
    lines = err.splitlines()
    failures = [line for line in lines if "accept() failed" in line]
    assert "Traceback" not in err and len(lines) <= 4, err[-3000:]
    assert {f"127.0.0.1:{web_port}" in line for line in failures} == {True, False}, err
    assert all("Too many open files" in line for line in failures), err


# ---- the throttle and the settings -----------------------------------------------------------


def test_repeated_failures_are_one_line_per_interval_with_a_count() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("phalanx.test.throttle")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.propagate = False
    throttle = ThrottleFilter(interval=0.2)
    logger.addFilter(throttle)

    async def flood() -> None:
        for i in range(1000):
            try:
                raise OSError(24, "Too many open files")
            except OSError:
                logger.exception("accept failed on attempt %d", i)
        logger.warning("another kind")
        await asyncio.sleep(0.5)  # the interval ends: the repeats are summed up
        logger.exception("accept failed on attempt %d", 1000, exc_info=OSError(24, "x"))

    try:
        asyncio.run(flood())
    finally:
        logger.removeHandler(handler)
        logger.removeFilter(throttle)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "accept failed on attempt 0: OSError: [Errno 24] Too many open files"
    assert lines[1] == "another kind"
    assert lines[2].endswith("(repeated 999 times in the last 0.2 s)"), lines
    assert len(lines) == 4 and "Traceback" not in stream.getvalue(), lines


@pytest.mark.parametrize(("settings", "message"), [
    ({"http_max_connections": 0}, "http_max_connections: Input should be greater than or equal"),
    ({"http_max_connections": 10**9}, "http_max_connections: at most"),
    ({"http_header_timeout": -1}, "http_header_timeout: Input should be greater than 0"),
    ({"http_body_timeout": "soon"}, "http_body_timeout: Input should be a valid number"),
    ({"http_max_body_bytes": 10**12}, "http_max_body_bytes: Input should be less than"),
])
def test_http_limits_are_checked_in_one_line(settings: dict, message: str) -> None:
    with pytest.raises(ScenarioError) as err:
        load_node_file(None, settings)
    assert message in str(err.value) and "\n" not in str(err.value)
    defaults = load_node_file(None, {})
    assert (defaults.http_max_connections, defaults.http_header_timeout,
            defaults.http_body_timeout, defaults.http_max_body_bytes) == (256, 10, 30, 65536)
