"""The sidebar launcher and jobs list, through Streamlit's AppTest (no browser, no real training)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from apptest_checks import assert_no_section_failed
from conftest import make_class_folders
from poc.runs import store
from poc.launch import launcher
from poc.runs import status as runstatus

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
    job = launcher.Job(job_id, "train", ["python", "-m", "poc", "train"], pid, store.utc_now(),
                       str(launcher.jobs_dir(runs) / f"{job_id}.log"), run_id=f"run-{job_id}", config=config)
    store.write_json(launcher.jobs_dir(runs) / f"{job_id}.json", dataclasses.asdict(job))
    rd = store.run_dir(runs, job.run_id)
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
    assert_no_section_failed(at)
    assert [e.label for e in at.sidebar.expander] == ["Launch a training run"]
    assert not at.sidebar.selectbox  # the form is not built while closed
    assert any("No jobs yet" in c.value for c in at.sidebar.caption)


def test_open_launcher_offers_datasets_models_and_cutoffs_with_parameter_counts(roots):
    at = open_launcher(roots)
    assert not at.exception
    assert_no_section_failed(at)
    assert at.selectbox(key="launcher_data").options == ["shapes"]
    assert "vit_ti16" in " ".join(at.selectbox(key="launcher_model").options)
    cutoff = at.selectbox(key="launcher_cutoff_mobilenet_v2_64")
    assert cutoff.value == "block_13_expand"
    assert any("train from block_13_expand" in c.value and "trainable parameters in phase 2" in c.value
               for c in at.sidebar.caption)
    assert "python -m poc train --data" in at.sidebar.code[0].value


def test_imagenet_is_the_first_choice_and_a_frozen_random_backbone_is_warned_about(roots):
    at = open_launcher(roots)
    weights = at.radio(key="launcher_weights")
    assert weights.value == "imagenet" and weights.options[:3] == [
        "imagenet (needs internet)", "demo (ViTrine's offline shape pretraining, 64 px)", "none (random start)"]
    assert not at.sidebar.warning
    weights.set_value("none").run(timeout=TIMEOUT)
    assert any("a frozen random backbone gives near-constant features" in w.value for w in at.sidebar.warning)
    assert "--weights none" in at.sidebar.code[0].value


def test_invalid_launch_shows_the_reason_and_starts_nothing(roots):
    at = open_launcher(roots)
    at.radio(key="launcher_weights").set_value("path").run(timeout=TIMEOUT)
    at.text_input(key="launcher_weights_path").input("/nowhere/ckpt.npz").run(timeout=TIMEOUT)
    at.button(key="launcher_launch").click().run(timeout=TIMEOUT)
    assert not at.exception
    assert_no_section_failed(at)
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
    assert_no_section_failed(at)
    assert any("**fixture run** · running" in m.value for m in at.sidebar.markdown)
    bar = at.sidebar.progress[0]
    assert "transfer learning · epoch 2/5 · ETA 1 min 15 s" in bar.proto.text
    assert at.sidebar.expander[1].label == "Finished jobs (1)"

    at.button(key=f"cancel_{job.id}").click().run(timeout=TIMEOUT)
    assert sleeper.wait(timeout=5) is not None  # the process group got SIGTERM
    assert store.read_json(store.run_dir(runs, job.run_id).run_json)["status"] == "cancelled"
    assert not at.sidebar.progress
    assert at.sidebar.expander[1].label == "Finished jobs (2)"


# ---------------------------------------------------------------- resuming interrupted runs

DEAD_PID = 2**22 + 54321  # above Linux's largest pid: never a live process


def write_run(runs, run_id, status, pid=DEAD_PID, checkpoint=False, name="killed run"):
    """A run as training leaves it when killed mid-phase: marked `status` with `pid`, its split written."""
    rd = store.run_dir(runs, run_id).create()
    rd.write_run({"id": run_id, "name": name, "status": status, "pid": pid, "model": "mobilenet_v2",
                  "class_names": ["circle", "square"],
                  "config": {"data": "d", "model": "mobilenet_v2", "tl_epochs": 4, "ft_epochs": 4}})
    store.write_csv(rd.split_csv, pd.DataFrame([["a.png", "circle", "train", "0" * 64]],
                                                    columns=store.SPLIT_COLUMNS))
    rd.write_progress({"phase": "ft", "epoch": 2, "epochs": 4, "step": 3, "steps": 7})
    if checkpoint:
        (rd.path / runstatus.CHECKPOINT_DIR).mkdir()
    return rd


def test_an_interrupted_run_is_offered_a_resume_button(roots, sleeper):
    runs = roots[1]
    killed = write_run(runs, "20250102-000000-mobilenet-v2-dead", "running")  # its process is gone
    write_run(runs, "20250102-010000-mobilenet-v2-live", "running", pid=sleeper.pid, name="live run")
    write_run(runs, "20250102-020000-mobilenet-v2-fail", "failed", name="failed, no checkpoint")
    failed = write_run(runs, "20250102-030000-mobilenet-v2-ckpt", "failed", checkpoint=True, name="failed run")
    at = AppTest.from_function(sidebar_app).run(timeout=TIMEOUT)
    assert not at.exception
    assert_no_section_failed(at)
    assert "Interrupted runs (2)" in [e.label for e in at.sidebar.expander]
    resume_keys = sorted(b.key for b in at.sidebar.button if b.key.startswith("resume_"))
    assert resume_keys == [f"resume_{killed.id}", f"resume_{failed.id}"]
    assert any("**killed run** · interrupted" in m.value for m in at.sidebar.markdown)


def test_resume_starts_a_job_that_the_jobs_list_follows(roots, fake_spawn):
    runs = roots[1]
    rd = write_run(runs, "20250102-000000-mobilenet-v2-dead", "running")
    at = AppTest.from_function(sidebar_app).run(timeout=TIMEOUT)
    at.button(key=f"resume_{rd.id}").click().run(timeout=TIMEOUT)
    assert not at.exception
    assert_no_section_failed(at)
    (wrapper, _), = fake_spawn
    assert wrapper[wrapper.index("--") + 1:] == [sys.executable, "-m", "poc", "train", "--resume", rd.id,
                                                 "--runs-dir", str(runs.resolve())]
    job, = launcher.list_jobs(runs)
    assert job.job.kind == "resume" and job.run_id == rd.id and job.active
    assert any(f"Resuming run `{rd.id}`" in s.value for s in at.sidebar.success)
    assert any("**killed run (resume)** · queued" in m.value for m in at.sidebar.markdown)
    assert "resuming from the last completed epoch" in at.sidebar.progress[0].proto.text
    assert not [b for b in at.sidebar.button if b.key == f"resume_{rd.id}"]  # one resume at a time
    at.button(key=f"cancel_{job.id}").click().run(timeout=TIMEOUT)
    assert launcher.find_job(job.id, runs).status == "cancelled"
    assert [r.id for r in launcher.resumable_runs(runs)] == [rd.id]  # the run stays as it was: resumable


def test_a_refused_resume_says_why(roots, fake_spawn):
    runs = roots[1]
    rd = write_run(runs, "20250102-000000-mobilenet-v2-dead", "running")
    at = AppTest.from_function(sidebar_app).run(timeout=TIMEOUT)
    rd.update_run(status="completed")  # finished by another process since the page was drawn
    at.button(key=f"resume_{rd.id}").click().run(timeout=TIMEOUT)
    assert not at.exception and not fake_spawn
    assert_no_section_failed(at)
    assert [e.value for e in at.sidebar.error] == [
        f"Could not resume {rd.id}: run {rd.id} cannot be resumed: it is completed; only interrupted runs and "
        "failed runs with a checkpoint resume"]



def test_a_local_keras_hub_preset_gets_its_cutoffs_and_command(roots, tmp_path):
    import keras_hub

    keras_hub.models.ViTBackbone(image_shape=(32, 32, 3), patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
                                 mlp_dim=32).save_to_preset(str(tmp_path / "vit"))
    at = open_launcher(roots)
    at.text_input(key="launcher_keras_hub").input(str(tmp_path / "vit")).run(timeout=TIMEOUT)
    assert not at.exception and not at.sidebar.error
    assert_no_section_failed(at)
    assert at.radio(key="launcher_weights_preset").value == "imagenet"  # the preset's own weights
    cutoff = at.selectbox(key=f"launcher_cutoff_keras_hub:{tmp_path / 'vit'}_64")
    assert cutoff.value == "blocks:1"  # 2/3 of the 2 blocks frozen
    assert [o.split(" · ")[0] for o in cutoff.options][:3] == ["blocks:0", "blocks:1", "blocks:2"]
    assert f"--model keras_hub:{tmp_path / 'vit'}" in at.sidebar.code[0].value


@pytest.mark.parametrize("preset, says", [("no spaces!", "is not a preset name"),
                                          ("dinov2_small", "preset dinov2_small could not be downloaded (offline?): "
                                                           "give a local preset directory")])
def test_a_keras_hub_preset_that_cannot_be_used_is_explained_within_30_seconds(roots, monkeypatch, preset, says):
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # offline: every connection is refused
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    at = open_launcher(roots)
    begin = time.monotonic()
    at.text_input(key="launcher_keras_hub").input(preset).run(timeout=TIMEOUT)
    assert time.monotonic() - begin < 30
    assert not at.exception
    assert [says in e.value for e in at.sidebar.error] == [True]
    assert "launcher_launch" not in [b.key for b in at.button]  # nothing to launch
