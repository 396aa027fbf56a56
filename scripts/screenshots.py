"""The README's screenshots of a runs folder: `streamlit run dashboard.py` over it, each page opened through the
sidebar in headless Chromium (Debian's `chromium` + the `playwright` package), one PNG per page.

    python scripts/screenshots.py --runs-dir artifacts/runs --out docs/screenshots --prefix demo_
    python scripts/screenshots.py --runs-dir /tmp/sweep_runs --pages "Cutoff sweep" --prefix ""

The test suite's browser test checks the pages on its fixture runs and writes its own screenshots to a temporary
folder; this script is for pictures of real runs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.dashboard_server import start_dashboard, stop_group  # noqa: E402 - the browser tests' server

PAGES = ["Home", "Learning curves", "Error explorer", "Attention maps", "Compare", "Cutoff sweep"]
VIEWPORT = {"width": 1400, "height": 900}


def wait_idle(page, timeout_s: float = 120) -> None:
    """Until Streamlit has finished running the script (no 'Running...' status widget) and charts settled."""
    deadline = time.monotonic() + timeout_s
    page.wait_for_timeout(1500)
    busy = ("stStatusWidget", "stSpinner")  # the script still running, or a section still computing
    while time.monotonic() < deadline and any(page.get_by_test_id(testid).count() for testid in busy):
        page.wait_for_timeout(500)
    page.wait_for_timeout(1500)


def shoot(page, path: Path, max_height: int) -> None:
    height = page.get_by_test_id("stMain").first.evaluate("e => { e.scrollTop = 0; return e.scrollHeight; }")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": max(VIEWPORT["height"], min(height + 40,
                                                                                             max_height))})
    page.mouse.move(VIEWPORT["width"] - 4, 300)
    page.wait_for_timeout(1000)
    path.write_bytes(page.screenshot())
    page.set_viewport_size(VIEWPORT)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs-dir", required=True, type=Path)
    p.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    p.add_argument("--prefix", default="demo_")
    p.add_argument("--pages", default=",".join(PAGES), help="comma-separated page titles")
    p.add_argument("--max-height", type=int, default=2000)
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    log_path = args.out / ".streamlit.log"
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        server, url = start_dashboard(args.runs_dir.resolve(), REPO / "data", log_path)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=shutil.which("chromium"))
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(url)
            wait_idle(page)
            for title in [t.strip() for t in args.pages.split(",") if t.strip()]:
                if title != "Home":
                    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
                wait_idle(page)
                path = args.out / f"{args.prefix}{title.lower().replace(' ', '_')}.png"
                shoot(page, path, args.max_height)
                print(path)
            browser.close()
    finally:
        stop_group(server.pid, grace_s=10)
        server.wait(timeout=20)
        log_path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
