"""The curation service on four members (the tests' message pump): submissions at a node's
door, forwarding, the round's batch, refusals counted, a censoring leader, a restart."""

from __future__ import annotations

from dataclasses import replace

from nodekit import MEMBERS, Kit, Pump, rejections_of

from phalanx.engine.curation.client import AnnotatorClient
from phalanx.engine.curation.messages import (
    CurationRecords,
    decode_batch,
    encode_batch,
    encode_import,
)
from phalanx.engine.curation.service import CurationService, CurationSetup
from phalanx.engine.curation.tasks import Answer, Task, TaskSet
from phalanx.engine.events import LocalAnswer, LocalRequest, Received, Started, answer_of
from phalanx.engine.node import Node, message_set
from phalanx.net.crypto import Identity, sha256
from phalanx.net.envelope import FrameOpener
from phalanx.net.messages import Contribution, Proposal

TASKS = TaskSet([Task.make(id=f"t{i}", kind="single_choice", text=f"item {i}",
                           options=("yes", "no")) for i in range(6)])
SERVICE = CurationService.configured(CurationSetup(TASKS, max_records=8))


class Censor(SERVICE):  # type: ignore[misc,valid-type]
    """A leader that leaves every record out of its proposals (legal, only unhelpful)."""

    def contribution(self) -> bytes:
        return b""


def cluster(kit: Kit, rounds: int = 8, censor: int | None = None) -> Pump:
    opener = FrameOpener(kit.keyring, messages=message_set([SERVICE]))
    nodes = {i: Node(kit.node(i, rounds).config, kit.ids[i], kit.workload, opener,
                     services=[Censor if i == censor else SERVICE]) for i in MEMBERS}
    return Pump(nodes, open=opener)


def desk(pump: Pump, node: int):  # type: ignore[no-untyped-def]
    service = pump.nodes[node].extra_services[0]
    assert isinstance(service, CurationService)
    return service.desk


def submit(pump: Pump, node: int, record: bytes) -> LocalAnswer:
    answer = answer_of(pump.feed(node, LocalRequest("curation", "submit", record, token=7)), 7)
    assert answer is not None
    return answer


def records(annotator: int, count: int) -> list[bytes]:
    client = AnnotatorClient(Identity.derive(5, annotator))
    return [client.sign(TASKS.by_id[f"t{i}"], Answer((i % 2,))).encode() for i in range(count)]


def test_a_submission_is_persisted_acknowledged_forwarded_and_committed() -> None:
    kit = Kit(3)
    pump = cluster(kit)
    pump.start()
    record = records(0, 1)[0]
    actions = pump.feed(1, LocalRequest("curation", "submit", record))
    kinds = [type(a).__name__ for a in actions]
    # durable first, then forwarded, then the answer
    assert kinds.index("Persist") < kinds.index("Broadcast") < kinds.index("Emit")
    answer = answer_of(actions)
    assert answer is not None and answer.ok and len(answer.result) == 32
    pump.run_to_end()
    for i in MEMBERS:
        assert desk(pump, i).committed == 1 and desk(pump, i).pending == 0
        assert answer.result in desk(pump, i).committed_log
    assert len({desk(pump, i).root for i in MEMBERS}) == 1


def test_forged_altered_and_replayed_records_are_refused_and_counted_everywhere() -> None:
    kit = Kit(4)
    pump = cluster(kit)
    pump.start()
    good = records(0, 1)[0]
    assert submit(pump, 0, good).ok
    pump.run()
    bad = AnnotatorClient(Identity.derive(5, 1)).sign(TASKS.by_id["t1"], Answer((0,)))
    forged = replace(bad, body=replace(bad.body, annotator=Identity.derive(5, 2).public_key))
    altered = replace(bad, body=replace(bad.body, choice=(1,)))
    for node in MEMBERS:
        assert submit(pump, node, good).reason == "replay"
        assert submit(pump, node, forged.encode()).reason == "bad_signature"
        assert submit(pump, node, altered.encode()).reason == "bad_signature"
        assert submit(pump, node, b"\x92\x01").reason == "malformed"
        assert desk(pump, node).counts["bad_signature"] == 2
    # a member forwarding them is refused and counted in the node's rejections
    frame = kit.forge(2, CurationRecords(0, (forged.encode(), altered.encode(), good)))
    refused = [r.reason for r in rejections_of(pump.feed(0, Received(frame)))]
    assert refused == ["curation_bad_signature", "curation_bad_signature"]  # replay: benign
    assert pump.nodes[0].rejections["curation_bad_signature"] == 2


