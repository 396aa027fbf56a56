"""The launcher under stress: simultaneous launches, crashed holders of its locks, cancel aimed at one job among
several, a dashboard restart in the middle, a crashed run resumed from the dashboard, and the demo's progress.

One real scenario (tiny trainings at 32 px) is played once by the module fixture, which records what it sees;
each test then checks one behaviour of that record. The cheaper checks stand a `sleep` in for the job process.
"""

from __future__ import annotations

import fcntl
import importlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from poc.runs import store
from poc.launch import launcher
from poc.runs import status as runstatus
from poc.config import RunConfig
from poc.errors import UserError

# Phase 2 of a few hundred epochs without early stopping: still training whenever the scenario looks.
LONG = dict(model="mobilenet_v2", weights="none", image_size=32, tl_epochs=1, ft_epochs=300, patience=300,
            batch_size=16, augment=[])
WAIT_S = 150  # for one step of the scenario on a busy 2-core machine


def _group_alive(pgid: int) -> bool:
    return pgid in runstatus.live_groups()


def _wait(what: str, check, timeout_s: float = WAIT_S, logs=()):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result is not None and result is not False:
            return result
        time.sleep(0.3)
    tails = "\n".join(f"--- {p}\n{Path(p).read_text()[-2000:]}" for p in logs if Path(p).exists())
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{tails}")


def _epochs(rd: store.RunDir) -> int:
    history = store.read_history(rd)
    return 0 if history is None else len(history)


def _statuses(module, runs: Path) -> dict[str, launcher.JobStatus]:
    return {s.id: s for s in module.list_jobs(runs)}


def _crashed_lock_holder(*locks: Path) -> int:
    """A process that takes `locks` (flock, its pid written in each, as a crashed launcher or training leaves
    them) and is SIGKILLed while holding them; returns its (dead) pid."""
    code = ("import fcntl, os, sys, time\n"
            "files = [open(p, 'a+') for p in sys.argv[1:]]\n"
            "for f in files:\n"
            "    fcntl.flock(f, fcntl.LOCK_EX); f.write(str(os.getpid())); f.flush()\n"
            "print('locked', flush=True); time.sleep(600)\n")
    for lock in locks:
        lock.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", code, *map(str, locks)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    return holder.pid


