"""Curation on real nodes over TCP: annotation nodes and full nodes take signed records over
HTTP (the Python client), every record a node acknowledged is committed by the rounds, and
every node ends on one snapshot root and one set of labels; forged, altered and replayed
records are refused by every node and counted in its status; a task import at one node
reaches every node; a partition between the two annotation nodes heals to the same records,
labels and root as the simulation of the same submissions; a `kill -9` of an annotation node
loses no acknowledged record."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import yaml
from curationkit import (
    PASSWORD,
    SCENARIOS,
    Partition,
    annotator,
    crowd_records,
    curation_cluster,
    curation_data,
    curation_of,
    curation_scenario,
    node_at,
)
from realkit import free_ports

from phalanx.apps.node import RealNode
from phalanx.apps.node_settings import node_identity, write_members
from phalanx.apps.web.accounts import Accounts
from phalanx.apps.web.client import ApiError, WebClient
from phalanx.apps.web.tls import self_signed
from phalanx.engine.curation.records import (
    Annotation,
    SignedAnnotation,
    decode_annotation,
    signed_message,
)
from phalanx.net.codec import encode_record
from phalanx.net.crypto import Identity, sha256
from phalanx.scenario.schema import parse_scenario
from phalanx.sim.world import SimWorld


async def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def started(nodes: list[RealNode]) -> list[asyncio.Task[None]]:
    tasks = [asyncio.create_task(node.run()) for node in nodes]
    await until(lambda: all(n.web is None or n.web.server.started for n in nodes)
                and all(n.early is None for n in nodes), 60, "every node started")
    return tasks


async def stopped(nodes: list[RealNode], tasks: list[asyncio.Task[None]]) -> None:
    for node in nodes:
        node._stop("the test is over")
    await asyncio.gather(*tasks)


def url(node: RealNode) -> str:
    assert node.web is not None
    return node.web.url.rstrip("/")


def client(node: RealNode, who: Identity) -> WebClient:
    """The Python client of `node`'s web app, trusting its certificate when it has one."""
    assert node.web is not None
    tls = node.web.tls
    return WebClient(url(node), who, verify=str(tls.cert) if tls else True)


async def status_of(node: RealNode) -> dict[str, Any]:
    assert node.web is not None
    tls = node.web.tls
    trust = ssl.create_default_context(cafile=str(tls.cert)) if tls else True
    async with httpx.AsyncClient(verify=trust) as http:
        return dict((await http.get(url(node) + "/status")).json())


def snapshot(node: RealNode) -> tuple[str, int, bytes]:
    desk = curation_of(node)
    return desk.root.hex(), desk.committed, desk.export_labels("jsonl")


def committed_everywhere(nodes: list[RealNode], digests: set[bytes]) -> bool:
    return all(digests <= set(curation_of(n).committed_log.digests()) for n in nodes)


# ---- submissions at both annotation nodes; hostile records at every node ------------------

def forged_for(owner: Identity, task: bytes, seq: int, prev: bytes) -> bytes:
    """A record naming `owner` as annotator, signed by someone else's key."""
    body = Annotation(task=task, kind="single_choice", annotator=owner.public_key, seq=seq,
                      prev=prev, choice=(1,), text="", client_time_ms=0)
    return SignedAnnotation(body, Identity.generate().sign(
        signed_message(sha256(encode_record(body))))).encode()


def altered_from(record: bytes) -> bytes:
    """A genuine record whose answer is changed after it was signed."""
    body = decode_annotation(record).body
    other = Annotation(task=body.task, kind=body.kind, annotator=body.annotator, seq=body.seq,
                       prev=body.prev, choice=((body.choice[0] + 1) % 3,), text=body.text,
                       client_time_ms=body.client_time_ms)
    signature = decode_annotation(record).signature
    return SignedAnnotation(other, signature).encode()


async def hostile(node: RealNode, mallory: Identity, own: bytes) -> dict[str, int]:
    """Mallory (an account holding her key) sends her own committed record again, one
    forged in her name and one altered after signing: the reasons the node answers."""
    reasons: dict[str, int] = {}
    async with client(node, mallory) as web:
        await web.signup("mallory", PASSWORD)
        body = decode_annotation(own).body
        for record in (own, forged_for(mallory, body.task, body.seq + 1, sha256(b"x")),
                       altered_from(own)):
            response = await web.http.post("/api/submit", json={
                "record": base64.b64encode(record).decode()},
                headers={"X-CSRF-Token": web.csrf or ""})
            assert response.status_code in (400, 409), response.text
            reason = response.json()["reason"]
            reasons[reason] = reasons.get(reason, 0) + 1
    return reasons


