"""Real-browser smoke test: the dashboard served by `streamlit run`, driven by headless Chromium (Playwright).

Covers what AppTest cannot: the pages as a browser renders them (no exception box, no traceback), a click on
a confusion-matrix cell of the Vega chart, a file upload through the uploader, and a tiny training run started
from the sidebar launcher and followed until it completes. Screenshots go to a temporary folder; with
VITRINE_UPDATE_SCREENSHOTS=1 they replace the README's in docs/screenshots/.

Needs Debian's `chromium` on PATH and the `playwright` Python package (its own browser download is not used);
skipped otherwise. About two to three minutes on two CPU cores.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from tests.dashboard_server import CHROMIUM, CHROMIUM_ARGS, browser_marks, fixture_dashboard, stop_group

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    sync_playwright = None

REPO = Path(__file__).resolve().parents[1]
DOC_SHOTS = REPO / "docs" / "screenshots"
VIEWPORT = {"width": 1400, "height": 1000}
SHOT_MAX_HEIGHT = 2200  # px: screenshots show the page down to this height (Streamlit scrolls inside stMain)
SHOT_MAX_BYTES = 1_000_000
CNN_LABEL, VIT_LABEL = "mobilenet_v2 fixture c0nn", "vit_ti16 fixture v1t0"  # run names in tests/fixture_runs
LAUNCH_NAME = "browser smoke"

pytestmark = browser_marks(sync_playwright is not None)


# ---------------------------------------------------------------- the server

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`streamlit run dashboard.py` on a free port over the fixture runs and a tiny demo data root."""
    served = fixture_dashboard(tmp_path_factory.mktemp("browser"))
    proc, runs_dir = served["proc"], served["runs_dir"]
    try:
        yield served
    finally:
        # Jobs started from the launcher run in their own process groups: stop any left behind by a failure.
        for record in (runs_dir / ".jobs").glob("*.json"):
            info = json.loads(record.read_text()) if not record.name.endswith(".exit.json") else {}
            if isinstance(info.get("pid"), int) and info["pid"] > 1:
                stop_group(info["pid"])
        stop_group(proc.pid, grace_s=10)  # the server and anything it started in its own group
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    """Where screenshots go: docs/screenshots/ only when asked (VITRINE_UPDATE_SCREENSHOTS=1), so a test run
    never rewrites the committed pictures."""
    if os.environ.get("VITRINE_UPDATE_SCREENSHOTS") == "1":
        return DOC_SHOTS
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _new_page(browser):
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(30_000)
    return context, context.new_page()


@pytest.fixture
def page(server, browser):
    """A fresh browser context per test, so each test gets its own Streamlit session. Asking for `server`
    first makes it outlive the browser: Streamlit stops slowly while a browser is still connected."""
    context, new_page = _new_page(browser)
    try:
        yield new_page
    finally:
        context.close()


# ---------------------------------------------------------------- helpers

def wait_idle(page, timeout_s: float = 90) -> None:
    """Until the script (and any fragment) has finished running and stayed finished for ~0.6 s."""
    app = page.locator('[data-testid="stApp"]')
    deadline, quiet = time.monotonic() + timeout_s, 0
    page.wait_for_timeout(300)  # a rerun asked for by the last action may not have started yet
    while quiet < 3:
        if time.monotonic() > deadline:
            raise AssertionError(f"the app was still running after {timeout_s} s")
        state = app.get_attribute("data-test-script-state") if app.count() else None
        quiet = quiet + 1 if state == "notRunning" else 0
        page.wait_for_timeout(200)


def assert_no_error(page) -> None:
    exceptions = page.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, exceptions.first.inner_text()
    text = page.locator('[data-testid="stApp"]').inner_text()
    assert "Traceback" not in text, text[text.find("Traceback"):][:2000]


def open_page(page, server, path: str, title: str) -> None:
    page.goto(server["url"] + path)
    expect(page.get_by_role("heading", name=title, exact=True).first).to_be_visible(timeout=60_000)
    wait_idle(page)
    assert_no_error(page)


def open_from_nav(page, server, title: str) -> None:
    """Home first, then the page through its sidebar link (as a user navigates), rendered without an error."""
    open_page(page, server, "/", "ViTrine")
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
    expect(page.get_by_role("heading", name=title, exact=True)).to_be_visible()
    wait_idle(page)
    assert_no_error(page)


