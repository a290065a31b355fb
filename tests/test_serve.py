"""`phalanx serve SCENARIO`: the simulated cluster runs in real time beside the web app. A
person (the Python client here) annotates at a simulated annotation node next to the
scenario's simulated annotators, and sees their records committed by the simulated rounds."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from curationkit import PASSWORD, curation_data
from typer.testing import CliRunner

from phalanx.apps.cli import app
from phalanx.apps.sim_serve import LiveWorld, ServeOptions, serve_simulation
from phalanx.apps.web.accounts import Accounts
from phalanx.apps.web.client import WebClient
from phalanx.apps.web.settings import WebSettings
from phalanx.net.crypto import Identity
from phalanx.scenario.schema import parse_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
CHEAP = WebSettings(argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1)


def crowded() -> dict:
    data = curation_data(rounds=3000, tasks=60)
    data["curation"]["crowd"] = {"groups": [{"kind": "honest", "count": 4},
                                            {"kind": "colluder", "count": 1}],
                                 "start": 0.5, "stagger": 1.0}
    return data


async def _annotate(folder: Path) -> tuple[dict, int, int]:
    live = LiveWorld(parse_scenario(crowded()), speed=8.0)
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    serving = asyncio.create_task(serve_simulation(
        live, ServeOptions(None, "127.0.0.1", 0, folder, 8.0, None, CHEAP),
        ready.set_result, stop))
    url = (await asyncio.wait_for(ready, 30)).rstrip("/")
    try:
        async with WebClient(url, Identity.generate()) as me:
            await me.signup("ada", PASSWORD)
            mine = [await me.answer(task, task.options[0]) for task in await me.tasks(3)]
            assert len(mine) == 3 and {r.status for r in mine} == {"pending"}
            desk = live.desk(4)
            for _ in range(300):  # ours committed, and some of the crowd's
                if all(bytes.fromhex(r.digest) in desk.committed_log for r in mine) and (
                        desk.committed > 3 + 5):
                    break
                await asyncio.sleep(0.1)
            stats = await me.stats()
        # an admin's task import goes into the simulated node and a round commits it
        Accounts(folder / "web.sqlite", hasher=CHEAP.hasher()).create("root", PASSWORD,
                                                                      "admin")
        async with WebClient(url, Identity.generate()) as admin:
            await admin.login("root", PASSWORD)
            before = len(live.desk(4).tasks)
            reply = await admin.http.post(
                "/api/admin/tasks", params={"format": "jsonl"},
                content=(SCENARIOS / "annotation-demo.jsonl").read_bytes(),
                headers={"X-CSRF-Token": admin.csrf or ""})
            assert reply.status_code == 200 and reply.json()["added"] > 0, reply.text
            for _ in range(100):
                if len(live.desk(4).tasks) == before + reply.json()["added"]:
                    break
                await asyncio.sleep(0.1)
            assert len(live.desk(4).tasks) == before + reply.json()["added"]
        crowd = live.world.crowd.annotators.counts["submitted"] if live.world.crowd else 0
        return stats, crowd, live.world.hosts[0].node.round
    finally:
        stop.set()
        await asyncio.wait_for(serving, 30)


def test_a_person_annotates_beside_the_simulated_crowd_and_the_rounds_commit_it(
        tmp_path: Path) -> None:
    stats, crowd, rounds = asyncio.run(_annotate(tmp_path))
    assert stats["me"]["committed"] == 3 and stats["me"]["pending"] == 0
    # the simulated annotators were at work and their records committed beside ours
    assert crowd > 0 and stats["platform"]["records"] > 3
    assert stats["platform"]["annotators"] >= 2 and rounds > 5


def test_serve_says_what_is_wrong_in_one_line() -> None:
    runner = CliRunner()
    no_curation = runner.invoke(app, ["serve", str(SCENARIOS / "quickstart.yaml")])
    assert no_curation.exit_code == 2
    assert "needs a scenario with a curation: section" in no_curation.output
    assert "Traceback" not in no_curation.output
    bad_node = runner.invoke(app, ["serve", str(SCENARIOS / "annotate.yaml"), "--node", "9"])
    assert bad_node.exit_code == 2 and "--node 9: not a curation node" in bad_node.output
    bad_speed = runner.invoke(app, ["serve", str(SCENARIOS / "annotate.yaml"), "--speed", "0"])
    assert bad_speed.exit_code == 2 and "--speed must be > 0" in bad_speed.output


def test_phalanx_serve_names_the_url_and_says_it_is_a_simulation(tmp_path: Path) -> None:
    scenario = tmp_path / "crowded.yaml"
    scenario.write_text(yaml.safe_dump(crowded()))
    proc = subprocess.Popen(
        [sys.executable, "-m", "phalanx.apps.cli", "serve", str(scenario), "--port", "0",
         "--data", str(tmp_path / "web")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        first, second = proc.stdout.readline(), proc.stdout.readline()
        assert first.startswith("SIMULATION of scenario 'curation-real'"), first + second
        assert "No real network" in first
        assert second.startswith("open http://localhost:") and "annotation node 4" in second
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(30) == 0, proc.stdout.read() if proc.stdout else ""
