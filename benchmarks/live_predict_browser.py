"""Live predict in a real browser on a freshly started dashboard: when the page shows, when its image shows,
when the first and the second run's predictions show, for this checkout and (with --baseline REF) an older
commit, on the same 200-run folder, side by side in one run.

Two ways in: "bookmark" opens /Live_predict as the server's first request; "from Home" opens Home, waits for it,
then clicks Live predict in the navigation (times from the click). Each server is started fresh, so every
figure includes importing TensorFlow and building the two default runs' models.

    python benchmarks/live_predict_browser.py                      # this checkout, 2 repeats
    python benchmarks/live_predict_browser.py --baseline 3a7472b   # plus that commit, alternating
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from tests.dashboard_server import start_dashboard, stop_group  # noqa: E402

MARKS = ("page", "image", "first prediction", "both predictions")
TOP1 = re.compile(r"^Top-1: ")


def _dashboard_benchmark():
    spec = importlib.util.spec_from_file_location("dashboard_benchmark", ROOT / "benchmarks" / "dashboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _visit(browser, url: str, way: str) -> dict[str, float]:
    """Seconds from the request (bookmark) or the navigation click (from Home) to each of MARKS."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        if way == "from Home":
            page.goto(url + "/")
            page.get_by_test_id("stSidebarNav").get_by_role("link", name="Live predict").wait_for(timeout=120_000)
            page.get_by_text("Leaderboard", exact=True).first.wait_for(timeout=120_000)
            start = time.monotonic()
            page.get_by_test_id("stSidebarNav").get_by_role("link", name="Live predict").click()
        else:
            start = time.monotonic()
            page.goto(url + "/Live_predict")
        main = page.get_by_test_id("stMain")
        times = {}
        main.get_by_role("heading", name="Live predict", exact=True).wait_for(timeout=120_000)
        times["page"] = time.monotonic() - start
        main.locator("h3").first.wait_for(timeout=120_000)
        times["image"] = time.monotonic() - start
        main.get_by_text(TOP1).first.wait_for(timeout=180_000)
        times["first prediction"] = time.monotonic() - start
        main.get_by_text(TOP1).nth(1).wait_for(timeout=180_000)
        times["both predictions"] = time.monotonic() - start
        return times
    finally:
        page.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--predictions", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=2, help="fresh servers per way in and code (medians printed)")
    p.add_argument("--baseline", default=None, help="a git ref whose dashboard to time on the same runs")
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    bench = _dashboard_benchmark()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = bench.make_runs(tmp, args.runs, args.predictions)
        codes = {"ours": ROOT}
        if args.baseline:
            codes[args.baseline] = bench.baseline_checkout(args.baseline, tmp / "baseline")
        results: dict[tuple[str, str], list[dict]] = {}
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=shutil.which("chromium"))
                for _ in range(args.repeats):
                    for way in ("bookmark", "from Home"):
                        for label, code in codes.items():  # side by side: the codes take turns
                            proc, url = start_dashboard(runs, tmp, tmp / f"{label}.log", repo=code)
                            try:
                                results.setdefault((label, way), []).append(_visit(browser, url, way))
                            finally:
                                stop_group(proc.pid)
                browser.close()
        finally:
            if args.baseline:
                subprocess.run(["git", "worktree", "remove", "--force", str(codes[args.baseline])], cwd=ROOT,
                               capture_output=True)
    print(f"Live predict, fresh server, {args.runs} runs, median of {args.repeats}; seconds to:")
    print(f"{'':28}" + "".join(f"{m:>18}" for m in MARKS))
    for (label, way), visits in results.items():
        cells = [statistics.median(v[m] for v in visits) for m in MARKS]
        print(f"{label + ', ' + way:<28}" + "".join(f"{c:>16.1f} s" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
