"""Load test: four browser sessions at once on Live predict and Error explorer while a training job runs.

`streamlit run dashboard.py` serves the fixture runs (a real CNN and a real ViT, tests/fixture_runs.py) and a
tiny demo data root; a real training job is launched through the launcher; then four headless Chromium
sessions (one browser, four contexts, asyncio) switch between the two pages through the sidebar navigation for
LOAD_SECONDS. Every visit must render without an exception box or a traceback; afterwards the job is still
listed with a valid run.json. The p50 / p95 / max page times (click to rendered and idle) are printed and
written to a JSON file under the test's temporary folder.

Run alone: `pytest -m load -s`. Skipped without Debian's `chromium` or the playwright package. About 1.5 to 2
minutes on two CPU cores (VITRINE_LOAD_SECONDS, default 30, sets the length of the load phase).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time

import numpy as np
import pytest

from poc.runs import store
from poc.launch import launcher
from poc.runs import status as runstatus
from poc.config import RunConfig
from tests.dashboard_server import CHROMIUM, CHROMIUM_ARGS, browser_marks, fixture_dashboard, stop_group

try:
    from playwright.async_api import async_playwright
except ImportError:  # pragma: no cover - depends on the environment
    async_playwright = None

SESSIONS = 4
LOAD_SECONDS = float(os.environ.get("VITRINE_LOAD_SECONDS", "30"))
VISIT_TIMEOUT_S = 90
JOB_NAME = "load test run"
# (path, nav link and heading, what shows the page has rendered its content)
PAGES = [("/Live_predict", "Live predict", "live"), ("/Error_explorer", "Error explorer", "errors")]

pytestmark = [*browser_marks(async_playwright is not None), pytest.mark.load]


# ---------------------------------------------------------------- the server and the job

@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The dashboard on a free port over two real runs (and the other fixture runs), with a training job running."""
    base = tmp_path_factory.mktemp("load")
    dashboard = fixture_dashboard(base)
    server, url, runs_dir, data_root, log_path = (dashboard[k] for k in ("proc", "url", "runs_dir", "data_root",
                                                                         "log"))
    job = None
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("VITRINE_DATA_ROOT", str(data_root))  # the launcher checks the data root in this process
            config = RunConfig(data=str(data_root / "demo"), model="mobilenet_v2", weights="none", image_size=32,
                               tl_epochs=1, ft_epochs=500, patience=500, batch_size=16, augment=[], name=JOB_NAME)
            job = launcher.launch_training(config, runs_dir)
        yield {"url": url, "runs_dir": runs_dir, "job": job, "log": log_path, "base": base}
    finally:
        if job is not None:
            stop_group(job.pid, grace_s=10)
        stop_group(server.pid, grace_s=10)
        server.wait(timeout=10)


# ---------------------------------------------------------------- one browser session

async def _rendered(page, heading: str, marker: str) -> None:
    """Until the page shows its heading and content and its script has stopped running."""
    app = page.locator('[data-testid="stApp"]')
    main = page.get_by_test_id("stMain")
    deadline = time.monotonic() + VISIT_TIMEOUT_S
    while time.monotonic() < deadline:
        if (await app.get_attribute("data-test-script-state")) == "notRunning" \
                and await main.get_by_role("heading", name=heading, exact=True).count():
            if marker == "live":  # a prediction (or a message) for each of the two compared runs
                done = await main.get_by_text(re.compile(r"^Top-1: ")).count() + \
                    await main.get_by_test_id("stAlert").count() >= 2
            else:  # both confusion matrices drawn
                done = await main.get_by_test_id("stVegaLiteChart").count() >= 2
            if done:
                return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{heading} did not render within {VISIT_TIMEOUT_S} s")


async def _problem(page) -> str | None:
    """The text of an exception box, or the traceback on the page, if any."""
    exceptions = page.locator('[data-testid="stException"]')
    if await exceptions.count():
        return (await exceptions.first.inner_text())[:2000]
    text = await page.locator('[data-testid="stApp"]').inner_text()
    return text[text.find("Traceback"):][:2000] if "Traceback" in text else None