async def _cluster_run(folder: Path) -> None:
    scenario = curation_scenario()
    # node 5 serves over TLS with its operator's certificate (off loopback a node makes a
    # self-signed one); the clients check it against that certificate
    tls = self_signed(folder / "operator", "127.0.0.1")
    nodes = curation_cluster(folder, scenario, web=range(scenario.nodes.count), settings={
        5: {"tls_cert": tls.cert, "tls_key": tls.key}})
    tasks = await started(nodes)
    try:
        assert url(nodes[5]).startswith("https://") and url(nodes[4]).startswith("http://")
        crowd = crowd_records(scenario, [1, 2, 3], per=5)
        acked: set[bytes] = set()
        for a, node in ((1, nodes[4]), (2, nodes[5]), (3, nodes[5])):
            async with client(node, annotator(a)) as web:
                await web.signup(f"annotator{a}", PASSWORD)
                for record in crowd[a]:
                    receipt = await web.submit(record)
                    acked.add(bytes.fromhex(receipt.digest))
        assert len(acked) == 15
        await until(lambda: committed_everywhere(nodes, acked), 30, "15 records everywhere")
        await until(lambda: len({snapshot(n) for n in nodes}) == 1, 10, "one snapshot")
        root, count, labels = snapshot(nodes[0])
        assert count == 15 and labels.count(b"\n") == 7  # tasks 1-7 have answers
        assert len({repr(curation_of(n).labels()) for n in nodes}) == 1

        mallory = annotator(99)
        (own,) = crowd_records(scenario, [99], per=1)[99]
        async with client(nodes[0], mallory) as web:
            await web.signup("mallory", PASSWORD)
            await web.submit(own)
        await until(lambda: committed_everywhere(nodes, {decode_annotation(own).digest}), 30,
                    "mallory's record everywhere")
        for node in nodes[1:]:
            assert await hostile(node, mallory, own) == {"replay": 1, "bad_signature": 2}
        for node in nodes[1:]:
            status = await status_of(node)
            assert status["curation"]["refusals"] == {"bad_signature": 2, "replay": 1}
            assert status["curation"]["root"] == curation_of(nodes[0]).root.hex()
            assert status["health"]["status"] in ("ok", "degraded")
        # an admin's task import at annotation node 4 reaches every node through a round
        Accounts(folder / "node-4" / "web.sqlite").create("root", PASSWORD, "admin")
        async with client(nodes[4], Identity.generate()) as admin:
            await admin.login("root", PASSWORD)
            reply = await admin.http.post(
                "/api/admin/tasks", params={"format": "jsonl"},
                content=(SCENARIOS / "annotation-demo.jsonl").read_bytes(),
                headers={"X-CSRF-Token": admin.csrf or ""})
            assert reply.status_code == 200, reply.text
        added = reply.json()["added"]
        assert added > 0
        await until(lambda: {len(curation_of(n).tasks) for n in nodes} == {24 + added}, 30,
                    "the imported tasks everywhere")
        # nothing refused reached a round: every node still holds the 16 genuine records
        assert {curation_of(n).committed for n in nodes} == {16}
        assert root != curation_of(nodes[0]).root.hex()
    finally:
        await stopped(nodes, tasks)


def test_records_from_both_annotation_nodes_commit_everywhere_and_forgeries_are_refused(
        tmp_path: Path) -> None:
    asyncio.run(asyncio.wait_for(_cluster_run(tmp_path), 120))


# ---- a partition between the two annotation nodes, and the same in simulation -------------

SPLIT, HEAL = 1.5, 2.5  # simulated seconds: node 5 is cut off from every other node between


def simulated(data: dict[str, Any], before: dict[int, list[bytes]],
              during: dict[int, list[bytes]]) -> list[tuple[str, int, bytes]]:
    """The same scenario simulated (fewer rounds, and the cut as a scheduled partition): the
    same records submitted at the same annotation nodes before and during the cut."""
    data = {**data, "training": {**data["training"], "rounds": 80}}
    data["faults"] = [{"kind": "partition", "at": SPLIT, "duration": HEAL - SPLIT,
                       "groups": [[5]]}]
    world = SimWorld(parse_scenario(data))
    for when, batch in ((0.2, before), (SPLIT + 0.2, during)):
        for a, records in batch.items():
            for record in records:
                world.call_at(when, world.submit, 4 + a % 2, record)
    world.run()
    desks = [world.desk(i) for i in range(data["nodes"]["count"])]
    return [(d.root.hex(), d.committed, d.export_labels("jsonl")) for d in desks if d]


