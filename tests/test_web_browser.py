"""The web UI in real headless Chromium (Playwright) against the real app on a real server:
an annotator signs up, annotates every kind of task with the keyboard only and sees their
progress, reputation and the leaderboard change; an admin imports tasks and exports labels.
A screenshot of each page goes to the test's output folder.

The node here is a LocalPort (one desk committing its own records every 0.2 s): the records
the browser signed are checked on the desk itself, field by field."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from browserkit import chromium, served

from phalanx.apps.web.accounts import Accounts
from phalanx.apps.web.app import create_app
from phalanx.apps.web.port import LocalPort
from phalanx.apps.web.settings import WebSettings
from phalanx.engine.curation.assignment import AssignmentPolicy
from phalanx.engine.curation.client import AnnotatorClient
from phalanx.engine.curation.desk import CurationDesk
from phalanx.engine.curation.tasks import Answer, Task, TaskSet

expect = pytest.importorskip("playwright.sync_api", reason="the playwright package is not "
                             "installed (pip install playwright)").expect

ADMIN, ADMIN_PASSWORD = "root", "admin password 19"
PASSWORD = "a long enough password"
TASKS = TaskSet([
    Task.make(id="sentiment", kind="single_choice",
              text="The battery lasts all day. <img src=x onerror=alert(1)>",  # shown as text
              options=["negative", "positive", "neutral"]),
    Task.make(id="topics", kind="multi_label", text="Central bank raises rates as housing cools",
              options=["economy", "sport", "housing"]),
    Task.make(id="fluency", kind="rating", text="Me go store tomorrow for buy bread.",
              scale=[1, 5, 1]),
    Task.make(id="recursion", kind="pairwise", text="Explain recursion to a child.",
              completions=["A function that calls itself.",
                           "Russian dolls: each holds a smaller one, down to the last."]),
    Task.make(id="summary", kind="free_text", text="Summarize: the meeting moved to Thursday.",
              max_length=80),
    Task.make(id="spam", kind="single_choice", text="You won a cruise, click here!",
              options=["spam", "not spam"]),
], gold={"spam": Answer((0,))})

# What the annotator presses on each task, and the answer that must land in the record (the
# gold task "spam" answered right).
KEYS = {"sentiment": (["2"], (1,)), "topics": (["1", "3"], (0, 2)), "fluency": (["4"], (3,)),
        "recursion": (["2"], (1,)), "spam": (["1"], (0,))}
SUMMARY = "Moved to Thursday."
ANY_KIND = re.compile(r"^(single_choice|multi_label|rating|pairwise|free_text)$")
TOP_THREE = re.compile(r"^#[1-3]$")
IMPORT = "\n".join(json.dumps(row) for row in [
    {"id": "new-1", "kind": "single_choice", "text": "Cats or dogs?", "options": ["cats", "dogs"]},
    {"id": "new-2", "kind": "rating", "text": "Rate this haiku.", "min": 1, "max": 3, "step": 1},
    {"id": "new-3", "kind": "pairwise", "text": "Greet me.", "left": "Hi", "right": "Hello!"},
]) + "\n"


@dataclass
class Site:
    base: str
    desk: CurationDesk
    shots: Path
    others: set[bytes]


def _seed_other_annotators(desk: CurationDesk, port: LocalPort) -> set[bytes]:
    """Two annotators who answered before the test's one arrives (so the leaderboard has
    someone to overtake); committed before the server starts, so no race with its loop."""
    keys = set()
    for answers in ({"sentiment": "positive", "spam": "spam"}, {"spam": "not spam"}):
        client = AnnotatorClient.generate()
        for task_id, value in answers.items():
            task = TASKS.by_id[task_id]
            desk.submit(client.sign(task, task.answer_from(value)).encode())
        keys.add(client.public_key)
    port.commit_now()
    return keys


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("web")
    settings = WebSettings(argon2_time_cost=1, argon2_memory_kib=8 * 1024)
    Accounts(folder / "web.sqlite", hasher=settings.hasher()).create(
        ADMIN, ADMIN_PASSWORD, role="admin")
    # gold first (rate 1), so the one gold task is surely among the annotator's six
    desk = CurationDesk(TASKS, policy=AssignmentPolicy(redundancy=5, gold_rate=1.0))
    port = LocalPort(desk, commit_seconds=0.2)
    others = _seed_other_annotators(desk, port)
    app = create_app(port, accounts_path=folder / "web.sqlite", settings=settings)
    with served(app, background=[port.run]) as base:
        yield Site(base, desk, folder / "screenshots", others)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


def _page(browser: Any, errors: list[str]) -> Any:
    # reduced motion: the page skips its transitions, so screenshots are never mid-fade
    page = browser.new_context(viewport={"width": 1280, "height": 860},
                               reduced_motion="reduce").new_page()
    page.set_default_timeout(10_000)
    page.on("pageerror", lambda e: errors.append(str(e)))
    # script errors; Chromium's own lines for 4xx answers are expected (signed out, refusals)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error"
            and not m.text.startswith("Failed to load resource") else None)
    return page


def _shot(page: Any, site: Site, name: str) -> None:
    site.shots.mkdir(exist_ok=True)
    page.screenshot(path=str(site.shots / f"{name}.png"), full_page=True)


def _wait_committed(site: Site, records: int) -> None:
    deadline = time.monotonic() + 10
    while site.desk.committed < records:  # an int read: the loop thread owns the desk
        assert time.monotonic() < deadline, "the LocalPort stopped committing"
        time.sleep(0.05)


def test_an_annotator_signs_up_and_annotates_with_the_keyboard(site: Site, browser: Any
                                                               ) -> None:
    errors: list[str] = []
    page = _page(browser, errors)
    page.goto(site.base + "/annotate")
    expect(page).to_have_url(site.base + "/login?next=%2Fannotate")  # signed out: sign in first
    page.goto(site.base + "/signup")
    page.fill("#username", "alice")
    page.fill("#password", "short")
    page.press("#password", "Enter")
    expect(page.locator("#form-error")).to_contain_text("at least 10 characters")
    page.fill("#password", PASSWORD)
    expect(page.locator("#key-status")).to_contain_text("Signing key ready")
    _shot(page, site, "signup")
    page.press("#password", "Enter")
    expect(page).to_have_url(site.base + "/dashboard")
    expect(page.locator("#stat-records")).to_have_text("0")
    expect(page.locator("#stat-rank")).to_have_text("—")
    expect(page.locator("#stat-gold")).to_have_text("—")
    expect(page.locator("#mini-board")).not_to_contain_text("alice")
    _shot(page, site, "dashboard-before")

    page.keyboard.press("a")  # the dashboard's shortcut to the queue
    expect(page).to_have_url(site.base + "/annotate")
    card = page.locator("#task")
    expect(card).to_have_attribute("data-kind", ANY_KIND)
    first = card.get_attribute("data-task")
    page.keyboard.press("ArrowRight")
    expect(card).not_to_have_attribute("data-task", first)
    page.keyboard.press("ArrowLeft")
    expect(card).to_have_attribute("data-task", first)

    answered: dict[str, tuple[tuple[int, ...], str]] = {}
    session = 0  # the page counts what this visit submitted
    for n in range(1, len(TASKS) + 1):  # every kind, keys only; no page load in between
        expect(card).to_have_attribute("data-kind", ANY_KIND)
        kind = card.get_attribute("data-kind")
        task_id = card.get_attribute("data-task")
        _shot(page, site, f"annotate-{kind}")
        if task_id == "sentiment":  # markup in a task is text, never markup
            expect(card.locator(".prompt")).to_contain_text("<img src=x onerror=alert(1)>")
            expect(card.locator("img")).to_have_count(0)
        if kind == "free_text":
            page.keyboard.type(SUMMARY)  # the answer box has the focus
            answered[task_id] = ((), SUMMARY)
        else:
            presses, choice = KEYS[task_id]
            for key in presses:
                page.keyboard.press(key)
            answered[task_id] = (choice, "")
        page.keyboard.press("Enter")
        session += 1
        expect(page.locator("#done-count")).to_have_text(str(session))
        if n == 3:
            _wait_committed(site, 3 + 3)  # the seeded three, and these three
            page.goto(site.base + "/dashboard")
            expect(page.locator("#stat-records")).to_have_text("3")
            expect(page.locator("#stat-records-note")).to_contain_text("3 committed")
            expect(page.locator("#stat-rank")).to_have_text(TOP_THREE)
            expect(page.locator("#mini-board")).to_contain_text("alice")
            _shot(page, site, "dashboard-after-three")
            page.keyboard.press("a")
            expect(page).to_have_url(site.base + "/annotate")
            session = 0
    expect(page.locator("#task")).to_contain_text("all caught up")
    _shot(page, site, "annotate-done")

    # what the browser signed is what the desk holds, answer by answer
    _wait_committed(site, 3 + 6)
    mine = [r for r in site.desk.answers() if r.annotator not in site.others]
    got = {TASKS.tasks[r.task].id: (r.answer.choice, r.answer.text) for r in mine}
    assert set(got) == {t.id for t in TASKS.tasks.values()}  # every task, gold included
    for task_id, answer in answered.items():
        assert got[task_id] == answer, task_id

    page.goto(site.base + "/dashboard")
    expect(page.locator("#stat-records")).to_have_text("6")
    expect(page.locator("#stat-gold")).to_have_text("100%")  # the gold "spam" task, right
    expect(page.locator("#stat-gold-note")).to_contain_text("1 of 1")
    expect(page.locator("#stat-reputation")).not_to_have_text("—")
    _shot(page, site, "dashboard-after")
    page.goto(site.base + "/leaderboard")
    expect(page.locator("#board tr.me")).to_contain_text("alice")
    expect(page.locator("#board tr.me")).to_contain_text("6")
    _shot(page, site, "leaderboard")
    page.goto(site.base + "/admin")  # an annotator sees no admin data
    expect(page.locator("main")).to_contain_text("Admins only")
    expect(page.locator("nav a[href='/admin']")).to_be_hidden()
    assert not errors, errors


def _sign_up(page: Any, site: Site, username: str) -> None:
    page.goto(site.base + "/signup")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    expect(page.locator("#key-status")).to_contain_text("Signing key ready")
    page.press("#password", "Enter")
    expect(page).to_have_url(site.base + "/dashboard")


def test_two_tabs_of_one_annotator_never_fork_their_chain(site: Site, browser: Any) -> None:
    """Both tabs load their queue at seq 0; what the second signs after the first submitted
    links to the first's record (a second record at seq 0 would be an equivocation, which
    costs the annotator their answers), and a task the first answered is not answered
    twice."""
    errors: list[str] = []
    first = _page(browser, errors)
    _sign_up(first, site, "dora")
    second = first.context.new_page()
    for tab in (first, second):
        tab.goto(site.base + "/annotate")
        expect(tab.locator("#task")).to_have_attribute("data-kind", ANY_KIND)
    shared = first.locator("#task").get_attribute("data-task")
    assert second.locator("#task").get_attribute("data-task") == shared  # same queue

    def answer(tab: Any) -> None:
        task_id = tab.locator("#task").get_attribute("data-task")
        if tab.locator("#task").get_attribute("data-kind") == "free_text":
            tab.keyboard.type(SUMMARY)
        else:
            for key in KEYS[task_id][0]:
                tab.keyboard.press(key)
        tab.keyboard.press("Enter")

    answer(first)
    expect(first.locator("#done-count")).to_have_text("1")
    second.bring_to_front()
    answer(second)  # the task the first tab answered
    expect(second.locator("#toast")).to_contain_text("answered this task in another tab")
    expect(second.locator("#task")).not_to_have_attribute("data-task", shared)
    answer(second)
    expect(second.locator("#done-count")).to_have_text("1")

    _wait_committed(site, site.desk.committed + 1)
    key = bytes.fromhex(second.evaluate("""async () => {
        const { loadKey } = await import("/static/js/keys.js");
        return (await loadKey("dora")).publicHex; }"""))
    assert site.desk.head(key)[0] == 2  # seq 0 and seq 1: one chain
    assert site.desk.counts["equivocation"] == 0
    mine = [r for r in site.desk.answers() if r.annotator == key]
    assert len(mine) == 2 and len({r.task for r in mine}) == 2
    assert not errors, errors


def test_skipping_with_the_arrows_reaches_every_task(site: Site, browser: Any) -> None:
    """The queue is fetched a batch at a time (5); skipping past it fetches more rather than
    ending at the batch."""
    errors: list[str] = []
    page = _page(browser, errors)
    _sign_up(page, site, "erin")
    page.goto(site.base + "/annotate")
    card = page.locator("#task")
    expect(card).to_have_attribute("data-kind", ANY_KIND)
    seen = [card.get_attribute("data-task")]
    for _ in range(len(TASKS) - 1):
        page.keyboard.press("ArrowRight")
        expect(card).not_to_have_attribute("data-task", seen[-1])
        seen.append(card.get_attribute("data-task"))
    assert sorted(seen) == sorted(TASKS.by_id)
    page.keyboard.press("ArrowRight")
    expect(page.locator("#toast")).to_contain_text("last task in your queue")
    assert not errors, errors


def test_an_admin_imports_tasks_and_exports_labels(site: Site, browser: Any,
                                                   tmp_path: Path) -> None:
    errors: list[str] = []
    page = _page(browser, errors)
    page.goto(site.base + "/login")
    page.fill("#username", ADMIN)
    page.fill("#password", "not the password")
    page.press("#password", "Enter")
    expect(page.locator("#form-error")).to_be_visible()
    page.fill("#password", ADMIN_PASSWORD)
    page.press("#password", "Enter")
    expect(page).to_have_url(site.base + "/admin")
    expect(page.locator("#health-status")).to_have_text("Healthy")
    expect(page.locator("#chart-quality svg")).to_be_visible()
    expect(page.locator("#chart-throughput svg rect").first).to_be_visible()
    _shot(page, site, "admin-overview")
    page.emulate_media(color_scheme="dark")
    _shot(page, site, "admin-overview-dark")
    page.emulate_media(color_scheme="light")

    page.goto(site.base + "/admin/tasks")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "kind": "single_choice", "text": "SECRET-VALUE", "options": 7}\n')
    page.set_input_files("#import-file", str(bad))
    page.click("#import-submit")
    expect(page.locator("#import-error")).to_contain_text("row 1")
    expect(page.locator("#import-error")).not_to_contain_text("SECRET-VALUE")
    before = len(site.desk.tasks)
    good = tmp_path / "more.jsonl"
    good.write_text(IMPORT)
    page.set_input_files("#import-file", str(good))
    page.click("#import-submit")
    expect(page.locator("#import-result")).to_contain_text("Imported 3 new tasks")
    assert len(site.desk.tasks) == before + 3
    expect(page.locator("#label-preview tbody tr").first).not_to_contain_text("No labels")
    _shot(page, site, "admin-tasks")

    with page.expect_download() as jsonl:
        page.click("#export-jsonl")
    rows = [json.loads(line) for line in Path(jsonl.value.path()).read_text().splitlines()]
    labels = {row["task_id"]: row for row in rows}
    assert labels["spam"]["label"] == "spam" and 0 < labels["spam"]["confidence"] <= 1
    spam = TASKS.by_id["spam"].digest  # provenance: the signed records it came from
    assert labels["spam"]["provenance"] == sorted(
        r.digest.hex() for r in site.desk.answers() if r.task == spam)
    with page.expect_download() as parquet:
        page.click("#export-parquet")
    frame = pl.read_parquet(parquet.value.path())
    assert sorted(frame["task_id"].to_list()) == sorted(labels)

    page.goto(site.base + "/admin/annotators")
    row = page.locator("#annotators tr[data-username=alice]")
    expect(row).to_contain_text("annotator")
    row.get_by_role("button", name="Suspend alice").click()
    expect(row).to_contain_text("suspended")
    _shot(page, site, "admin-annotators")
    row.get_by_role("button", name="Reinstate alice").click()
    expect(row).not_to_contain_text("suspended")
    assert not errors, errors
