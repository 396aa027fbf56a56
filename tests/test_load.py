"""Load test: four browser sessions at once on every page of the dashboard while a training job runs.

`streamlit run dashboard.py` serves the fixture runs (a real CNN and a real ViT, tests/fixture_runs.py) and a
tiny demo data root; a real training job is launched through the launcher. One browser session first visits
every page once, in the navigation's order (Home by its URL, the others through the sidebar): each page's
first-visit time is reported on its own. Then four headless Chromium sessions (one browser, four contexts,
asyncio) go round every page through the sidebar navigation for LOAD_SECONDS; those warm visits give the p50 /
p95 / max page times (click to rendered and idle), over the whole run and per page. Every visit must render
without an exception box or a traceback; afterwards the job is still listed with a valid run.json. The figures
are printed and written to a JSON file under the test's temporary folder (VITRINE_LOAD_FIGURES: also there).

Targets, printed (not asserted: timings on a shared machine are noise): each first visit under FIRST_VISIT_TARGET_S, warm p95 under WARM_P95_TARGET_S (two CPU cores,
the job training beside). Live predict counts as rendered once each compared run's column shows its prediction,
a message or that its model is loading (the page never waits for a model); the time until both predictions are
shown is reported apart.

Run alone: `make test-load` (`pytest -m load -n 0 -s`). Skipped without Debian's `chromium` or the playwright
package. About two minutes on two CPU cores (VITRINE_LOAD_SECONDS, default 45, sets the length of the load
phase).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path

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
LOAD_SECONDS = float(os.environ.get("VITRINE_LOAD_SECONDS", "45"))
VISIT_TIMEOUT_S = 90
FIRST_VISIT_TARGET_S = 8.0
WARM_P95_TARGET_S = 3.0
JOB_NAME = "load test run"
# (path, nav link and heading, what shows the page has rendered its content), in the navigation's order
PAGES = [("/", "ViTrine", "home"), ("/Learning_curves", "Learning curves", "curves"),
         ("/Error_explorer", "Error explorer", "errors"), ("/Live_predict", "Live predict", "live"),
         ("/Attention_maps", "Attention maps", "attention"), ("/Compare", "Compare", "compare"),
         ("/Cutoff_sweep", "Cutoff sweep", "sweep")]
NAV_NAMES = {"ViTrine": "Home"}  # a page whose sidebar link is not named like its heading

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
        yield {"url": url, "runs_dir": runs_dir, "job": job, "log": log_path, "base": base, "pid": server.pid}
    finally:
        if job is not None:
            stop_group(job.pid, grace_s=10)
        stop_group(server.pid, grace_s=10)
        server.wait(timeout=10)


# ---------------------------------------------------------------- one browser session

async def _content(main, marker: str) -> bool:
    """Whether the page's own content is there (not only its title)."""
    if marker == "home":  # the verdict and the leaderboard table
        return bool(await main.get_by_text("Best ViT", exact=True).count()
                    and await main.get_by_test_id("stDataFrame").count())
    if marker == "curves":
        return await main.get_by_test_id("stVegaLiteChart").count() >= 1
    if marker == "errors":  # both confusion matrices drawn
        return await main.get_by_test_id("stVegaLiteChart").count() >= 2
    if marker in ("live", "predicted"):  # per compared run: a prediction, a message, or (live) its model loading
        shown = await main.get_by_text(re.compile(r"^Top-1: ")).count() + \
            await main.get_by_test_id("stAlert").count()
        if marker == "live":
            shown += await main.get_by_text(re.compile("^⏳ Loading this run's model")).count()
        return shown >= 2
    if marker == "attention":  # the mean maps of the ViT (and the CNN beside it)
        return bool(await main.get_by_role("heading", name=re.compile("^Mean map")).count())
    if marker == "compare":  # the paired test of the two compared runs
        return bool(await main.get_by_text(re.compile("McNemar exact p")).count())
    if marker == "sweep":  # the fixture runs hold no study: the page says how to make one
        return bool(await main.get_by_text(re.compile("python -m poc sweep")).count())
    raise ValueError(marker)


FRAGMENT_GRACE_S = 10  # content shown this long while the app still reads "running": its fragments rerun
POLL_S = 0.1
# Whether the main area shows the page's heading, and the app's script state: one round trip to the browser per
# poll. Four sessions polling through several locators each kept the test's own Python, Playwright's driver and
# Chromium busy on the two cores that the dashboard and the training job need.
_TITLE_AND_STATE_JS = """heading => {
  const app = document.querySelector('[data-testid="stApp"]');
  const main = document.querySelector('[data-testid="stMain"]');
  const titled = !!main && [...main.querySelectorAll('h1, h2, h3')].some(h => h.textContent.trim() === heading);
  return [titled, app ? app.getAttribute('data-test-script-state') : null];
}"""