def screenshot(page, folder: Path, name: str, also: str | None = None, max_height: int = SHOT_MAX_HEIGHT) -> Path:
    """The page down to SHOT_MAX_HEIGHT px: the viewport is stretched to the content, because Streamlit scrolls
    inside stMain (and the sidebar), not the document. `also`: another data-testid whose height counts."""
    heights = [page.get_by_test_id(testid).first.evaluate("e => { e.scrollTop = 0; return e.scrollHeight; }")
               for testid in ("stMain", "stSidebarContent") if testid in ("stMain", also)]
    height = max(VIEWPORT["height"], min(max(heights) + 40, max_height))
    page.mouse.move(VIEWPORT["width"] - 4, VIEWPORT["height"] // 2)  # no hover tooltip or toolbar in the picture
    path = folder / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        while True:
            page.set_viewport_size({"width": VIEWPORT["width"], "height": height})
            page.wait_for_timeout(800)  # charts re-lay themselves out
            png = page.screenshot()
            if len(png) < SHOT_MAX_BYTES or height <= 700:
                break
            height = int(height * 0.8)
    finally:
        page.set_viewport_size(VIEWPORT)
    path.write_bytes(png)
    return path


# ---------------------------------------------------------------- the pages

NAV_TITLES = ["Home", "Learning curves", "Error explorer", "Live predict", "Attention maps", "Compare", "Cutoff sweep"]


def test_a_bookmarked_page_opened_first_after_a_start_has_the_whole_frame(server, page):
    """The first request of this server is a page's URL, before any session has run dashboard.py: Streamlit's
    legacy pages/ mode would run that page alone (see ui/shell.py). This test runs first in its file."""
    open_page(page, server, "/Compare", "Compare")
    expect(page.get_by_test_id("stSidebar").get_by_text("Launch a training run")).to_be_visible()
    expect(page.get_by_test_id("stSidebar").get_by_text("Jobs", exact=True)).to_be_visible()
    links = page.get_by_test_id("stSidebarNav").get_by_role("link")
    assert [links.nth(i).inner_text().splitlines()[-1] for i in range(links.count())] == NAV_TITLES
    expect(page.get_by_role("heading", name="Compare", exact=True)).to_have_count(1)  # rendered once


def test_home(server, page, shots):
    open_page(page, server, "/", "ViTrine")
    main = page.get_by_test_id("stMain")
    expect(main.get_by_text("Leaderboard", exact=True)).to_be_visible()
    expect(main.get_by_text("Best ViT", exact=True)).to_be_visible()
    expect(main.get_by_test_id("stDataFrame").first).to_be_visible()
    expect(main.get_by_text(CNN_LABEL).first).to_be_visible()  # the default comparison, in the run picker
    expect(main.get_by_text(re.compile("highest validation accuracy of each run's final stage"))).to_be_visible()
    nav = page.get_by_test_id("stSidebarNav")
    for name in NAV_TITLES:
        expect(nav.get_by_role("link", name=name)).to_be_visible()
    screenshot(page, shots, "home")


def test_learning_curves(server, page, shots):
    open_from_nav(page, server, "Learning curves")
    main = page.get_by_test_id("stMain")
    expect(main.get_by_test_id("stVegaLiteChart").first).to_be_visible()
    expect(main.get_by_text("Per phase", exact=True)).to_be_visible()
    screenshot(page, shots, "learning_curves")


def _cells(chart) -> list[dict]:
    """Every cell of a confusion-matrix chart, from the aria-labels Vega gives its SVG rect marks."""
    cells = []
    for label in chart.locator("path[aria-label]").evaluate_all("els => els.map(e => e.getAttribute('aria-label'))"):
        true, pred, count = (re.search(rf"{key}: ([^;]+)", label) for key in ("true", "predicted", "images"))
        if true and pred and count:
            cells.append({"true": true[1].strip(), "pred": pred[1].strip(), "count": int(float(count[1])),
                          "label": label})
    return cells


def test_error_explorer_cell_click(server, page, shots):
    open_page(page, server, "/Error_explorer", "Error explorer")
    charts = page.get_by_test_id("stMain").get_by_test_id("stVegaLiteChart")
    expect(charts.nth(1)).to_be_visible()  # tl and ft matrices side by side
    tl_chart = charts.first
    cells = _cells(tl_chart)
    assert len(cells) == 100, f"expected a 10 x 10 matrix, got {len(cells)} cells"
    # The busiest confusion after tl: the page starts on the ft stage, so this click changes stage and cell.
    cell = max((c for c in cells if c["true"] != c["pred"]), key=lambda c: c["count"])
    assert cell["count"] > 0
    tl_chart.locator(f'path[aria-label="{cell["label"]}"]').click()
    wait_idle(page)
    summary = re.compile(rf"{cell['count']} test images? of {cell['true']} predicted as {cell['pred']} after tl "
                         r"\(misclassified\)")
    expect(page.get_by_text(summary)).to_be_visible(timeout=30_000)
    assert_no_error(page)
    # The cell controls followed the click, and the gallery shows that cell's images with their captions.
    expect(page.get_by_label("True class", exact=True)).to_have_value(cell["true"])
    expect(page.get_by_label("Predicted class", exact=True)).to_have_value(cell["pred"])
    captions = page.get_by_test_id("stImageCaption").filter(has_text=f"true {cell['true']} → pred {cell['pred']}")
    expect(captions).to_have_count(cell["count"])
    images = page.get_by_test_id("stImage").filter(has=page.locator("img"))
    assert images.count() >= cell["count"]
    screenshot(page, shots, "error_explorer")


def test_live_predict_upload(server, page, shots):
    open_page(page, server, "/Live_predict", "Live predict")
    page.get_by_test_id("stRadio").get_by_text("Upload", exact=True).click()
    wait_idle(page)
    uploader = page.locator('input[type="file"]')
    expect(uploader).to_have_count(1)
    image = sorted((server["data_root"] / "demo" / "cat").glob("*.png"))[0]
    uploader.set_input_files(str(image))
    wait_idle(page, timeout_s=120)  # first prediction loads TensorFlow and both models
    main = page.get_by_test_id("stMain")
    expect(main.get_by_role("heading", name=image.name)).to_be_visible(timeout=60_000)
    classes = sorted(p.name for p in (server["data_root"] / "demo").iterdir() if p.is_dir())
    top1 = main.get_by_text(re.compile(rf"^Top-1: ({'|'.join(classes)}) \(\d+\.\d%\)$"))
    expect(top1).to_have_count(2, timeout=60_000)  # one per compared run: the fixture CNN and ViT
    for label in (CNN_LABEL, VIT_LABEL):
        expect(main.get_by_text(label, exact=True).last).to_be_visible()
    expect(main.get_by_text(re.compile(r"Inference latency: [\d.]+ ms"))).to_have_count(2)
    assert_no_error(page)
    screenshot(page, shots, "live_predict")


def test_attention_maps(server, page, shots):
    open_page(page, server, "/Attention_maps", "Attention maps")
    main = page.get_by_test_id("stMain")
    expect(main.get_by_role("heading", name=re.compile("^Mean map"))).to_be_visible()
    expect(main.get_by_role("heading", name=re.compile(r"^Test images · 12 of 20"))).to_be_visible()
    expect(main.get_by_role("heading", name="Layer by layer")).to_be_visible()
    tiles = main.get_by_test_id("stImageCaption").filter(has_text=re.compile(r"ViT: \w+ [✓✗] \d+%"))
    expect(tiles).to_have_count(12)
    expect(main.get_by_text(re.compile(r"^layer \d+, head \d+$")).first).to_be_visible()
    screenshot(page, shots, "attention_maps")


# ---------------------------------------------------------------- the launcher

def _pick_option(page, combobox, text: str) -> None:
    """Open a Streamlit selectbox and click `text` (a click right after another widget may not open it)."""
    option = page.get_by_role("option").filter(has_text=re.compile(rf"^{re.escape(text)}$"))
    for _ in range(4):
        combobox.click()
        try:
            option.wait_for(timeout=2_000)
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: try once more
            page.keyboard.press("ArrowDown")
            try:
                option.wait_for(timeout=2_000)
            except Exception:  # noqa: BLE001
                continue
        option.click()
        return
    raise AssertionError(f"could not open the {text!r} option list")


def _set_number(sidebar, label: str, value: int, page) -> None:
    field = sidebar.get_by_label(label, exact=True)
    field.fill(str(value))
    field.press("Enter")
    wait_idle(page)
    expect(field).to_have_value(str(value))


def test_launcher_tiny_run(server, page, shots):
    """A tiny run launched from the sidebar completes: in the jobs list, on disk, and on Home.

    Last in this file: once completed it becomes the default CNN of the comparison on every page."""
    open_page(page, server, "/", "ViTrine")
    sidebar = page.get_by_test_id("stSidebar")
    sidebar.get_by_text("Launch a training run", exact=True).click()
    wait_idle(page, timeout_s=120)  # the first open imports TensorFlow and builds the probe model
    assert_no_error(page)
    expect(sidebar.get_by_label("Dataset", exact=True)).to_have_value("demo")
    expect(sidebar.get_by_label("Model", exact=True)).to_have_value(re.compile("^mobilenet_v2"))
    sidebar.get_by_text("none (random start)", exact=True).click()  # offline: imagenet cannot be downloaded
    wait_idle(page)
    expect(sidebar.get_by_text(re.compile("a frozen random backbone gives near-constant features"))).to_be_visible()
    _set_number(sidebar, "Image size (px)", 32, page)
    _set_number(sidebar, "Transfer-learning epochs (phase 1)", 1, page)
    _set_number(sidebar, "Fine-tuning epochs (phase 2, 0 skips it)", 1, page)
    _pick_option(page, sidebar.get_by_label("Batch size", exact=True), "16")
    wait_idle(page)
    name = sidebar.get_by_label("Run name (optional)", exact=True)
    name.fill(LAUNCH_NAME)
    name.press("Enter")
    wait_idle(page)
    command = sidebar.get_by_test_id("stCode").inner_text()
    for flag in ("--model mobilenet_v2", "--weights none", "--image-size 32", "--tl-epochs 1", "--ft-epochs 1",
                 "--batch-size 16"):
        assert flag in command, command

    sidebar.get_by_role("button", name=re.compile("Launch$")).click()
    expect(sidebar.get_by_text(re.compile(r"^Launched run \S+"))).to_be_visible(timeout=60_000)
    run_id = re.search(r"Launched run (\S+):", sidebar.get_by_text(re.compile(r"^Launched run")).inner_text())[1]
    assert_no_error(page)
    expect(sidebar.get_by_text(re.compile(rf"^\S+ {LAUNCH_NAME} · (queued|running|completed)$"))).to_be_visible()
    # The jobs list refreshes itself every 2 s while the job runs, and the whole page once it ends.
    finished = sidebar.get_by_text(re.compile(r"^Finished jobs \(\d+\)$"))
    expect(finished).to_be_visible(timeout=180_000)
    wait_idle(page)
    assert_no_error(page)
    if not sidebar.get_by_text(LAUNCH_NAME, exact=True).is_visible():
        finished.click()
        wait_idle(page)
    job_line = sidebar.get_by_test_id("stMarkdownContainer").filter(has_text=LAUNCH_NAME).filter(
        has_text=re.compile(r"· \w+$"))
    expect(job_line.last).to_have_text(re.compile(r"completed$"))
    info = json.loads((server["runs_dir"] / run_id / "run.json").read_text())
    assert info["status"] == "completed", info.get("error")
    assert info["name"] == LAUNCH_NAME and info["model"] == "mobilenet_v2" and info["image_size"] == 32

    # The form as filled, the finished job and the leaderboard with the new run, in one picture.
    screenshot(page, shots, "launcher", also="stSidebarContent", max_height=2600)

    # In a new session the new run is on Home, picked by default for comparison as the newest completed CNN.
    page.reload()
    expect(page.get_by_role("heading", name="ViTrine", exact=True)).to_be_visible(timeout=60_000)
    wait_idle(page)
    assert_no_error(page)
    picker = page.get_by_test_id("stMain").get_by_test_id("stMultiSelect").filter(
        has_text="Runs to compare on the other pages")
    expect(picker.get_by_text(re.compile(rf"{LAUNCH_NAME}$"))).to_be_visible()


def test_compare(server, page, shots):
    open_from_nav(page, server, "Compare")
    main = page.get_by_test_id("stMain")
    expect(main.get_by_text("McNemar exact p").first).to_be_visible()  # the fixture CNN and ViT share a split
    expect(main.get_by_test_id("stVegaLiteChart").first).to_be_visible()
    screenshot(page, shots, "compare")


def test_cutoff_sweep(server, page, shots):
    open_from_nav(page, server, "Cutoff sweep")
    # The fixture runs hold no study: the page says how to make one.
    expect(page.get_by_test_id("stMain").get_by_text("python -m poc sweep").first).to_be_visible()
    screenshot(page, shots, "cutoff_sweep_empty")
