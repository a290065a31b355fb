"""The same RLHF run in simulation and over real TCP: a batch crowd (`curation.crowd.delivery:
batch`) fixes the signed records in advance, the first honest member submits them when it
starts, and so both worlds commit the same curation log, take the same preference set and
train the same reward model and policy (scenarios/rlhf_short.yaml). Also: the batch crowd's records, the
curation service taking them (a restart skips them quietly), and the scenario's checks."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from nodekit import MEMBERS, Kit, Pump
from test_cli import invoke, one_error_line
from typer.testing import CliRunner

import phalanx
from phalanx.apps.cli import app
from phalanx.engine.curation.crowd import CrowdSpec, SimulatedCrowd
from phalanx.engine.curation.crowd_records import annotator_identity, crowd_records
from phalanx.engine.curation.desk import CurationDesk
from phalanx.engine.curation.messages import CurationRecords
from phalanx.engine.curation.records import decode_annotation
from phalanx.engine.curation.service import CurationService, CurationSetup
from phalanx.engine.curation.synthetic import synthetic_tasks
from phalanx.engine.node import Node, message_set
from phalanx.engine.rng import RngStreams
from phalanx.net.envelope import FrameOpener
from phalanx.scenario.build import curation_setup, rlhf_setup, workload_for
from phalanx.scenario.schema import load_scenario

SHORT = Path(phalanx.__file__).resolve().parent / "scenarios" / "rlhf_short.yaml"


def run(*args: str) -> None:
    done = CliRunner().invoke(app, ["run", str(SHORT), *args, "-q"])
    assert done.exit_code == 0, done.output


def summary(folder: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((folder / "summary.json").read_text())


def test_the_short_rlhf_run_ends_on_the_same_hashes_in_simulation_and_over_tcp(
        tmp_path: Path) -> None:
    sim, real = tmp_path / "sim", tmp_path / "real"
    run("--out", str(sim))
    run("--real", "--out", str(real))
    s, r = summary(sim), summary(real)
    assert (s["mode"], r["mode"]) == ("sim", "real-tcp")
    assert s["distinct_final_hashes"] == r["distinct_final_hashes"] == 1
    assert s["final_model_hash"] == r["final_model_hash"]
    assert s["rlhf"]["final_models"] == r["rlhf"]["final_models"]
    assert len(s["rlhf"]["final_models"]) == 1
    # one preference set, the same in both worlds: every task labelled left or right, taken
    # when the last collect round (5) committed the whole curation log
    prefs = s["rlhf"]["preferences"]
    assert prefs == r["rlhf"]["preferences"]
    assert [(p["pairs"], p["round"]) for p in prefs] == [(80, 5)]
    roots = {node["root"] for node in s["curation"]["nodes"].values()}
    assert roots == {prefs[0]["root"]}
    assert {node["committed"] for node in s["curation"]["nodes"].values()} == {240}
    # the simulated run's labels report works for a batch crowd
    labels = pl.read_parquet(sim / "labels.parquet")
    assert labels["records"].to_list()[-1] == 240
    assert s["labels"]["annotators"] == {"colluder": 2, "honest": 6}
    assert s["label_accuracy"] > 0.7
    # the real run: per-round figures, the stages' plot, and logs every node's audit verifies
    columns = pl.read_parquet(real / "rounds.parquet").columns
    assert {"eval_reward_accuracy", "eval_true_score", "eval_kl"} <= set(columns)
    assert any(c.startswith("metric_") for c in columns)
    assert (real / "rlhf.png").read_bytes().startswith(b"\x89PNG")
    audit = CliRunner().invoke(app, ["audit", str(real)])
    assert audit.exit_code == 0, audit.output
    assert "4 node logs, 88 rounds verified, 0 logs with a bad record, 0 rounds where" in (
        " ".join(audit.output.split()))


def test_a_member_restarted_after_the_snapshot_takes_its_preference_set_from_its_disk(
        tmp_path: Path) -> None:
    # node 2 is down in the reward stage (round 5, the snapshot, commits at t ~ 6): it comes
    # back with its store, not the curation rounds that built the set, and must agree
    crashed = short(tmp_path, faults=[{"kind": "crash", "nodes": [2], "at": 8.0,
                                       "duration": 3.0}])
    result = phalanx.run(crashed)
    s = result.summary
    assert result.ok, result.failures
    assert s["min_rounds_committed"] == 22 and s["distinct_final_hashes"] == 1
    assert [p["pairs"] for p in s["rlhf"]["preferences"]] == [80]
    times = result.rounds.filter(pl.col("node") == 2)["time"].to_list()
    assert not any(8.0 < t < 11.0 for t in times) and max(times) > 11.0  # down, then back


def test_the_adaptive_kl_is_measured_on_a_workload_no_compute_thread_touches(
        tmp_path: Path) -> None:
    """A real node runs gradient jobs on a thread beside its event loop; the KL the RLHF
    service feeds its controller at a commit is measured on the setup's probe, a workload of
    its own that gives the very numbers of the node's (a fresh one from the same seed)."""
    scenario = load_scenario(short(tmp_path, workload__kl_target=0.5))
    setup = rlhf_setup(scenario)
    assert setup is not None and setup.kl_probe is not None
    assert rlhf_setup(load_scenario(SHORT)).kl_probe is None  # type: ignore[union-attr]
    busy = workload_for(scenario, RngStreams(scenario.seed))
    probe = setup.kl_probe()
    assert probe is not busy
    # two models, asked in turn: each time measured anew (the figures are cached per model)
    models = [busy.init_params() + np.float32(shift) for shift in (0.01, 0.02)]
    expected = [busy.kl_value(p) for p in models]
    policy_round = setup.policy_first
    stop = threading.Event()

    def train() -> None:  # what the compute thread does meanwhile, at other params
        while not stop.is_set():
            busy.gradient(busy.init_params(), 1, policy_round)

    worker = threading.Thread(target=train)
    worker.start()
    try:
        seen = [probe.kl_value(models[i % 2]) for i in range(6)]
    finally:
        stop.set()
        worker.join()
    assert seen == expected * 3 and expected[0] != expected[1]


