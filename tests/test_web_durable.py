"""Group commit (apps/web/durable.py): a submission is acknowledged only once written, many
concurrent ones share a transaction, a failed write acknowledges nothing and loses nothing;
and the load generator's lean connection (apps/web/wire.py) refuses what is not HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner
from webkit import Annotator, make_app, task_set

from phalanx.apps.cli import app as cli
from phalanx.apps.web.durable import GroupCommit
from phalanx.apps.web.port import LocalPort
from phalanx.apps.web.wire import WireConnection, WireError
from phalanx.engine.curation.client import AnnotatorClient
from phalanx.engine.curation.desk import CurationDesk
from phalanx.engine.curation.records import RecordRefused, decode_annotation
from phalanx.engine.curation.store import SqliteStore
from phalanx.net.crypto import Identity


class FlakyStore(SqliteStore):
    """A SQLite store whose next `fail` appends raise, as a full disk would."""

    fail = 0

    def append(self, batch: Sequence[tuple[bytes, bytes]]) -> None:
        if self.fail:
            self.fail -= 1
            raise OSError("disk full")
        super().append(batch)


def records(n: int, annotators: int = 5) -> list[bytes]:
    tasks = list(task_set(n=40).tasks.values())
    clients = [AnnotatorClient(Identity.derive(21, i)) for i in range(annotators)]
    return [clients[i % annotators].sign(tasks[i // annotators], tasks[0].answer_from("dog"))
            .encode() for i in range(n)]


def stored(path: Path) -> set[bytes]:
    store = SqliteStore(path)
    try:
        return {decode_annotation(r).digest for r in store.records()}
    finally:
        store.close()


def local(path: Path, inner: SqliteStore) -> tuple[LocalPort, GroupCommit]:
    group = GroupCommit(inner)
    return LocalPort(CurationDesk(task_set(n=40), store=group), group=group), group


def test_concurrent_submissions_share_a_transaction_and_are_durable_when_answered(
        tmp_path: Path) -> None:
    path = tmp_path / "records.sqlite"
    port, group = local(path, SqliteStore(path, any_thread=True))
    batch = records(60)

    async def submit_all() -> list[bytes]:
        return await asyncio.gather(*(port.submit(r) for r in batch))

    digests = asyncio.run(submit_all())
    assert digests == [decode_annotation(r).digest for r in batch]
    assert group.queued == 0
    assert 1 <= group.flushes < len(batch) // 2  # one fsync answered many submissions
    assert stored(path) == set(digests)  # read by another connection: on disk already
    port.desk.close()


def test_a_failed_write_acknowledges_nothing_and_the_retry_finds_it_durable(
        tmp_path: Path) -> None:
    path = tmp_path / "records.sqlite"
    inner = FlakyStore(path, any_thread=True)
    port, group = local(path, inner)
    first, second = records(2)

    async def scenario() -> None:
        inner.fail = 1
        with pytest.raises(OSError):
            await port.submit(first)
        assert stored(path) == set() and group.queued == 1  # held, not written, kept queued
        with pytest.raises(RecordRefused) as again:  # the client's retry: written first
            await port.submit(first)
        assert again.value.reason == "replay"
        assert stored(path) == {decode_annotation(first).digest} and group.queued == 0
        assert await port.submit(second) == decode_annotation(second).digest

    asyncio.run(scenario())
    port.desk.close()
    assert stored(path) == {decode_annotation(r).digest for r in (first, second)}


def test_the_submit_route_answers_503_while_the_store_fails(tmp_path: Path) -> None:
    path = tmp_path / "records.sqlite"
    inner = FlakyStore(path, any_thread=True)
    port, _ = local(path, inner)
    app, _ = make_app(tmp_path, port=port)
    with TestClient(app) as http:
        ada = Annotator.signup(app, "ada", client=http)
        tasks, signer = ada.fetch(1)
        record = signer.sign(tasks[0], tasks[0].answer_from("cat")).encode()
        inner.fail = 1
        failed = ada.submit_bytes(record)
        assert failed.status_code == 503 and "try again" in failed.json()["detail"]
        assert ada.submit_bytes(record).status_code == 409  # held, and now written
    assert stored(path) == {decode_annotation(record).digest}
    port.desk.close()


def test_the_lean_connection_refuses_what_is_not_http(tmp_path: Path) -> None:
    async def serve(reply: bytes) -> tuple[int, Exception | tuple[int, object]]:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(reply)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, WireConnection(f"http://127.0.0.1:{port}", {}, timeout=5) as wire:
            try:
                return port, await wire.request("GET", "/api/tasks")
            except WireError as e:
                return port, e

    ok = b'HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{"a": 1}'
    assert asyncio.run(serve(ok))[1] == (200, {"a": 1})
    for reply in (b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                  b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                  b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\ncut short"):
        result = asyncio.run(serve(reply))[1]
        assert isinstance(result, WireError) and "\n" not in str(result)
    with pytest.raises(ValueError, match="http://host:port"):
        WireConnection("https://example.org", {})


def test_bench_web_reports_throughput_and_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "web.json"
    result = CliRunner().invoke(cli, ["bench", "web", "--clients", "4", "--seconds", "1.5",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["acknowledged"] > 0 and report["submissions_per_second"] > 0
    assert report["found_in_store"] == report["acknowledged"] and report["lost"] == 0
    assert report["errors"] == {} and "group commit" in report["store"]
