"""The real dashboard for the browser tests: `streamlit run dashboard.py` on a free port, and process-group
cleanup that leaves nothing behind (the server and any job it launched run in their own groups)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from poc.runs import status as runstatus

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def browser_marks(playwright_imported: bool) -> list:
    """A browser test module's pytestmark: marked `browser` and `system` (make test-system), skipped without
    Chromium or playwright."""
    return [
        pytest.mark.browser,
        pytest.mark.system,
        pytest.mark.skipif(CHROMIUM is None, reason="no `chromium` executable on PATH (apt install chromium)"),
        pytest.mark.skipif(not playwright_imported, reason="the playwright Python package is not installed"),
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.status == 200 and response.read().strip() == b"ok"
    except OSError:
        return False


def start_dashboard(runs_dir: Path, data_root: Path, log_path: Path, repo: Path | None = None
                    ) -> tuple[subprocess.Popen, str]:
    """(server process, its URL) once /_stcore/health answers; RuntimeError with the log's tail otherwise. No
    file watcher: files edited while a test runs must not put a "source changed" prompt on the page. `repo`:
    the checkout whose dashboard.py to serve (this one by default; a benchmark serves an older commit's)."""
    url = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "VITRINE_RUNS_DIR": str(runs_dir), "VITRINE_DATA_ROOT": str(data_root),
           "TF_CPP_MIN_LOG_LEVEL": "2", "VITRINE_WARM_CACHES": "1"}  # warmed as a dashboard is (ui.warm)
    cmd = [sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.port", url.rsplit(":", 1)[1],
           "--server.headless", "true", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=repo or REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while not healthy(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_group(proc.pid)
            raise RuntimeError(f"streamlit did not come up (exit {proc.poll()}):\n{log_path.read_text()[-3000:]}")
        time.sleep(0.3)
    return proc, url


def fixture_dashboard(base: Path) -> dict:
    """The dashboard over the test fixture runs (tests/fixture_runs.py) and a tiny demo data root, both under
    `base`: {"proc", "url", "runs_dir", "data_root", "log"}; the test fails with the server's log when it does
    not come up. Stop it with stop_group(proc.pid)."""
    from poc.data.demo import generate_demo_dataset
    from tests.fixture_runs import make_fixture_runs

    runs_dir = make_fixture_runs(base / "runs", base / "images")["cnn"].parent.resolve()
    data_root = base / "data"
    generate_demo_dataset(data_root / "demo", per_class=6, size=40, seed=0)
    log_path = base / "streamlit.log"
    try:
        proc, url = start_dashboard(runs_dir, data_root, log_path)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    return {"proc": proc, "url": url, "runs_dir": runs_dir, "data_root": data_root, "log": log_path}


def stop_group(pgid: int, grace_s: float = 5) -> None:
    """SIGTERM the process group, SIGKILL what is left after `grace_s`."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait_s
        while pgid in runstatus.live_groups() and time.monotonic() < deadline:
            time.sleep(0.1)
        if pgid not in runstatus.live_groups():
            return