def crowd(tasks: int = 12, seed: int = 4) -> tuple[SimulatedCrowd, CrowdSpec]:
    spec = CrowdSpec(tasks=tasks, classes=2, honest=3, random=1, constant=0, permuters=0,
                     colluders=1, seed=seed)
    return SimulatedCrowd(spec), spec


def test_a_batch_crowd_is_a_pure_function_of_its_seed_with_one_chain_per_annotator() -> None:
    sim, spec = crowd()
    tasks = synthetic_tasks(spec.tasks, 2, "single_choice", 2, spec.seed).tasks
    records = crowd_records(sim, tasks, 3, spec.seed)
    assert records == crowd_records(sim, tasks, 3, spec.seed)
    assert records != crowd_records(sim, tasks, 3, spec.seed + 1)
    bodies = [decode_annotation(r).body for r in records]
    per_task = Counter(b.task for b in bodies)
    assert set(per_task.values()) == {3} and len(per_task) == len(tasks)  # gold included
    assert all(len({b.annotator for b in bodies if b.task == t}) == 3 for t in per_task)
    keys = {annotator_identity(spec.seed, i).public_key for i in range(spec.annotators)}
    assert {b.annotator for b in bodies} <= keys
    for key in keys:  # seq 0, 1, ... and client times that only grow
        chain = [b for b in bodies if b.annotator == key]
        assert [b.seq for b in chain] == list(range(len(chain)))
        assert [b.client_time_ms for b in chain] == sorted(b.client_time_ms for b in chain)
    desk = CurationDesk(tasks)  # a proper chain: a log takes them in the order given
    assert len({desk.submit(r) for r in records}) == len(records)
    # the answers are the crowd's own draw for this redundancy
    index = {annotator_identity(spec.seed, i).public_key: a.id
             for i, a in enumerate(sim.annotators)}
    drawn = {(x.task, x.worker, x.label) for x in sim.label(3)}
    assert {(tasks.tasks[b.task].id, index[b.annotator], b.choice[0]) for b in bodies} == drawn


def test_tasks_a_filter_withheld_get_no_records() -> None:
    sim, spec = crowd()
    tasks = synthetic_tasks(spec.tasks, 2, "single_choice", 0, spec.seed).tasks
    kept = type(tasks)([t for t in tasks.by_id.values() if t.id != "t0003"])
    ids = {kept.tasks[decode_annotation(r).body.task].id
           for r in crowd_records(sim, kept, 2, spec.seed)}
    assert ids == set(kept.by_id)