async def _partition_run(folder: Path, data: dict[str, Any], before: dict[int, list[bytes]],
                         during: dict[int, list[bytes]]) -> list[tuple[str, int, bytes]]:
    scenario = parse_scenario(data)
    nodes = curation_cluster(folder, scenario, web=(4, 5))
    cut = Partition(nodes, {5})
    tasks = await started(nodes)
    try:
        clients = {}
        for a in (1, 2):
            clients[a] = WebClient(url(nodes[4 + a % 2]), annotator(a))
            await clients[a].signup(f"annotator{a}", PASSWORD)

        async def send(batch: dict[int, list[bytes]]) -> set[bytes]:
            return {bytes.fromhex((await clients[a].submit(r)).digest)
                    for a, records in batch.items() for r in records}

        first = await send(before)
        await until(lambda: committed_everywhere(nodes, first), 30, "the first records")
        cut.active = True
        mine, theirs = (set(), set())
        for a, records in during.items():
            (theirs if 4 + a % 2 == 5 else mine).update(await send({a: records}))
        await until(lambda: committed_everywhere(nodes[:5], mine), 30, "node 4's side")
        await asyncio.sleep(1.0)  # a few rounds: node 5's records cannot reach a member
        assert not any(theirs & set(curation_of(n).committed_log.digests()) for n in nodes)
        assert curation_of(nodes[5]).pending == len(theirs) and cut.dropped > 0
        cut.active = False
        await until(lambda: committed_everywhere(nodes, first | mine | theirs), 30, "the heal")
        await until(lambda: len({snapshot(n) for n in nodes}) == 1, 10, "one snapshot")
        for client in clients.values():
            await client.close()
        return [snapshot(n) for n in nodes]
    finally:
        await stopped(nodes, tasks)


def test_a_partition_between_annotation_nodes_heals_to_the_simulated_records_and_labels(
        tmp_path: Path) -> None:
    data = curation_data()
    scenario = parse_scenario(data)
    before = crowd_records(scenario, [1, 2], per=3)
    chains = crowd_records(scenario, [1, 2], per=7)
    during = {a: chains[a][3:] for a in (1, 2)}  # the same chains, continued in the cut
    real = asyncio.run(asyncio.wait_for(_partition_run(tmp_path, data, before, during), 120))
    sim = simulated(data, before, during)
    assert len(set(real)) == 1 and len(set(sim)) == 1
    assert real[0] == sim[0]  # records, labels (with their confidence) and snapshot root
    assert real[0][1] == 14


# ---- kill -9 of an annotation node in the middle of a stream of submissions ---------------

def spawn_annotation_node(folder: Path) -> subprocess.Popen[bytes]:
    log = (folder / "node-4" / "node.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "phalanx.apps.node", "--real", "--scenario",
         str(folder / "scenario.yaml"), "--config", str(folder / "node-4" / "node.json"),
         "--members", str(folder / "members.json")],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


async def answering(base: str, timeout: float) -> None:
    async with httpx.AsyncClient() as http:
        async def up() -> bool:
            try:
                return (await http.get(base + "/status")).status_code == 200
            except httpx.HTTPError:
                return False
        deadline = time.monotonic() + timeout
        while not await up():
            assert time.monotonic() < deadline, "the annotation node does not answer"
            await asyncio.sleep(0.2)


async def stream(base: str, who: Identity, acked: list[bytes], stop: asyncio.Event,
                 login: bool) -> None:
    """One annotator submitting one record after another until `stop` or a lost link;
    each digest the node acknowledged goes to `acked`."""
    async with WebClient(base, who, timeout=5) as client:
        await (client.login if login else client.signup)("streamer", PASSWORD)
        while not stop.is_set():
            tasks = await client.tasks(5)
            if not tasks:
                return
            for task in tasks:
                receipt = await client.answer(task, task.options[0])
                acked.append(bytes.fromhex(receipt.digest))


