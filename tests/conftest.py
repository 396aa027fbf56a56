"""Shared fixtures: tiny datasets and images generated on the fly, never downloaded or committed."""

from __future__ import annotations

import gc
import os
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image

from poc.data.demo import generate_demo_dataset

# The in-process AppTests run page after page over many runs folders: no background warming there (ui.warm). The
# dashboards the browser tests serve warm their caches as a real one does (tests/dashboard_server.py).
os.environ["VITRINE_WARM_CACHES"] = "0"

# Each xdist worker (and every process it starts) gets its share of the cores for TensorFlow's thread pools, as a
# Ray job does (poc.launch.ray_executor): two workers on two cores each asking for two threads only fight. Measured
# on the 2-core machine: the default tier's user CPU 12:38 against 13:31 (wall 7 min 42 s against 8 min 08 s).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _SHARE = str(max(1, (os.cpu_count() or 1) // _WORKERS))
    for _name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(_name, _SHARE)


def _scan_component_manifests_once() -> None:
    """Each new AppTest scans the metadata of every installed distribution for Streamlit components (about 0.35 s,
    a tenth of the page tests' time, py-spy); the installed packages do not change during a test session, so the
    scan's answer is kept for the process. A test-speed patch only: when a Streamlit upgrade moves the scanner,
    each AppTest scans again and nothing else changes."""
    import functools

    try:
        from streamlit.components.v2 import manifest_scanner
    except ImportError:
        return
    scan = getattr(manifest_scanner, "scan_component_manifests", None)
    if scan is not None and not hasattr(scan, "cache_info"):
        manifest_scanner.scan_component_manifests = functools.cache(scan)


_scan_component_manifests_once()


@pytest.fixture(autouse=True)
def frozen_heap(request):
    """Streamlit calls keras.backend.clear_session() after every script run once Keras is imported, and Keras's
    clear_session runs a full gc.collect(): in a test process that holds TensorFlow and Keras, about half a second
    per AppTest run, a third of the page tests' time (py-spy over test_app_home and test_app_curves_errors). In the
    modules that run pages, each test starts with the garbage collected and the survivors frozen (gc.freeze, out
    of the collector's walk), so each collection during the test walks only what the test made."""
    if "AppTest" in vars(request.module):
        gc.collect()
        gc.freeze()
    yield


def make_image(path: Path, mode: str = "RGB", size: tuple[int, int] = (16, 16), color=0, **save_kwargs) -> Path:
    """Write a uniform `mode` image of `size` filled with `color`; the format follows the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, **save_kwargs)
    return path


def make_class_folders(root: Path, counts: dict[str, int], size: tuple[int, int] = (12, 12)) -> Path:
    """`root/<class>/<i>.png` with `counts[class]` distinct images (each a different shade)."""
    for class_index, (label, count) in enumerate(sorted(counts.items())):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            make_image(root / label / f"{i:03d}.png", "RGB", size, (class_index * 20, i % 256, i // 256))
    return root


def settled(at, timeout_s: float = 180):
    """An AppTest of the Live predict (or Attention maps) page rerun until no run's model is still loading in the
    background (the page shows itself first and predicts once the models are built). It waits on the serving
    process's builds (ui.data.models_loading) between reruns: rerunning the page every 0.2 s instead cost half a
    CPU-second a rerun, taken from the build it waited for."""
    from ui import data

    deadline = time.monotonic() + timeout_s
    while any("Loading this run's model" in c.value for c in at.caption):
        while data.models_loading():
            assert time.monotonic() < deadline, "the models were not ready in time"
            time.sleep(0.1)
        assert time.monotonic() < deadline, "the models were not ready in time"
        at.run()
    return at


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory) -> Path:
    """The cartoon demo dataset: 10 classes x 12 images of about 40 px (seed 0), shared by all tests."""
    root = tmp_path_factory.mktemp("demo") / "data"
    generate_demo_dataset(root, per_class=12, size=40, seed=0)
    return root


@pytest.fixture(scope="session")
def fixture_runs(tmp_path_factory) -> dict[str, Path]:
    """The dashboard's fixture runs (tests/fixture_runs.py), shared read-only. Under xdist the first worker that
    needs them builds them in the session's folder and the others read that folder (about 15 s of CPU saved); a
    worker that needs them while another is still building builds its own copy rather than wait idle."""
    import fcntl
    import json

    from fixture_runs import make_fixture_runs

    own = tmp_path_factory.getbasetemp()
    session = own.parent if os.environ.get("PYTEST_XDIST_WORKER") else own  # pytest-N: this session's workers
    base, index = session / "fixture_runs", session / "fixture_runs.json"
    with open(session / "fixture_runs.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another worker is building them now
            base = tmp_path_factory.mktemp("fixture_runs")
            return make_fixture_runs(base / "runs", base / "images")
        if not index.is_file():
            runs = make_fixture_runs(base / "runs", base / "images")
            index.write_text(json.dumps({key: str(path) for key, path in runs.items()}))
    return {key: Path(path) for key, path in json.loads(index.read_text()).items()}


@pytest.fixture
def fake_spawn(monkeypatch):
    """`launcher._spawn` starts `sleep 60` in its own process group instead of the job's wrapper: the job record,
    the launch lock and the jobs list are the real ones, and no training runs. Yields [(wrapper argv, process)]."""
    from poc.launch import launcher

    started = []

    def spawn(wrapper, env, log):
        proc = subprocess.Popen(["sleep", "60"], start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
        started.append((wrapper, proc))
        return proc

    monkeypatch.setattr(launcher, "_spawn", spawn)
    yield started
    for _, proc in started:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def demo_roots(tmp_path_factory):
    """(data root holding a tiny demo dataset, runs dir), both exported as the dashboard and the launcher see
    them; one pair per test module."""
    base = tmp_path_factory.mktemp("roots")
    data_root, runs = base / "data", base / "runs"
    generate_demo_dataset(data_root / "demo", per_class=6, size=40, seed=0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VITRINE_DATA_ROOT", str(data_root))
        mp.setenv("VITRINE_RUNS_DIR", str(runs))
        yield data_root, runs.resolve()
