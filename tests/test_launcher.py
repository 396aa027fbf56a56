"""The dashboard's background jobs: validation before any process, real tiny runs, cancel, restart survival."""

from __future__ import annotations

import fcntl
import importlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from poc.runs import store
from poc.launch import launcher
from poc.runs import status as runstatus
from poc.cli import build_parser, config_from_args
from poc.config import RunConfig
from poc.data.demo import generate_demo_dataset
from poc.errors import UserError
from poc.train.demo import DEMO_SETTINGS, planned_runs

TINY = dict(model="mobilenet_v2", weights="none", image_size=32, tl_epochs=1, ft_epochs=1, batch_size=16,
            augment=[])
# Still running when cancelled: the naive phase 1 (cached features make 200 epochs take seconds), no early stop.
LONG = dict(tl_epochs=200, patience=200, feature_cache=False)


@pytest.fixture
def no_process(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a process was started for an invalid config")

    monkeypatch.setattr(launcher, "_start", refuse)  # the one place that spawns a job


def wait_for(runs: Path, job_id: str, done, timeout_s: float = 120):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = next(s for s in launcher.list_jobs(runs) if s.id == job_id)
        if done(status):
            return status
        time.sleep(0.5)
    log = Path(status.job.log).read_text()[-3000:]
    raise AssertionError(f"job {job_id} still {status.status} ({status.phase}) after {timeout_s}s; log:\n{log}")


@pytest.fixture(scope="module")
def jobs(demo_roots, tmp_path_factory):
    """Three real tiny jobs started together, so their start-ups overlap on a 2-core machine.

    Each has its own runs dir (its own device lock): `done` trains to completion, `long` (200 epochs) is
    cancelled while running, `queued` waits behind a device lock held here and is cancelled while waiting.
    """
    data = str(demo_roots[0] / "demo")
    dirs = {name: tmp_path_factory.mktemp(name) for name in ("done", "long", "queued")}
    with open(dirs["queued"] / ".device.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another training holds this device
        started = {
            "done": launcher.launch_training(RunConfig(data=data, **TINY), dirs["done"]),
            "long": launcher.launch_training(RunConfig(data=data, **{**TINY, **LONG}), dirs["long"]),
            "queued": launcher.launch_training(RunConfig(data=data, **TINY), dirs["queued"]),
        }
        yield {name: (job, dirs[name]) for name, job in started.items()}
    for name, job in started.items():
        launcher.cancel(job.id, dirs[name], grace_s=2)  # leave no process behind, whatever failed


# ---------------------------------------------------------------- real jobs

def test_cancel_of_a_queued_job_marks_the_run_cancelled(jobs):
    """Waiting for the device, training cannot write its own status: the launcher does, once it is dead."""
    job, runs = jobs["queued"]
    status = wait_for(runs, job.id, lambda s: s.phase == "queued" or not s.active)
    assert status.status == "queued"
    launcher.cancel(job.id, runs, grace_s=10)
    assert not _group_alive(job.pid)
    assert store.read_json(store.run_dir(runs, job.run_id).run_json)["status"] == "cancelled"
    assert launcher.job_status(launcher.load_job(job.id, runs), runs).status == "cancelled"


def test_a_job_runs_below_the_dashboards_priority(jobs):
    """The job's processes (the wrapper and the training it started, every thread of the training) run
    JOB_NICENESS steps nicer than the process that launched them, so pages and the browser get the CPU first."""
    job, runs = jobs["long"]
    assert wait_for(runs, job.id, lambda s: s.status == "running" or not s.active).status == "running"
    expected = min(19, os.getpriority(os.PRIO_PROCESS, 0) + launcher.JOB_NICENESS)
    assert launcher.JOB_NICENESS > 0
    members = {int(p.name): _stat(p) for p in Path("/proc").iterdir() if p.name.isdigit()}
    members = {pid: stat for pid, stat in members.items() if stat and int(stat[2]) == job.pid}  # field 5: group
    assert len(members) >= 2, members  # the wrapper and the training process
    assert {int(stat[16]) for stat in members.values()} == {expected}  # field 19: niceness
    training = next(pid for pid in members if pid != job.pid)
    threads = [_stat(t) for t in Path(f"/proc/{training}/task").iterdir()]
    assert {int(stat[16]) for stat in threads if stat} == {expected}
    group = Path(f"/proc/{training}/autogroup")  # Linux's autogroup: the session's scheduling group
    if group.exists():
        assert group.read_text().split()[-1] == str(launcher.JOB_NICENESS), group.read_text()


def _stat(proc: Path) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (index 0 is field 3), or None once it is gone."""
    try:
        return runstatus._proc_fields((proc / "stat").read_text())
    except OSError:
        return None


@pytest.mark.parametrize("value, message", [("ten", "is not a whole number"), ("25", "is out of range")])
def test_a_bad_job_niceness_is_refused_before_anything_starts(demo_roots, fake_spawn, monkeypatch, tmp_path, value,
                                                              message):
    monkeypatch.setenv("VITRINE_JOB_NICENESS", value)
    with pytest.raises(UserError, match=f"VITRINE_JOB_NICENESS.*{message}"):
        launcher.launch_training(RunConfig(data=str(demo_roots[0] / "demo"), **TINY), tmp_path / "runs")
    assert fake_spawn == [] and launcher.list_jobs(tmp_path / "runs") == []


def test_cancel_stops_a_running_job_and_marks_its_run_cancelled(jobs):
    """Cancelled right as the run starts (TensorFlow is tracing its data pipeline then): the training process
    itself answers the SIGTERM, the launcher's SIGKILL fallback is not what stops it."""
    job, runs = jobs["long"]
    wait_for(runs, job.id, lambda s: s.status == "running" or not s.active)
    launcher.cancel(job.id, runs, grace_s=60)
    assert not _group_alive(job.pid)
    rd = store.run_dir(runs, job.run_id)
    info = store.read_json(rd.run_json)
    assert info["status"] == "cancelled"
    assert f"run {job.run_id} cancelled" in rd.train_log.read_text()  # written by the training, not the launcher
    assert launcher.job_status(launcher.load_job(job.id, runs), runs).status == "cancelled"


def test_launched_job_trains_to_completion(jobs):
    job, runs = jobs["done"]
    status = wait_for(runs, job.id, lambda s: not s.active)
    assert status.status == "completed", status.message
    assert status.progress == 1.0
    rd = store.run_dir(runs, job.run_id)
    assert store.read_json(rd.run_json)["status"] == "completed"
    for stage in ("tl", "ft"):
        for kind in ("predictions", "confusion_matrix", "classification_report", "metrics"):
            assert rd.eval_file(stage, kind).exists(), (stage, kind)


def test_the_wrapper_records_the_exit_code(jobs):
    job, runs = jobs["done"]
    wait_for(runs, job.id, lambda s: not s.active)
    exit_file = Path(job.log).with_suffix(".exit.json")
    deadline = time.monotonic() + 30  # the process exits a moment after its run.json says completed
    while not exit_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert store.read_json(exit_file)["returncode"] == 0


def test_cancelling_a_finished_job_is_a_no_op(jobs):
    job, runs = jobs["done"]
    wait_for(runs, job.id, lambda s: not s.active)
    launcher.cancel(job.id, runs)
    assert launcher.job_status(launcher.load_job(job.id, runs), runs).status == "completed"


def test_jobs_survive_a_dashboard_restart(jobs):
    fresh = importlib.reload(launcher)  # nothing in memory: children, caches
    for name, expected in (("done", "completed"), ("long", "cancelled"), ("queued", "cancelled")):
        job, runs = jobs[name]
        listed = {s.id: s for s in fresh.list_jobs(runs)}
        assert listed[job.id].status == expected and listed[job.id].run_id == job.run_id


# ---------------------------------------------------------------- validation: a message, no process

@pytest.mark.parametrize("changes, message", [
    ({"model": "resnet5"}, "unknown model 'resnet5'"),
    ({"fine_tune_at": "999"}, "--fine-tune-at 999 is out of range"),
    ({"model": "vit_ti16", "fine_tune_at": "blocks:13"}, "vit_ti16 has 12 encoder blocks"),
    ({"tl_epochs": 0}, "--tl-epochs must be at least 1"),
    ({"ft_epochs": -1}, "--ft-epochs -1 is out of range"),
    ({"image_size": 33, "model": "vit_ti16"}, "not a multiple of vit_ti16's patch size 16"),
    ({"weights": "/nowhere/ckpt.npz"}, "no such file"),
    ({"weights": "demo"}, "no demo weights for mobilenet_v2 at 32 px"),
])
def test_invalid_settings_are_rejected_with_a_message(demo_roots, no_process, changes, message):
    data_root, runs = demo_roots
    config = RunConfig(data=str(data_root / "demo"), **{**TINY, **changes})
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        launcher.launch_training(config, runs)


def test_the_demo_backbones_are_accepted_where_they_exist(demo_roots):
    data_root, runs = demo_roots
    config = RunConfig(data=str(data_root / "demo"), **{**TINY, "image_size": 64, "weights": "demo"})
    assert launcher.validate_launch(config, runs).weights == "demo"


def test_data_folder_outside_the_data_root_is_rejected(demo_roots, tmp_path, no_process):
    generate_demo_dataset(tmp_path / "elsewhere", per_class=3, size=20)
    with pytest.raises(UserError, match="outside the data root"):
        launcher.launch_training(RunConfig(data=str(tmp_path / "elsewhere"), **TINY), demo_roots[1])
    with pytest.raises(UserError, match="outside the data root"):  # no escaping through ..
        launcher.launch_training(RunConfig(data=str(demo_roots[0] / ".." / ".." / "elsewhere"), **TINY), demo_roots[1])


def test_missing_data_folder_is_rejected(demo_roots, no_process):
    with pytest.raises(UserError, match="does not exist"):
        launcher.launch_training(RunConfig(data=str(demo_roots[0] / "nope"), **TINY), demo_roots[1])


def test_config_to_argv_round_trips_through_the_cli():
    config = RunConfig(data="data/demo", model="vit_ti16", image_size=64, tl_epochs=3, ft_epochs=0,
                       fine_tune_at="blocks:8", lr_ft=1e-4, augment=["flip"], name="my run")
    args = build_parser().parse_args(["train", *launcher.config_to_argv(config)])
    assert config_from_args(args) == config
    none = RunConfig(data="d", augment=[])
    assert config_from_args(build_parser().parse_args(["train", *launcher.config_to_argv(none)])) == none


def test_describe_cutoffs_lists_block_boundaries_with_trainable_counts():
    choices = launcher.describe_cutoffs("vit_ti16", 32)
    values = [c.value for c in choices]
    assert values[:2] == ["blocks:0", "blocks:1"] and "blocks:12" in values
    counts = [c.trainable_params for c in choices]
    assert counts == sorted(counts, reverse=True)  # freezing more never trains more


def _group_alive(pgid: int) -> bool:
    """Asked of `ps`, independently of the launcher's own /proc reading."""
    out = subprocess.run(["ps", "-e", "-o", "pgid=,stat="], capture_output=True, text=True, check=True).stdout
    return any(int(pg) == pgid and not stat.startswith("Z") for pg, stat in (ln.split() for ln in out.splitlines()))


def test_a_running_demo_reports_progress_from_the_runs_it_created(tmp_path):
    job = launcher.Job("demo-job", "demo", ["python", "-m", "poc", "demo"], 424242, "2026-01-01T10:00:00+00:00",
                       str(tmp_path / "demo-job.log"))
    assert launcher.job_status(job, tmp_path, live={job.pid}).phase == "generating demo data"
    older = store.RunDir(tmp_path / "older").create()  # from before the job: not part of this demo
    older.write_run({"status": "completed", "created": "2025-12-31T09:00:00+00:00"})
    first = store.RunDir(tmp_path / "first").create()
    first.write_run({"status": "completed", "created": "2026-01-01T10:00:05+00:00"})
    second = store.RunDir(tmp_path / "second").create()
    second.write_run({"status": "running", "created": "2026-01-01T10:01:00+00:00",
                      "config": {"tl_epochs": 4, "ft_epochs": 4}, "pid": 1})
    second.write_progress({"phase": "ft", "epoch": 3, "epochs": 4, "step": 0, "steps": 10})  # 2/4 of ft done
    status = launcher.job_status(job, tmp_path, live={job.pid})
    planned = planned_runs()  # the CNN and the ViT, then the CNN's sweep of two more cutoffs
    assert planned == len(DEMO_SETTINGS["runs"]) + len(DEMO_SETTINGS["sweep"]) == 4
    assert status.phase == f"run 2 of {planned}"
    assert status.progress == pytest.approx((1 + (4 + 2) / 8) / planned)


def test_find_job_gives_one_job_status_or_none(tmp_path):
    job = launcher.Job("20260101-100000-000000-demo-abcd", "demo", ["python", "-m", "poc", "demo"], 2**22 + 12345,
                       "2026-01-01T10:00:00+00:00", str(tmp_path / "demo.log"))
    store.write_json(launcher.jobs_dir(tmp_path) / f"{job.id}.json", job.__dict__)
    found = launcher.find_job(job.id, tmp_path)
    assert found.id == job.id and found.status == "interrupted"  # no such process, no exit code recorded
    assert launcher.find_job("no-such-job", tmp_path) is None


# ---------------------------------------------------------------- phases, demo progress, resume refusals

def _phases_written() -> set[str]:
    """Every value a `"phase": ...` entry takes in poc/ (a literal, `a if c else b`, f"eval_{stage}" or a
    stage attribute), read from the source so a new phase cannot be added without its words."""
    import ast

    phases, stages = set(), store.STAGES
    for path in (Path(launcher.PROJECT_ROOT) / "poc").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Dict):
                continue
            for key, value in zip(node.keys, node.values):
                if not (isinstance(key, ast.Constant) and key.value == "phase"):
                    continue
                for part in ([value.body, value.orelse] if isinstance(value, ast.IfExp) else [value]):
                    if isinstance(part, ast.Constant):
                        phases.add(part.value)
                    elif isinstance(part, ast.JoinedStr):  # f"eval_{stage}"
                        prefix = "".join(v.value for v in part.values if isinstance(v, ast.Constant))
                        phases |= {prefix + s for s in stages}
                    else:  # self.stage, phase.stage: a training stage
                        phases |= set(stages)
    return phases


def test_every_phase_training_writes_has_words():
    written = _phases_written()
    assert {"starting", "resuming", "queued", "features_tl", "tl", "ft", "eval_tl", "eval_ft"} <= written
    assert written <= set(launcher.PHASE_WORDS), written - set(launcher.PHASE_WORDS)


def test_the_demo_progress_ignores_its_baseline_runs(tmp_path):
    job = launcher.Job("demo-job", "demo", ["python", "-m", "poc", "demo"], 424242, "2026-01-01T10:00:00+00:00",
                       str(tmp_path / "demo-job.log"))
    cnn = store.RunDir(tmp_path / "a-cnn").create()
    cnn.write_run({"status": "completed", "created": "2026-01-01T10:00:05+00:00", "model": "mobilenet_v2"})
    for name, model in (("b-pixels", "baseline_pixels"), ("c-probe", "baseline_probe:mobilenet_v2")):
        store.RunDir(tmp_path / name).create().write_run(
            {"status": "completed", "created": "2026-01-01T10:01:00+00:00", "model": model, "family": "baseline"})
    status = launcher.job_status(job, tmp_path, live={job.pid})
    assert status.phase == "run 1 of 4"  # not "run 3 of 4" with three runs counted
    assert status.progress == pytest.approx(1 / 4)  # the CNN run of the four planned (two runs, two sweep runs)


DEAD_PID = 2**22 + 54321  # above Linux's largest pid


def _run(runs: Path, run_id: str, status: str, pid=DEAD_PID, checkpoint=False, split=True):
    rd = store.run_dir(runs, run_id).create()
    rd.write_run({"id": run_id, "status": status, "pid": pid, "model": "mobilenet_v2",
                  "class_names": ["a", "b"], "config": {"data": "d", "tl_epochs": 2, "ft_epochs": 2}})
    if split:
        rd.split_csv.write_text(",".join(store.SPLIT_COLUMNS) + "\n")
    if checkpoint:
        (rd.path / runstatus.CHECKPOINT_DIR).mkdir()
    return rd


@pytest.mark.parametrize("status, pid, checkpoint, split, message", [
    ("completed", DEAD_PID, False, True, "it is completed; only interrupted runs and failed runs with a checkpoint"),
    ("cancelled", DEAD_PID, True, True, "it is cancelled; only interrupted runs"),
    ("failed", DEAD_PID, False, True, "it is failed without a checkpoint"),
    ("running", "self", False, True, "it is running; only interrupted runs"),  # its process is alive: this one
    ("running", DEAD_PID, False, False, "it stopped before its split was written; start a new run instead"),
])
def test_resume_is_refused_with_the_reason(tmp_path, no_process, status, pid, checkpoint, split, message):
    import os

    rd = _run(tmp_path, "20260101-000000-run-0001", status, os.getpid() if pid == "self" else pid, checkpoint, split)
    with pytest.raises(UserError, match=f"run {rd.id} cannot be resumed: {message}"):
        launcher.launch_resume(rd.id, tmp_path)
    assert launcher.resumable_runs(tmp_path) == []


def test_interrupted_and_failed_with_a_checkpoint_runs_are_resumable(tmp_path):
    killed = _run(tmp_path, "20260101-000000-run-kill", "running")
    failed = _run(tmp_path, "20260101-010000-run-fail", "failed", checkpoint=True)
    _run(tmp_path, "20260101-020000-run-done", "completed")
    assert [r.id for r in launcher.resumable_runs(tmp_path)] == [failed.id, killed.id]  # newest first


def test_resume_of_an_unknown_run_is_refused(tmp_path, no_process):
    with pytest.raises(UserError, match="no run 'nope'"):
        launcher.launch_resume("nope", tmp_path)


def test_the_checkpoint_folder_is_the_one_training_writes(tmp_path):
    from poc.runs.writer import checkpoint_dir

    rd = store.RunDir(tmp_path / "run")
    assert checkpoint_dir(rd) == rd.path / runstatus.CHECKPOINT_DIR