async def _title_and_state(page, heading: str) -> tuple[bool, str | None]:
    titled, state = await page.evaluate(_TITLE_AND_STATE_JS, heading)
    return bool(titled), state


async def _rendered(page, heading: str, marker: str) -> None:
    """Until the page shows its heading and content and its script has stopped running. A page whose fragments
    (the sidebar's jobs and a live chart every 5 s) rerun back to back on a starved CPU may never read
    "notRunning" while its content stands: after FRAGMENT_GRACE_S of content it counts as rendered. While the
    script runs, the content is looked for once a second; once it stops, at every poll. On a timeout the message
    holds what the page showed."""
    main = page.get_by_test_id("stMain")
    deadline, shown_since, next_look = time.monotonic() + VISIT_TIMEOUT_S, None, 0.0
    while time.monotonic() < deadline:
        titled, state = await _title_and_state(page, heading)
        now = time.monotonic()
        if not titled:
            shown_since = None
        elif state == "notRunning" or now >= next_look:
            next_look = now + 1.0
            content = await _content(main, marker)
            if content and state == "notRunning":
                return
            shown_since = (shown_since or now) if content else None
            if shown_since is not None and now - shown_since > FRAGMENT_GRACE_S:
                return
        await asyncio.sleep(POLL_S)
    _, state = await _title_and_state(page, heading)
    text = (await main.inner_text())[:1500]
    raise AssertionError(f"{heading} did not render within {VISIT_TIMEOUT_S} s (script state {state}); the page "
                         f"showed:\n{text}")


RECLICK_S = 20  # a click that lands while a sidebar fragment reruns can be lost: a user clicks again


async def _visit(page, heading: str, marker: str) -> float:
    """Click the page's sidebar link; seconds until it has rendered (counted from the first click)."""
    start = time.monotonic()
    link = page.get_by_test_id("stSidebarNav").get_by_role("link", name=NAV_NAMES.get(heading, heading))
    await link.click()
    while time.monotonic() - start < RECLICK_S:
        if (await _title_and_state(page, heading))[0]:
            break
        await asyncio.sleep(POLL_S)
    else:
        await link.click()
    await _rendered(page, heading, marker)
    return time.monotonic() - start


async def _problem(page) -> str | None:
    """The text of an exception box, or the traceback on the page, if any."""
    exceptions = page.locator('[data-testid="stException"]')
    if await exceptions.count():
        return (await exceptions.first.inner_text())[:2000]
    text = await page.locator('[data-testid="stApp"]').inner_text()
    return text[text.find("Traceback"):][:2000] if "Traceback" in text else None