@pytest.fixture(scope="module")
def scenario(demo_roots):
    """Stale locks of a crashed process; two launches at one instant (one trains, one waits for the device);
    the training one crashes (SIGKILL of its group) and the other takes the device; the crashed run is resumed
    from the launcher and queues; the dashboard restarts; the other job is cancelled from the restarted
    dashboard; the resumed run takes over and continues its history; it is cancelled. Returns what was seen."""
    data_root, runs = demo_roots
    seen: dict = {"stale_pid": _crashed_lock_holder(runs / ".device.lock", launcher.jobs_dir(runs) / ".launch.lock")}
    config = RunConfig(data=str(data_root / "demo"), **LONG)
    barrier, started, errors = threading.Barrier(2), {}, []

    def launch(name):
        try:
            barrier.wait()
            started[name] = launcher.launch_training(config, runs)
        except Exception as exc:  # noqa: BLE001 - reported by the test, not lost in a thread
            errors.append(exc)

    threads = [threading.Thread(target=launch, args=(n,)) for n in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    jobs = list(started.values())
    seen["launched"] = jobs
    logs = [j.log for j in jobs]
    try:
        def one_trains_one_waits():
            st = _statuses(launcher, runs)
            mine = [st[j.id] for j in jobs]
            training = [s for s in mine if s.status == "running" and s.phase in ("features_tl", "tl", "ft")]
            waiting = [s for s in mine if s.status == "queued" and s.phase == "queued"]
            return (training[0], waiting[0]) if training and waiting else None

        first, second = _wait("one job training and the other waiting for the device", one_trains_one_waits,
                              logs=logs)
        seen["first"], seen["second"] = first, second
        first_rd = store.run_dir(runs, first.run_id)
        # Crash the training job (power loss of its process group) once it has a checkpoint of a phase-2 epoch.
        _wait("a completed phase-2 epoch", lambda: _epochs(first_rd) >= 2, logs=logs)
        os.killpg(first.job.pid, signal.SIGKILL)
        _wait("the crashed group to be gone", lambda: not _group_alive(first.job.pid))
        seen["history_at_crash"] = store.read_history(first_rd)
        seen["crashed_pid"] = store.read_json(first_rd.run_json)["pid"]
        seen["after_crash"] = _wait("the waiting job to take the device", lambda: (
            s := _statuses(launcher, runs))[second.id].status == "running" and s, logs=logs)
        seen["resumable"] = [r.id for r in launcher.resumable_runs(runs)]
        resume = launcher.launch_resume(first.run_id, runs)
        logs.append(resume.log)
        seen["resume"] = resume
        try:
            launcher.launch_resume(first.run_id, runs)
        except UserError as exc:
            seen["second_resume"] = str(exc)
        seen["resume_waiting"] = _wait("the resume job listed", lambda: _statuses(launcher, runs).get(resume.id))

        # The dashboard restarts: nothing in memory, only what is on disk.
        launcher._CHILDREN.clear()
        fresh = importlib.reload(launcher)
        seen["after_restart"] = _statuses(fresh, runs)
        fresh.cancel(second.id, runs, grace_s=30)
        seen["after_cancel"] = {"second": _group_alive(second.job.pid), "resume": _group_alive(resume.pid),
                                "jobs": _statuses(fresh, runs)}

        crashed_rows = len(seen["history_at_crash"])
        seen["resumed"] = _wait("the resumed run to train a new epoch", lambda: (
            (h := store.read_history(first_rd)) is not None and len(h) > crashed_rows
            and _statuses(fresh, runs)[resume.id].status == "running" and h), logs=logs)
        seen["resumed_info"] = store.read_json(first_rd.run_json)
        seen["resumed_pid_alive"] = runstatus.pid_alive(seen["resumed_info"]["pid"])
        fresh.cancel(resume.id, runs, grace_s=30)
        seen["end"] = _statuses(fresh, runs)
        seen["end_info"] = store.read_json(first_rd.run_json)
        yield seen
    finally:
        for record in launcher.list_jobs(runs):  # whatever failed, leave no process behind
            if _group_alive(record.job.pid):
                os.killpg(record.job.pid, signal.SIGKILL)


# ---------------------------------------------------------------- the scenario

@pytest.mark.system
def test_simultaneous_launches_get_distinct_runs_and_jobs(scenario):
    x, y = scenario["launched"]
    assert x.run_id != y.run_id and x.id != y.id and x.pid != y.pid


@pytest.mark.system
def test_simultaneous_launches_queue_on_the_device_lock(scenario):
    """One trains while the other waits for the device, and then takes it when the first is gone."""
    assert scenario["first"].status == "running" and scenario["second"].phase == "queued"
    assert scenario["after_crash"][scenario["second"].id].phase != "queued"


@pytest.mark.system
def test_locks_left_by_a_crashed_process_block_nothing(scenario):
    """The SIGKILLed holder of both locks (its pid still written in them) did not stop the launches or the
    training, and a crashed training's device lock passed to the job waiting for it."""
    assert not runstatus.pid_alive(scenario["stale_pid"])
    assert scenario["first"].status == "running"
    assert scenario["after_crash"][scenario["second"].id].status == "running"


@pytest.mark.system
def test_a_crashed_run_is_interrupted_and_resumable_once(scenario):
    first = scenario["first"]
    assert scenario["after_crash"][first.id].status == "interrupted"
    assert scenario["resumable"] == [first.run_id]
    assert scenario["second_resume"] == (f"run {first.run_id} cannot be resumed: a job is already training it")
    waiting = scenario["resume_waiting"]
    assert waiting.status == "queued" and waiting.phase == "resuming" and waiting.run_id == first.run_id


@pytest.mark.system
def test_jobs_are_listed_after_a_dashboard_restart(scenario):
    listed = scenario["after_restart"]
    assert listed[scenario["second"].id].status == "running"
    assert listed[scenario["resume"].id].active
    assert listed[scenario["first"].id].status == "interrupted"


@pytest.mark.system
def test_cancel_from_a_restarted_dashboard_stops_only_its_own_job(scenario):
    after = scenario["after_cancel"]
    assert after["second"] is False and after["resume"] is True
    assert after["jobs"][scenario["second"].id].status == "cancelled"
    assert after["jobs"][scenario["resume"].id].active


@pytest.mark.system
def test_the_resumed_run_continues_its_history(scenario):
    history, crashed = scenario["resumed"], scenario["history_at_crash"]
    assert list(history["epoch"]) == list(range(1, len(history) + 1))  # no epoch repeated or lost
    pd.testing.assert_frame_equal(history.iloc[:len(crashed)][["epoch", "phase"]], crashed[["epoch", "phase"]])
    info = scenario["resumed_info"]
    assert info["status"] == "running" and len(info["resumed"]) == 1
    assert info["pid"] != scenario["crashed_pid"] and scenario["resumed_pid_alive"]  # the resumed process owns it


@pytest.mark.system
def test_the_resumed_run_is_cancellable(scenario):
    assert scenario["end"][scenario["resume"].id].status == "cancelled"
    assert scenario["end_info"]["status"] == "cancelled"
    assert not _group_alive(scenario["resume"].pid)


# ---------------------------------------------------------------- without training

@pytest.fixture
def fake_spawn(fake_spawn, monkeypatch):
    """conftest's fake_spawn (`sleep 60` instead of the job), with any config accepted."""
    monkeypatch.setattr(launcher, "validate_launch", lambda config, runs_dir: config)
    return fake_spawn


def test_colliding_run_ids_are_drawn_again(tmp_path, fake_spawn, monkeypatch):
    """Ids are a timestamp and a random suffix: two launches in one second that draw the same suffix still get
    distinct runs (the id is checked against the jobs under the launch lock)."""
    draws = iter(["20260101-000000-mobilenet-v2-aaaa"] * 3 + ["20260101-000000-mobilenet-v2-bbbb"])
    monkeypatch.setattr(store, "new_run_id", lambda model: next(draws))
    barrier, jobs = threading.Barrier(2), []

    def launch():
        barrier.wait()
        jobs.append(launcher.launch_training(RunConfig(data="d"), tmp_path))

    threads = [threading.Thread(target=launch) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(j.run_id for j in jobs) == ["20260101-000000-mobilenet-v2-aaaa",
                                              "20260101-000000-mobilenet-v2-bbbb"]


def test_a_launch_lock_held_by_a_dead_process_does_not_block(tmp_path, fake_spawn):
    _crashed_lock_holder(launcher.jobs_dir(tmp_path) / ".launch.lock")
    start = time.monotonic()
    launcher.launch_training(RunConfig(data="d"), tmp_path)
    assert time.monotonic() - start < 5


def test_a_launch_waits_while_a_live_process_holds_the_launch_lock(tmp_path, fake_spawn):
    lock_path = launcher.jobs_dir(tmp_path) / ".launch.lock"
    lock_path.parent.mkdir(parents=True)
    done = threading.Event()
    with open(lock_path, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        thread = threading.Thread(target=lambda: (launcher.launch_training(RunConfig(data="d"), tmp_path),
                                                  done.set()))
        thread.start()
        assert not done.wait(0.5)  # the lock is taken: the launch waits
    assert done.wait(10)
    thread.join()


def test_the_demo_progress_moves_with_every_epoch(tmp_path):
    """Each planned demo run counts 8 + 6 epochs here: the bar counts epochs done across the planned runs,
    whatever the phase (the demo plans a CNN, a ViT and the CNN's sweep runs)."""
    from poc.train.demo import planned_runs

    planned = planned_runs()
    job = launcher.Job("demo-job", "demo", ["python", "-m", "poc", "demo"], 424242, "2026-01-01T10:00:00+00:00",
                       str(tmp_path / "demo-job.log"))
    config = {"tl_epochs": 8, "ft_epochs": 6}
    cnn = store.RunDir(tmp_path / "20260101-100001-cnn").create()
    cnn.write_run({"status": "running", "created": "2026-01-01T10:00:01+00:00", "config": config, "pid": 1})
    seen = []
    for phase, epochs in (("tl", 8), ("ft", 6)):
        for epoch in range(1, epochs + 1):
            cnn.write_progress({"phase": phase, "epoch": epoch, "epochs": epochs, "step": 5, "steps": 10})
            status = launcher.job_status(job, tmp_path, live={job.pid})
            done = (epoch - 0.5) + (8 if phase == "ft" else 0)  # epochs done, half of the current one
            assert status.progress == pytest.approx(done / 14 / planned), (phase, epoch)
            seen.append(status.progress)
    cnn.update_run(status="completed")
    vit = store.RunDir(tmp_path / "20260101-100500-vit").create()
    vit.write_run({"status": "running", "created": "2026-01-01T10:05:00+00:00", "config": config, "pid": 1})
    vit.write_progress({"phase": "tl", "epoch": 1, "epochs": 8, "step": 5, "steps": 10})
    status = launcher.job_status(job, tmp_path, live={job.pid})
    seen.append(status.progress)
    assert status.phase == f"run 2 of {planned}" and status.progress == pytest.approx((1 + 0.5 / 14) / planned)
    assert seen == sorted(seen) and len(set(seen)) == len(seen)  # it moves at every epoch, never back