async def _session(browser, url: str, index: int, until: float, visits: list, problems: list) -> None:
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    page.set_default_timeout(VISIT_TIMEOUT_S * 1000)
    try:
        path, heading, marker = PAGES[index % len(PAGES)]  # the sessions start on different pages
        await page.goto(url + path)
        await _rendered(page, heading, marker)
        turn = index + 1
        while time.monotonic() < until:
            _, heading, marker = PAGES[turn % len(PAGES)]
            turn += 1
            start = time.monotonic()
            await page.get_by_test_id("stSidebarNav").get_by_role("link", name=heading).click()
            await _rendered(page, heading, marker)
            visits.append({"session": index, "page": heading, "seconds": time.monotonic() - start})
            if problem := await _problem(page):
                problems.append({"session": index, "page": heading, "text": problem})
    finally:
        await context.close()


async def _load(url: str, seconds: float) -> tuple[list, list, float]:
    visits, problems = [], []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # One warm-up visit of each page (TensorFlow import, model loads): its time is reported apart.
            page = await browser.new_page()
            start = time.monotonic()
            for path, heading, marker in PAGES:
                await page.goto(url + path)
                await _rendered(page, heading, marker)
            cold = time.monotonic() - start
            await page.close()
            until = time.monotonic() + seconds
            await asyncio.gather(*(_session(browser, url, i, until, visits, problems) for i in range(SESSIONS)))
        finally:
            await browser.close()
    return visits, problems, cold


# ---------------------------------------------------------------- the test

def test_four_sessions_while_training(served, capsys):
    started = time.monotonic()
    visits, problems, cold = asyncio.run(_load(served["url"], LOAD_SECONDS))
    wall = time.monotonic() - started

    job_status = next((s for s in launcher.list_jobs(served["runs_dir"]) if s.id == served["job"].id), None)
    run_json = store.read_json(store.run_dir(served["runs_dir"], served["job"].run_id).run_json)
    seconds = np.array([v["seconds"] for v in visits])
    figures = {
        "sessions": SESSIONS, "load_seconds": LOAD_SECONDS, "wall_seconds": round(wall, 1),
        "cold_first_visits_seconds": round(cold, 2), "visits": len(visits),
        "p50_seconds": round(float(np.percentile(seconds, 50)), 3) if len(seconds) else None,
        "p95_seconds": round(float(np.percentile(seconds, 95)), 3) if len(seconds) else None,
        "max_seconds": round(float(seconds.max()), 3) if len(seconds) else None,
        "per_page_p95_seconds": {h: round(float(np.percentile([v["seconds"] for v in visits if v["page"] == h], 95)), 3)
                                 for _, h, _ in PAGES if any(v["page"] == h for v in visits)},
        "problems": problems,
        "visit_seconds": [{**v, "seconds": round(v["seconds"], 3)} for v in visits],
        "job": {"status": job_status.status if job_status else None,
                "phase": job_status.phase if job_status else None, "epoch": job_status.epoch if job_status else None,
                "run_status": (run_json or {}).get("status")},
        "cpu_count": os.cpu_count(),
    }
    out = served["base"] / "load_figures.json"
    out.write_text(json.dumps(figures, indent=2) + "\n")
    with capsys.disabled():
        print(f"\nload test: {len(visits)} page visits by {SESSIONS} sessions in {LOAD_SECONDS:.0f} s; page time "
              f"p50 {figures['p50_seconds']} s, p95 {figures['p95_seconds']} s, max {figures['max_seconds']} s "
              f"(first visits, cold: {figures['cold_first_visits_seconds']} s); job {figures['job']}\n"
              f"figures: {out}")

    assert not problems, problems
    assert {v["session"] for v in visits} == set(range(SESSIONS)), visits  # every session switched pages
    assert job_status is not None, "the training job is no longer listed"
    assert job_status.status in ("queued", "running", "completed"), (job_status.status, job_status.message)
    assert run_json is not None and run_json.get("status") in ("queued", "running", "completed"), run_json
    if run_json["status"] == "running":
        assert runstatus.pid_alive(run_json["pid"])
    launcher.cancel(served["job"].id, served["runs_dir"], grace_s=30)
    assert launcher.find_job(served["job"].id, served["runs_dir"]).status == "cancelled"
