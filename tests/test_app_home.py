"""Home page (dashboard.py) under Streamlit's AppTest, on the shared fixture runs and on an empty runs folder."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from poc import artifacts

HOME = "../dashboard.py"  # relative to this file, as AppTest resolves it


@pytest.fixture(scope="module")
def home(fixture_runs) -> AppTest:
    """One rendered Home shared by the read-only checks (tests that click use their own)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VITRINE_RUNS_DIR", str(fixture_runs["cnn"].parent))
        yield AppTest.from_file(HOME, default_timeout=60).run()


def _texts(at: AppTest) -> str:
    kinds = ("markdown", "caption", "warning", "error", "info", "code")
    return "\n".join(str(e.value) for kind in kinds for e in getattr(at, kind))


def _board(at: AppTest) -> pd.DataFrame:
    return at.dataframe[0].value


def test_home_renders_fixture_runs_without_exception(home):
    assert not home.exception
    assert home.title[0].value == "ViTrine"


def test_leaderboard_lists_every_readable_run(home, fixture_runs):
    shown = set(_board(home)["id"])
    for key in ("cnn", "vit", "no_ft", "many_classes", "failed", "running"):
        assert fixture_runs[key].name in shown, key


def test_accuracy_is_shown_with_its_interval(home, fixture_runs):
    metrics = artifacts.read_json(artifacts.RunDir(fixture_runs["cnn"]).eval_file("ft", "metrics"))
    row = _board(home).set_index("id").loc[fixture_runs["cnn"].name]
    low, high = metrics["accuracy_ci95"]
    assert row["accuracy ft [95% CI]"] == f"{metrics['accuracy']:.3f} [{low:.2f}, {high:.2f}]"


def test_corrupt_run_is_flagged_not_crashing(home, fixture_runs):
    corrupt = fixture_runs["corrupt"].name
    assert corrupt not in set(_board(home)["id"])
    assert corrupt in _texts(home)
    assert "run.json missing or unreadable" in _texts(home)


def test_failed_run_shows_its_error(home, fixture_runs):
    error = artifacts.read_json(artifacts.RunDir(fixture_runs["failed"]).run_json)["error"]
    assert error in _texts(home)
    assert _board(home).set_index("id").loc[fixture_runs["failed"].name, "error"] == error


def test_running_run_shows_its_progress(home, fixture_runs):
    row = _board(home).set_index("id").loc[fixture_runs["running"].name]
    assert row["status"] == "running"
    assert row["progress"] == pytest.approx(((2 - 1) * 5 + 3) / (5 * 5))  # epoch 2 step 3 of 5 x 5 steps


def test_default_comparison_is_latest_cnn_and_latest_vit(home, fixture_runs):
    compare = home.multiselect(key="home.compare")
    assert compare.value == [fixture_runs["cnn"].name, fixture_runs["vit"].name]


def test_vit_cnn_gap_is_reported_with_an_interval(home):
    gap = [m for m in home.metric if m.label.startswith("ViT − CNN")]
    assert gap and gap[0].value.endswith("%")
    assert "95% CI [" in _texts(home)


def test_family_filter_keeps_only_that_family(fixture_runs, monkeypatch):
    monkeypatch.setenv("VITRINE_RUNS_DIR", str(fixture_runs["cnn"].parent))
    at = AppTest.from_file(HOME, default_timeout=60).run()
    at.multiselect(key="home.f_family").set_value(["vit"]).run()
    assert not at.exception
    assert set(_board(at)["model"]) == {"vit_ti16"}


def test_empty_runs_dir_offers_the_demo(tmp_path, monkeypatch):
    monkeypatch.setenv("VITRINE_RUNS_DIR", str(tmp_path / "no_runs_yet"))
    at = AppTest.from_file(HOME, default_timeout=60).run()
    assert not at.exception
    assert [b.label for b in at.button] == ["Generate demo runs"]
    assert "python -m poc demo" in _texts(at)


def _fake_launcher(monkeypatch, launch, jobs=()):
    module = types.ModuleType("poc.launcher")
    module.launch_demo = launch
    module.list_jobs = lambda runs_dir=None: list(jobs)
    monkeypatch.setitem(sys.modules, "poc.launcher", module)


def test_demo_button_follows_the_job_with_a_progress_bar(tmp_path, monkeypatch):
    job = types.SimpleNamespace(id="job-1", status="running", progress=0.4, message="training the CNN")
    _fake_launcher(monkeypatch, lambda runs_dir=None: job, [job])
    monkeypatch.setenv("VITRINE_RUNS_DIR", str(tmp_path / "runs"))
    at = AppTest.from_file(HOME, default_timeout=60).run()
    at.button[0].click().run()
    assert not at.exception
    bars = at.get("progress")
    assert len(bars) == 1 and bars[0].proto.value == 40


def test_demo_launch_failure_is_an_error_message(tmp_path, monkeypatch):
    def refuse(runs_dir=None):
        raise RuntimeError("another demo is already running")

    _fake_launcher(monkeypatch, refuse)
    monkeypatch.setenv("VITRINE_RUNS_DIR", str(tmp_path / "runs"))
    at = AppTest.from_file(HOME, default_timeout=60).run()
    at.button[0].click().run()
    assert not at.exception
    assert any("another demo is already running" in e.value for e in at.error)


def test_malformed_runs_are_flagged_and_the_rest_still_shown(fixture_runs, monkeypatch, tmp_path):
    import json
    import shutil

    runs = tmp_path / "runs"
    good = runs / fixture_runs["vit"].name
    shutil.copytree(fixture_runs["vit"], good, ignore=shutil.ignore_patterns("*.h5"))
    junk = runs / "20250103-000000-junk-metrics"
    shutil.copytree(fixture_runs["cnn"], junk, ignore=shutil.ignore_patterns("*.h5"))
    metrics = json.loads((junk / "eval" / "ft" / "metrics.json").read_text())
    (junk / "eval" / "ft" / "metrics.json").write_text(json.dumps({**metrics, "accuracy": "high", "macro_f1": "x"}))
    (runs / "20250103-000001-json-list").mkdir()
    (runs / "20250103-000001-json-list" / "run.json").write_text("[1, 2, 3]")
    monkeypatch.setenv("VITRINE_RUNS_DIR", str(runs))
    at = AppTest.from_file(HOME, default_timeout=60).run()
    assert not at.exception
    assert {good.name, junk.name} <= set(_board(at)["id"])
    assert "20250103-000001-json-list" in _texts(at)
    assert "accuracy is not a number" in _texts(at)
