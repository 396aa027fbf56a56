"""The sidebar launcher and jobs list, through Streamlit's AppTest (no browser, no real training)."""

from __future__ import annotations

import dataclasses
import subprocess

import pytest
from streamlit.testing.v1 import AppTest

from conftest import make_class_folders
from poc import artifacts, launcher

TIMEOUT = 90  # the open launcher imports TensorFlow and builds a model once


def sidebar_app():
    from ui.sidebar import render_sidebar

    render_sidebar()


@pytest.fixture
def roots(tmp_path, monkeypatch):
    data_root, runs = tmp_path / "data", tmp_path / "runs"
    make_class_folders(data_root / "shapes", {"circle": 3, "square": 3})
    monkeypatch.setenv("VITRINE_DATA_ROOT", str(data_root))
    monkeypatch.setenv("VITRINE_RUNS_DIR", str(runs))
    return data_root, runs


@pytest.fixture
def sleeper():
    """A live process in its own group, standing in for a training process."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def write_job(runs, job_id, pid, status, progress=None, name="fixture run"):
    """A train job as the launcher records it, with its run.json (and progress.json) as training writes them."""
    config = {"data": "d", "model": "mobilenet_v2", "tl_epochs": 5, "ft_epochs": 5}
    job = launcher.Job(job_id, "train", ["python", "-m", "poc", "train"], pid, artifacts.utc_now(),
                       str(launcher.jobs_dir(runs) / f"{job_id}.log"), run_id=f"run-{job_id}", config=config)
    artifacts.write_json(launcher.jobs_dir(runs) / f"{job_id}.json", dataclasses.asdict(job))
    rd = artifacts.run_dir(runs, job.run_id)
    rd.write_run({"id": rd.id, "name": name, "status": status, "pid": pid, "config": config})
    if progress:
        rd.write_progress(progress)
    return job


def open_launcher(roots) -> AppTest:
    at = AppTest.from_function(sidebar_app)
    at.session_state["launcher_open"] = True
    return at.run(timeout=TIMEOUT)


def test_closed_launcher_costs_nothing_and_says_no_jobs(roots):
    at = AppTest.from_function(sidebar_app).run(timeout=TIMEOUT)
    assert not at.exception
    assert [e.label for e in at.sidebar.expander] == ["Launch a training run"]
    assert not at.sidebar.selectbox  # the form is not built while closed
    assert any("No jobs yet" in c.value for c in at.sidebar.caption)


def test_open_launcher_offers_datasets_models_and_cutoffs_with_parameter_counts(roots):
    at = open_launcher(roots)
    assert not at.exception
    assert at.selectbox(key="launcher_data").options == ["shapes"]
    assert "vit_ti16" in " ".join(at.selectbox(key="launcher_model").options)
    cutoff = at.selectbox(key="launcher_cutoff_mobilenet_v2_64")
    assert cutoff.value == "block_13_expand"
    assert any("train from block_13_expand" in c.value and "trainable parameters in phase 2" in c.value
               for c in at.sidebar.caption)
    assert "python -m poc train --data" in at.sidebar.code[0].value


def test_invalid_launch_shows_the_reason_and_starts_nothing(roots):
    at = open_launcher(roots)
    at.radio(key="launcher_weights").set_value("path").run(timeout=TIMEOUT)
    at.text_input(key="launcher_weights_path").input("/nowhere/ckpt.npz").run(timeout=TIMEOUT)
    at.button(key="launcher_launch").click().run(timeout=TIMEOUT)
    assert not at.exception
    assert [e.value for e in at.sidebar.error] == [
        "--weights /nowhere/ckpt.npz: no such file; use none, imagenet or a checkpoint path"]
    assert launcher.list_jobs(roots[1]) == []


def test_jobs_list_shows_progress_and_cancel_stops_the_job(roots, sleeper):
    runs = roots[1]
    progress = {"phase": "tl", "epoch": 2, "epochs": 5, "step": 3, "steps": 4, "eta_seconds": 75, "metrics": {}}
    job = write_job(runs, "20250101-000000-000000-train-aaaa", sleeper.pid, "running", progress)
    write_job(runs, "20240101-000000-000000-train-bbbb", 999_999_999, "completed", name="old run")
    at = AppTest.from_function(sidebar_app).run(timeout=TIMEOUT)
    assert not at.exception
    assert any("**fixture run** · running" in m.value for m in at.sidebar.markdown)
    bar = at.sidebar.progress[0]
    assert "transfer learning · epoch 2/5 · ETA 1 min 15 s" in bar.proto.text
    assert at.sidebar.expander[1].label == "Finished jobs (1)"

    at.button(key=f"cancel_{job.id}").click().run(timeout=TIMEOUT)
    assert sleeper.wait(timeout=5) is not None  # the process group got SIGTERM
    assert artifacts.read_json(artifacts.run_dir(runs, job.run_id).run_json)["status"] == "cancelled"
    assert not at.sidebar.progress
    assert at.sidebar.expander[1].label == "Finished jobs (2)"