def test_the_first_member_submits_the_batch_and_a_restart_skips_it_quietly() -> None:
    sim, spec = crowd(tasks=10)
    tasks = synthetic_tasks(spec.tasks, 2, "single_choice", 2, spec.seed).tasks
    records = crowd_records(sim, tasks, 3, spec.seed)
    forged = bytearray(records[-1])
    forged[-1] ^= 1  # the last record's signature: refused and counted, the rest taken
    service = CurationService.configured(CurationSetup(
        tasks, max_records=8, crowd_records=(*records[:-1], bytes(forged)), crowd_node=0))
    kit = Kit(11)
    opener = FrameOpener(kit.keyring, messages=message_set([service]))
    nodes = {i: Node(kit.node(i, 8).config, kit.ids[i], kit.workload, opener,
                     services=[service]) for i in MEMBERS}
    pump = Pump(nodes, open=opener)
    pump.start()

    def desk(i: int) -> CurationDesk:
        return pump.nodes[i].extra_services[0].desk  # type: ignore[attr-defined,no-any-return]

    assert desk(0).pending == len(records) - 1 and dict(desk(0).counts) == {"bad_signature": 1}
    assert [desk(i).counts.total() for i in (1, 2, 3)] == [0, 0, 0]  # only node 0 took them
    pump.run_to_end()
    assert {desk(i).committed for i in MEMBERS} == {len(records) - 1}  # 8 per round at most
    assert len({desk(i).root for i in MEMBERS}) == 1
    sent = len(pump.sent_by(0, CurationRecords))
    reborn = Node(pump.nodes[0].config, kit.ids[0], kit.workload, opener, services=[service])
    pump.restart(0, reborn)
    assert desk(0).committed == len(records) - 1 and desk(0).pending == 0
    assert dict(desk(0).counts) == {"bad_signature": 1}  # the forged one again; no replays
    assert len(pump.sent_by(0, CurationRecords)) == sent  # nothing forwarded again


def short(tmp_path: Path, **changes: object) -> Path:
    data = yaml.safe_load(SHORT.read_text())
    for dotted, value in changes.items():
        *path, key = dotted.split("__")
        section = data
        for part in path:
            section = section[part]
        section[key] = value
    path = tmp_path / "short.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(("changes", "error"), [
    ({"curation__redundancy": 9}, r"redundancy: 9 answers per task, but a batch crowd has "
                                  r"only 8 annotators"),
    ({"workload__collect_rounds": 2, "workload__reward_rounds": 12},
     r"workload\.collect_rounds: the batch crowd's 240 records need at least 3 rounds at "
     r"curation\.batch\.max_records 100; collect_rounds is 2"),
    ({"curation__crowd__delivery": "mail"}, r"curation\.crowd\.delivery\b.*'mail'"),
])
def test_a_batch_crowd_that_cannot_work_is_refused_in_one_line(
        tmp_path: Path, changes: dict[str, object], error: str) -> None:
    done = invoke("validate", short(tmp_path, **changes))
    assert done.exit_code == 2, done.output
    line = one_error_line(done.stderr)
    assert re.search(error, line), line


def test_a_live_crowd_builds_no_records_and_a_batch_one_goes_to_the_first_member(
        tmp_path: Path) -> None:
    batch = curation_setup(load_scenario(SHORT))
    assert batch is not None and len(batch.crowd_records) == 240 and batch.crowd_node == 0
    live = curation_setup(load_scenario(short(tmp_path, curation__crowd__delivery="live")))
    assert live is not None and live.crowd_records == ()
    # a Byzantine first member could drop them all: the first honest one submits them
    attacked = short(tmp_path, byzantine=[{"nodes": [0], "behaviour": "silent"}])
    assert curation_setup(load_scenario(attacked)).crowd_node == 1  # type: ignore[union-attr]


def test_a_real_rlhf_run_with_a_live_crowd_is_refused_before_any_node_starts(
        tmp_path: Path) -> None:
    live = short(tmp_path, curation__crowd__delivery="live")
    done = invoke("run", live, "--real", "--out", tmp_path / "out", "-q")
    assert done.exit_code == 2, done.output
    line = one_error_line(done.stderr)
    assert "--real: curation.crowd.delivery live: simulated annotators work only in the " \
           "simulator" in line and "delivery: batch" in line
    assert not (tmp_path / "out" / "nodes").exists()