async def _session(browser, url: str, index: int, seconds: float, visits: list, problems: list) -> None:
    """One user: opens a page by its URL, then for `seconds` goes round the pages through the sidebar."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    page.set_default_timeout(VISIT_TIMEOUT_S * 1000)
    try:
        path, heading, marker = PAGES[(2 * index + 1) % len(PAGES)]  # the sessions start on different pages
        await page.goto(url + path)
        await _rendered(page, heading, marker)
        turn, until = 2 * index + 2, time.monotonic() + seconds
        while time.monotonic() < until:
            _, heading, marker = PAGES[turn % len(PAGES)]
            turn += 1
            visits.append({"session": index, "page": heading, "seconds": await _visit(page, heading, marker)})
            if problem := await _problem(page):
                problems.append({"session": index, "page": heading, "text": problem})
    finally:
        await context.close()


async def _first_visits(browser, url: str, problems: list) -> tuple[dict, float]:
    """({page: seconds of its first visit}, seconds until Live predict showed both predictions): Home by its URL
    (the dashboard's first script run), then every other page once through the sidebar, in the nav's order."""
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(VISIT_TIMEOUT_S * 1000)
    first, predicted = {}, None
    try:
        path, heading, marker = PAGES[0]
        start = time.monotonic()
        await page.goto(url + path)
        await _rendered(page, heading, marker)
        first[heading] = time.monotonic() - start
        for _, heading, marker in PAGES[1:]:
            first[heading] = await _visit(page, heading, marker)
            if marker == "live":  # the models load in the background: how long until both predictions show
                start = time.monotonic() - first[heading]
                await _rendered(page, heading, "predicted")
                predicted = time.monotonic() - start
            if problem := await _problem(page):
                problems.append({"session": "first visits", "page": heading, "text": problem})
    finally:
        await page.close()
    return first, predicted


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads) so far, from /proc; None without /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _load(url: str, seconds: float, pid: int) -> tuple[list, list, dict, float, float | None]:
    """(warm visits, problems, first visits, seconds to Live predict's predictions, the dashboard process's CPU
    seconds during the warm visits: a figure that other load on the machine moves less than page times)."""
    visits, problems = [], []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            first, predicted = await _first_visits(browser, url, problems)
            cpu = _cpu_seconds(pid)
            await asyncio.gather(*(_session(browser, url, i, seconds, visits, problems) for i in range(SESSIONS)))
            cpu = _cpu_seconds(pid) - cpu if cpu is not None else None
        finally:
            await browser.close()
    return visits, problems, first, predicted, cpu


# ---------------------------------------------------------------- the test

def _p(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def test_four_sessions_on_every_page_while_training(served, capsys):
    started = time.monotonic()
    visits, problems, first, predicted, cpu = asyncio.run(_load(served["url"], LOAD_SECONDS, served["pid"]))
    wall = time.monotonic() - started

    job_status = next((s for s in launcher.list_jobs(served["runs_dir"]) if s.id == served["job"].id), None)
    run_json = store.read_json(store.run_dir(served["runs_dir"], served["job"].run_id).run_json)
    seconds = [v["seconds"] for v in visits]
    per_page = {h: [v["seconds"] for v in visits if v["page"] == h] for _, h, _ in PAGES}
    figures = {
        "sessions": SESSIONS, "load_seconds": LOAD_SECONDS, "wall_seconds": round(wall, 1),
        "first_visit_seconds": {h: round(t, 2) for h, t in first.items()},
        "live_predict_predictions_seconds": round(predicted, 2) if predicted is not None else None,
        "visits": len(visits),
        "server_cpu_seconds_per_visit": round(cpu / len(visits), 3) if cpu is not None and visits else None,
        "p50_seconds": _p(seconds, 50), "p95_seconds": _p(seconds, 95),
        "max_seconds": round(max(seconds), 3) if seconds else None,
        "per_page": {h: {"visits": len(t), "p50_seconds": _p(t, 50), "p95_seconds": _p(t, 95)}
                     for h, t in per_page.items()},
        "problems": problems,
        "visit_seconds": [{**v, "seconds": round(v["seconds"], 3)} for v in visits],
        "job": {"status": job_status.status if job_status else None,
                "phase": job_status.phase if job_status else None, "epoch": job_status.epoch if job_status else None,
                "run_status": (run_json or {}).get("status")},
        "cpu_count": os.cpu_count(),
    }
    out = served["base"] / "load_figures.json"
    out.write_text(json.dumps(figures, indent=2) + "\n")
    if os.environ.get("VITRINE_LOAD_FIGURES"):
        Path(os.environ["VITRINE_LOAD_FIGURES"]).write_text(out.read_text())
    with capsys.disabled():
        rows = "\n".join(f"  {h:<16} first visit {first.get(h, float('nan')):6.2f} s · warm p50 "
                         f"{figures['per_page'][h]['p50_seconds']} s, p95 {figures['per_page'][h]['p95_seconds']} s "
                         f"({len(per_page[h])} visits)" for _, h, _ in PAGES)
        print(f"\nload test: {len(visits)} warm page visits by {SESSIONS} sessions in {LOAD_SECONDS:.0f} s; page time "
              f"p50 {figures['p50_seconds']} s, p95 {figures['p95_seconds']} s, max {figures['max_seconds']} s; "
              f"dashboard CPU {figures['server_cpu_seconds_per_visit']} s per visit; "
              f"Live predict's predictions after {figures['live_predict_predictions_seconds']} s; job "
              f"{figures['job']}\n{rows}\nfigures: {out}")

    assert not problems, problems
    assert {v["session"] for v in visits} == set(range(SESSIONS)), visits  # every session switched pages
    assert {v["page"] for v in visits} == {h for _, h, _ in PAGES}, per_page  # and every page was visited warm
    slow = {h: t for h, t in first.items() if t >= FIRST_VISIT_TARGET_S}
    # The targets are reported, not asserted: timings on a shared 2-core machine are noise-bound, and a speed
    # figure belongs to a measurement (docs/benchmarks.md), never to a test that can fail on a busy machine.
    print(f"targets: first visits over {FIRST_VISIT_TARGET_S} s: {slow or 'none'}; warm p95 "
          f"{figures['p95_seconds']} s (target < {WARM_P95_TARGET_S} s)")
    assert job_status is not None, "the training job is no longer listed"
    assert job_status.status in ("queued", "running", "completed"), (job_status.status, job_status.message)
    assert run_json is not None and run_json.get("status") in ("queued", "running", "completed"), run_json
    if run_json["status"] == "running":
        assert runstatus.pid_alive(run_json["pid"])
    launcher.cancel(served["job"].id, served["runs_dir"], grace_s=30)
    assert launcher.find_job(served["job"].id, served["runs_dir"]).status == "cancelled"