async def _kill_run(folder: Path) -> tuple[int, int]:
    data = curation_data(annotation=1, tasks=200)
    scenario = parse_scenario(data)
    (folder / "scenario.yaml").write_text(yaml.safe_dump(data))
    count = scenario.nodes.count
    p2p, web = free_ports(count), free_ports(count)
    keys = {i: node_identity(folder / f"node-{i}") for i in range(count)}
    roster = {i: (keys[i].public_key, ("127.0.0.1", p2p[i])) for i in range(count)}
    members = {i: roster[i] for i in scenario.members}
    write_members(folder / "members.json", members, {4: roster[4]})
    (folder / "node-4" / "node.json").write_text(json.dumps({
        "node_id": 4, "node_type": "annotation", "p2p_port": p2p[4], "web_port": web[4],
        "data_dir": str(folder / "node-4")}))
    nodes = [node_at(folder, scenario, i, (members, {4: roster[4]}), p2p[i], web[i],
                     serve=False) for i in scenario.members]
    tasks = await started(nodes)
    base = f"http://127.0.0.1:{web[4]}"
    proc = spawn_annotation_node(folder)
    try:
        await answering(base, 60)
        acked: list[bytes] = []
        stop = asyncio.Event()
        streaming = asyncio.create_task(stream(base, annotator(7), acked, stop, login=False))
        await until(lambda: len(acked) >= 15 or streaming.done(), 30, "15 acknowledged")
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: the client's next call fails
        proc.wait()
        with pytest.raises((httpx.HTTPError, ApiError)):
            await asyncio.wait_for(streaming, 10)
        before = len(acked)
        proc = spawn_annotation_node(folder)
        await answering(base, 60)
        stop = asyncio.Event()
        resumed = asyncio.create_task(stream(base, annotator(7), acked, stop, login=True))
        await until(lambda: len(acked) >= before + 5, 30, "5 more acknowledged")
        stop.set()
        await asyncio.wait_for(resumed, 10)
        await until(lambda: committed_everywhere(nodes, set(acked)), 30, "all committed")
        # the restarted node caught up with every round it missed: it holds them committed
        # too, and perhaps one record more (written before the kill, never answered), which
        # the members committed as well
        committed = curation_of(nodes[0]).committed
        assert committed in (len(acked), len(acked) + 1)
        async with httpx.AsyncClient() as http:
            for _ in range(150):
                seen = (await http.get(base + "/status")).json()["curation"]
                if seen["committed"] == committed:
                    break
                await asyncio.sleep(0.2)
        assert (seen["committed"], seen["pending"]) == (committed, 0)
        assert seen["root"] == curation_of(nodes[0]).root.hex()
        return before, len(acked)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        await stopped(nodes, tasks)


def test_kill_9_of_an_annotation_node_mid_stream_loses_no_acknowledged_record(
        tmp_path: Path) -> None:
    before, after = asyncio.run(asyncio.wait_for(_kill_run(tmp_path), 150))
    assert before >= 15 and after >= before + 5


def test_an_annotation_node_cut_off_from_the_start_catches_up_with_the_committed_log() -> None:
    """Node 5 is cut off before the first round commits and comes back ~30 rounds later: it
    catches up by the round records (a curation run adopts no checkpoint, which carries no
    records), so its desk holds what those rounds committed (a restarted annotation node on
    a real cluster meets the same: see the kill -9 test)."""
    data = curation_data()
    data = {**data, "training": {**data["training"], "rounds": 80}}
    data["faults"] = [{"kind": "partition", "at": 0.5, "duration": 2.5, "groups": [[5]]}]
    world = SimWorld(parse_scenario(data))
    for records in crowd_records(parse_scenario(data), [1, 2], per=3).values():
        for record in records:
            world.call_at(0.2, world.submit, 4, record)
    world.run()
    desks = [world.desk(i) for i in range(6)]
    assert {(d.committed, d.root) for d in desks if d is not None} == {(6, desks[0].root)}


# ---- a Byzantine annotation node (curation.byzantine) on a real cluster -------------------

async def _forging_run(folder: Path) -> tuple[dict[str, int], int, int]:
    data = curation_data()
    data["curation"]["byzantine"] = [{"nodes": [5], "behaviour": "forge"}]
    scenario = parse_scenario(data)
    nodes = curation_cluster(folder, scenario, web=(4, 5))
    tasks = await started(nodes)
    try:
        chain = crowd_records(scenario, [1], per=3)[1]
        async with client(nodes[5], annotator(1)) as web:
            await web.signup("annotator1", PASSWORD)
            acked = {bytes.fromhex((await web.submit(r)).digest) for r in chain}
        # node 5 acknowledged them and forwarded forgeries instead: the members refuse them
        await until(lambda: all(nodes[m].node.rejections.get("curation_bad_signature", 0) >= 6
                                for m in scenario.members), 30, "the forgeries refused")
        assert not any(acked & set(curation_of(n).committed_log.digests()) for n in nodes)
        # the annotator (as the client does once its patience runs out) resubmits elsewhere
        async with client(nodes[4], annotator(1)) as web:
            await web.signup("annotator1", PASSWORD)
            for record in chain:
                await web.submit(record)
        await until(lambda: committed_everywhere(nodes, acked), 30, "the genuine records")
        status = await status_of(nodes[5])
        refused = {k: v for k, v in nodes[0].node.rejections.items() if k.startswith("curation")}
        return refused, curation_of(nodes[0]).committed, int(status["byzantine"])
    finally:
        await stopped(nodes, tasks)


def test_a_forging_annotation_node_gets_nothing_forged_committed(tmp_path: Path) -> None:
    refused, committed, byzantine = asyncio.run(asyncio.wait_for(_forging_run(tmp_path), 90))
    assert committed == 3 and byzantine == 1
    assert refused["curation_bad_signature"] >= 6  # an altered and a forged one per record