def test_a_proposal_carrying_a_bad_batch_is_refused() -> None:
    kit = Kit(5)
    pump = cluster(kit)
    node = pump.nodes[1]
    node.handle(Started({}), 0.0)
    leader = node.leader(0, 0)
    digests = tuple(sha256(bytes([s])) for s in MEMBERS)
    good = records(0, 2)
    signed = AnnotatorClient(Identity.derive(5, 9)).sign(TASKS.by_id["t0"], Answer((0,)))
    altered = replace(signed, body=replace(signed.body, choice=(1,)))  # signature kept
    clash = TaskSet([Task.make(id="t0", kind="single_choice", text="other", options=("a", "b"))])
    for batch, reason in ((encode_batch(good[1:]), "sequence_gap"),
                          (encode_batch([altered.encode()]), "bad_signature"),
                          (encode_batch(good * 2), "replay"),
                          (encode_batch(records(1, 6) + records(2, 3)), "flood"),
                          (encode_batch([], encode_import(clash)), "invalid_import"),
                          (b"\x91\xc0", "malformed")):
        frame = kit.forge(leader, Proposal(0, 0, MEMBERS, digests,
                                           contributions=(Contribution("curation", batch),)))
        assert [r.reason for r in rejections_of(node.handle(Received(frame), 0.0))] == [
            f"proposal_curation_{reason}"]
    frame = kit.forge(leader, Proposal(0, 0, MEMBERS, digests, contributions=(
        Contribution("curation", encode_batch(good)),)))
    assert rejections_of(node.handle(Received(frame), 0.0)) == []


def test_a_censoring_leader_only_delays_records() -> None:
    kit = Kit(6)
    pump = cluster(kit, rounds=10, censor=0)
    pump.start()
    for record in records(3, 4):
        assert submit(pump, 2, record).ok
    pump.run_to_end()
    for i in MEMBERS:
        assert desk(pump, i).committed == 4 and desk(pump, i).pending == 0
    led_by_censor = [r for r in range(10)
                     if decode_proposal_contribution(pump, r)[0] == 0]
    assert led_by_censor and all(decode_proposal_contribution(pump, r)[1] == 0
                                 for r in led_by_censor)


def decode_proposal_contribution(pump: Pump, round: int) -> tuple[int, int]:
    """(leader, records carried) of the committed proposal of `round` (node 1's log)."""
    env = pump.open(pump.disks[1][f"log/{round}"].proposal)  # type: ignore[misc,union-attr]
    carried = [decode_batch(c.data).records for c in env.message.contributions]
    return env.sender, sum(len(r) for r in carried)


def test_a_restarted_member_comes_back_with_its_committed_and_pending_records() -> None:
    kit = Kit(7)
    pump = cluster(kit, rounds=8)
    pump.start()
    first = records(0, 3)
    for record in first:
        assert submit(pump, 3, record).ok
    pump.run(until=lambda: desk(pump, 0).committed == 3 and pump.nodes[3].round >= 3)
    # node 3 acknowledges one more record, but its forward is lost and it crashes
    pump.drop = lambda src, dst, kind, rnd: src == 3
    assert submit(pump, 3, records(1, 1)[0]).ok
    pump.drop = lambda src, dst, kind, rnd: False
    assert desk(pump, 0).pending == 0
    opener = pump.nodes[3].open
    reborn = Node(pump.nodes[3].config, kit.ids[3], kit.workload, opener, services=[SERVICE])
    pump.restart(3, reborn)
    assert desk(pump, 3).committed == 3 and desk(pump, 3).pending == 1
    pump.run_to_end()
    assert {desk(pump, i).committed for i in MEMBERS} == {4}
    assert len({desk(pump, i).root for i in MEMBERS}) == 1



def test_a_task_import_replicates_through_a_round_and_bad_requests_get_a_reason() -> None:
    kit = Kit(8)
    pump = cluster(kit, rounds=6)
    pump.start()
    extra = Task.make(id="new", kind="single_choice", text="fresh", options=("a", "b"))
    imported = encode_import(TaskSet([extra], gold={"new": Answer((1,))}))
    answer = answer_of(pump.feed(2, LocalRequest("curation", "import", imported)))
    assert answer is not None and answer.ok and int.from_bytes(answer.result, "big") == 1
    pump.run_to_end()
    for i in MEMBERS:
        assert desk(pump, i).task(extra.digest) == extra
        assert desk(pump, i).tasks.is_gold(extra.digest)  # gold travels between nodes
    record = AnnotatorClient(Identity.derive(5, 4)).sign(extra, Answer((0,))).encode()
    assert submit(pump, 0, record).ok
    clash = encode_import(TaskSet([Task.make(id="new", kind="rating", text="x",
                                             scale=(1, 3, 1))]))
    for request, reason in ((LocalRequest("curation", "import", clash), "invalid_import"),
                            (LocalRequest("curation", "import", b"\x00" * 9), "invalid_import"),
                            (LocalRequest("curation", "erase", b""), "unknown_op"),
                            (LocalRequest("labels", "submit", record), "unknown_service")):
        refused = answer_of(pump.feed(1, request))
        assert refused is not None and not refused.ok and refused.reason == reason
        assert "\n" not in refused.detail and "\x00" not in refused.detail
