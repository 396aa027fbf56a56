"""Background training jobs started from the dashboard, owned by this module rather than a browser session.

A job is one process group: a small wrapper (`python -m poc.launch.launcher run-job EXIT_FILE -- CMD...`) that runs
`python -m poc train ... --run-id ID` (or `train --resume RUN`, or `python -m poc demo`) and records its exit code when it ends. All
state is on disk under `<runs_dir>/.jobs/` (the runs listing skips dot-folders), so jobs outlive a browser
reload or a dashboard restart:

    <id>.json       id, kind, run_id, argv, pid (= process group id), created, log, config, cancelled
    <id>.log        stdout + stderr of the job
    <id>.exit.json  returncode, finished (written by the wrapper; absent while running or when killed)

A train job's status comes from its run's run.json (the training process writes it); liveness comes from the
process group (`poc.runs.status.live_groups`, read from /proc), so a zombie or a re-parented child never looks
alive or dead by mistake. Status words, liveness and progress fractions all belong to `poc.runs.status`.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from poc.runs import store
from poc.runs import status as runstatus
from poc.runs.jobs import Job, JobStatus, jobs_dir, load_job  # the job records (JobStatus: what list_jobs returns)
from poc.runs.jobs import job_file as _job_file
from poc.runs.jobs import jobs_on_disk as _jobs_on_disk
from poc.runs.jobs import new_job_id as _new_job_id
from poc.runs.jobs import runs_path as _runs_dir
from poc.runs.jobs import save as _save
from poc.config import RunConfig, config_to_argv  # config_to_argv: also the sidebar's "equivalent command"
from poc.config import default_data_root as data_root  # datasets the launcher accepts live under it
from poc.errors import UserError
from poc.train.plan import validate  # the one check of a run's settings (CLI, sidebar, sweeps)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Every phase a training process writes to progress.json (poc.train.training, poc.train.phases, poc.runs.writer).
PHASE_WORDS = {"starting": "starting", "resuming": "resuming from the last completed epoch",
               "queued": "waiting for the device", "features_tl": "computing backbone features (phase 1)",
               "tl": "transfer learning", "ft": "fine-tuning",
               "eval_tl": "evaluating (after transfer learning)", "eval_ft": "evaluating (after fine-tuning)"}
TRAIN_KINDS = ("train", "resume")  # jobs that follow one run's run.json

# Children started by this process: polled so they are reaped (an unreaped child is a zombie that still
# answers kill(pid, 0)). After a dashboard restart the old children belong to init, which reaps them.
_CHILDREN: dict[int, subprocess.Popen] = {}


# ---------------------------------------------------------------- launching

def launch_training(config: RunConfig, runs_dir: Path | str | None = None) -> Job:
    """Validate `config` (UserError with the reason, nothing started), then start training in the background."""
    runs_dir = _runs_dir(runs_dir)
    config = validate_launch(config, runs_dir)
    with _launch_lock(runs_dir):  # two sessions launching at one instant get distinct run ids
        run_id = _free_run_id(config.model, runs_dir)
        argv = [sys.executable, "-m", "poc", "train", *config_to_argv(config), "--runs-dir", str(runs_dir),
                "--run-id", run_id]
        return _start("train", argv, runs_dir, run_id=run_id, config=config.to_dict())


def launch_resume(run_id: str, runs_dir: Path | str | None = None) -> Job:
    """`python -m poc train --resume RUN` in the background for a run `resume_refusal` accepts (UserError with
    the reason otherwise, nothing started). The job follows the run like a launched one, and can be cancelled."""
    runs_dir = _runs_dir(runs_dir)
    rd = store.find_run(run_id, runs_dir)
    if rd is None:
        raise UserError(f"no run {run_id!r} in {runs_dir}")
    with _launch_lock(runs_dir):  # a second click, or another session, then finds this job and is refused
        run = store.RunRecord(rd, store.read_json(rd.run_json) or {})
        reason = runstatus.resume_refusal(run, _busy_runs(runs_dir))
        if reason:
            raise UserError(f"run {rd.id} cannot be resumed: {reason}")
        argv = [sys.executable, "-m", "poc", "train", "--resume", rd.id, "--runs-dir", str(runs_dir)]
        return _start("resume", argv, runs_dir, run_id=rd.id, config=run.info.get("config"))


def resumable_runs(runs_dir: Path | str | None = None) -> list[store.RunRecord]:
    """The runs `launch_resume` accepts, newest first. Reads run.json only: cheap enough for every refresh."""
    runs_dir = _runs_dir(runs_dir)
    busy = _busy_runs(runs_dir)
    runs = [store.RunRecord(rd, store.read_json(rd.run_json) or {}) for rd in store.run_dirs(runs_dir)]
    return [r for r in runs if r.readable and runstatus.resume_refusal(r, busy) is None]


@contextlib.contextmanager
def _launch_lock(runs_dir: Path):
    """Serialises choosing a run id and recording its job, across threads and processes (two browser sessions,
    two dashboards). A flock: the kernel drops it when its holder dies, so a crashed launcher blocks no one."""
    folder = jobs_dir(runs_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".launch.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _free_run_id(model: str, runs_dir: Path) -> str:
    """A run id that no run directory and no job uses (under _launch_lock: the random suffix may collide)."""
    taken = {job.run_id for job in _jobs_on_disk(runs_dir)}
    while True:
        run_id = store.new_run_id(model)
        if run_id not in taken and not store.run_dir(runs_dir, run_id).path.exists():
            return run_id


def _busy_runs(runs_dir: Path) -> set[str]:
    """Runs that a live train or resume job is training."""
    live = _live_groups()
    return {job.run_id for job in _jobs_on_disk(runs_dir) if job.kind in TRAIN_KINDS and job.pid in live}


def launch_demo(runs_dir: Path | str | None = None) -> Job:
    """`python -m poc demo` in the background: demo data plus one CNN and one ViT run."""
    runs_dir = _runs_dir(runs_dir)
    data_dir = data_root().resolve() / "demo"
    argv = [sys.executable, "-m", "poc", "demo", "--runs-dir", str(runs_dir), "--data-dir", str(data_dir)]
    return _start("demo", argv, runs_dir)


def launch_sweep(config: RunConfig, cutoffs: str, runs_dir: Path | str | None = None) -> Job:
    """`python -m poc sweep` in the background: one phase 1 (none when config.from_run names a run: its phase 1
    is reused), then one fine-tuning run per cutoff, `cutoffs` being "auto" or a comma list in --fine-tune-at
    syntax. The config and every cutoff are checked first (UserError with the reason, nothing started), and
    "auto" is resolved here, so the job records the cutoffs it trains (config["study"])."""
    from poc.train import studies

    runs_dir = _runs_dir(runs_dir)
    config = _in_data_root(RunConfig.from_dict({**config.to_dict(), "fine_tune_at": None}))
    with _probe_lock:  # resolving the cutoffs toggles trainable flags on the shared probe models (poc.models.probe)
        checked, resolved = studies.validate_sweep(config, cutoffs, runs_dir)
    config = checked.config
    study_id = studies.new_study_id("sweep", config.model)
    values = [c.value for c in resolved]
    argv = [sys.executable, "-m", "poc", "sweep", *config_to_argv(config), "--cutoffs", ",".join(values),
            "--runs-dir", str(runs_dir), "--study-id", study_id]
    study = {"id": study_id, "cutoffs": values, "planned": len(values) + (0 if config.from_run else 1)}
    return _start("sweep", argv, runs_dir, config={**config.to_dict(), "study": study})


def _sweep_name(job: Job) -> str:
    config = job.config or {}
    return f"sweep {config.get('model')} ({len((config.get('study') or {}).get('cutoffs') or [])} cutoffs)"


def _sweep_progress(js: JobStatus, runs_dir: Path) -> JobStatus:
    """A running sweep's progress over its planned runs, from the runs whose study block names its study."""
    study = (js.job.config or {}).get("study") or {}
    mine = [r for r in store.list_runs(runs_dir) if (r.info.get("study") or {}).get("id") == study.get("id")]
    return _plan_progress(js, mine, int(study.get("planned") or 1), "checking the cutoffs")


def _plan_progress(js: JobStatus, mine: list[store.RunRecord], planned: int, waiting: str) -> JobStatus:
    """A job's progress over the `planned` runs it makes, from those started so far (`mine`): it moves with every
    epoch of the run in progress, not only when a whole run completes. `waiting`: the phase before the first."""
    if not mine:
        js.phase, js.progress = waiting, 0.0
        return js
    js.phase = f"run {min(len(mine), planned)} of {planned}"
    js.progress = runstatus.runs_fraction(
        [(r.status, store.read_progress(r.dir), r.info.get("config")) for r in mine], planned)
    return js


def validate_launch(config: RunConfig, runs_dir: Path) -> RunConfig:
    """Everything the dashboard can check before starting a process: the one run validation
    (`poc.train.plan.validate`) of a dataset under the data root. Returns a copy with an absolute data path."""
    return validate(_in_data_root(config), runs_dir).config


def _in_data_root(config: RunConfig) -> RunConfig:
    """A copy of `config` whose dataset is a folder under the data root, named by its absolute path (a run
    --from-run takes its data and split from the source run, which may predate the data root)."""
    config = RunConfig.from_dict(config.to_dict())
    if not config.from_run:
        config.data = str(_check_data_folder(config.data))
    return config


def _check_data_folder(data: str) -> Path:
    root = data_root().resolve()
    path = Path(data).expanduser().resolve()  # resolves .. and symlinks before the containment check
    if not path.is_relative_to(root):
        raise UserError(f"data folder {data} is outside the data root {root}; put the dataset under it "
                        "(one sub-folder per class) or set VITRINE_DATA_ROOT")
    if not path.is_dir():
        raise UserError(f"data folder {data} does not exist under {root}")
    if sum(1 for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")) < 2:
        raise UserError(f"data folder {data} needs one sub-folder per class (at least 2)")
    return path


def _start(kind: str, argv: list[str], runs_dir: Path, run_id: str | None = None,
           config: dict | None = None) -> Job:
    job_id = _new_job_id(kind)
    folder = jobs_dir(runs_dir)
    folder.mkdir(parents=True, exist_ok=True)
    log_path = _job_file(runs_dir, job_id, ".log")
    exit_path = _job_file(runs_dir, job_id, ".exit.json")
    wrapper = [sys.executable, "-m", "poc.launch.launcher", "run-job", str(exit_path), "--", *argv]
    env = {**os.environ, "VITRINE_RUNS_DIR": str(runs_dir), "PYTHONUNBUFFERED": "1"}
    with open(log_path, "ab") as log:
        proc = _spawn(wrapper, env, log)
    _CHILDREN[proc.pid] = proc
    job = Job(job_id, kind, argv, proc.pid, store.utc_now(), str(log_path), run_id, config)
    _save(job, runs_dir)
    return job


def _spawn(wrapper: list[str], env: dict, log) -> subprocess.Popen:
    """The one place a job's process starts (the sidebar tests stand a harmless process in for it)."""
    return subprocess.Popen(wrapper, cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)  # own group: cancel kills all


# ---------------------------------------------------------------- status

def list_jobs(runs_dir: Path | str | None = None) -> list[JobStatus]:
    """Every job on disk, newest first, with its status and progress."""
    runs_dir = _runs_dir(runs_dir)
    live = _live_groups()
    return [job_status(j, runs_dir, live) for j in _jobs_on_disk(runs_dir)]


def find_job(job_id: str, runs_dir: Path | str | None = None) -> JobStatus | None:
    """One job's status (None when there is no such job), e.g. the demo job the Home page follows."""
    job = load_job(job_id, runs_dir)
    return None if job is None else job_status(job, runs_dir)


def job_status(job: Job, runs_dir: Path | str | None = None, live: set[int] | None = None) -> JobStatus:
    runs_dir = _runs_dir(runs_dir)
    alive = job.pid in (live if live is not None else _live_groups())
    exit_info = store.read_json(_job_file(runs_dir, job.id, ".exit.json"))
    if job.kind in TRAIN_KINDS:
        return _train_status(job, runs_dir, alive, exit_info)
    sweep = job.kind == "sweep"
    name = _sweep_name(job) if sweep else "demo (data + CNN + ViT runs)"
    if alive:
        return (_sweep_progress if sweep else _demo_progress)(JobStatus(job, "running", name), runs_dir)
    if exit_info and exit_info.get("returncode") == 0:
        return JobStatus(job, "completed", name, progress=1.0)
    if job.cancelled:
        return JobStatus(job, "cancelled", name, message="cancelled by the user")
    if exit_info:
        return JobStatus(job, "failed", name, message=_log_message(job))
    return JobStatus(job, "interrupted", name, message="the process stopped without recording an exit code")


def _train_status(job: Job, runs_dir: Path, alive: bool, exit_info: dict | None) -> JobStatus:
    rd = store.run_dir(runs_dir, job.run_id)
    info = store.read_json(rd.run_json)
    config = (info or {}).get("config") or job.config or {}
    name = (info or {}).get("name") or config.get("name") or job.run_id
    if info is None:  # the process has not created its run directory yet, or died before it could
        if alive:
            return JobStatus(job, "queued", name, phase="starting", progress=0.0)
        if job.cancelled:
            return JobStatus(job, "cancelled", name, message="cancelled before the run started")
        return JobStatus(job, "failed", name, message=_log_message(job))
    status = info.get("status", "unknown")
    progress = store.read_progress(rd) or {}
    if job.kind == "resume":
        name = f"{name} (resume)"
        taken_over = runstatus.is_active(status) and runstatus.pid_alive(info.get("pid"))
        if alive and status != "completed" and not taken_over:  # still loading, or waiting for the device
            return JobStatus(job, "queued", name, phase="resuming", progress=runstatus.run_fraction(progress, config))
    if runstatus.is_active(status) and not alive:
        status = "cancelled" if job.cancelled else "interrupted"
    js = JobStatus(job, status, name, message=info.get("error"))
    if status == "completed":
        js.progress = 1.0
    elif runstatus.is_active(status):
        js.phase = progress.get("phase") or "starting"
        js.epoch, js.epochs = progress.get("epoch"), progress.get("epochs")
        js.eta_seconds = progress.get("eta_seconds")
        js.metrics = progress.get("metrics") or {}
        js.progress = runstatus.run_fraction(progress, config)
    elif status == "interrupted":
        js.message = "the training process stopped without finishing (killed?); see " + job.log
    elif status == "failed" and not js.message:
        js.message = _log_message(job)
    return js


def _demo_progress(js: JobStatus, runs_dir: Path) -> JobStatus:
    """A running demo's progress from the runs it has created so far (each started after the job)."""
    from poc.train.demo import DEMO_SETTINGS

    mine = [r for r in store.list_runs(runs_dir)
            if str(r.info.get("created") or "") >= js.job.created and not _is_baseline(r.info)]
    return _plan_progress(js, mine, len(DEMO_SETTINGS["runs"]), "generating demo data")


def _is_baseline(info: dict) -> bool:
    """A baseline run (poc.train.baselines) the demo adds after its CNN: not one of DEMO_SETTINGS["runs"]."""
    return info.get("family") == "baseline" or str(info.get("model") or "").startswith("baseline")


def _log_message(job: Job) -> str:
    """The CLI's one-line error (`error: ...`) from the end of the job log, else its last line."""
    try:
        with open(job.log, "rb") as f:
            f.seek(max(0, os.path.getsize(job.log) - 8192))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "the job log is missing"
    errors = [ln for ln in lines if ln.startswith(("error:", "internal error:"))]
    return (errors or lines or ["the process exited without output"])[-1]


def _live_groups() -> set[int]:
    """Process group ids with at least one live (non-zombie) member; our own finished children are reaped
    first (an unreaped child is a zombie)."""
    for pid, proc in list(_CHILDREN.items()):
        if proc.poll() is not None:
            del _CHILDREN[pid]
    return runstatus.live_groups(candidates=list(_CHILDREN))


# ---------------------------------------------------------------- cancelling

def cancel(job_id: str, runs_dir: Path | str | None = None, grace_s: float = 10) -> None:
    """SIGTERM the job's process group, SIGKILL after `grace_s`; a finished job is left alone."""
    runs_dir = _runs_dir(runs_dir)
    job = load_job(job_id, runs_dir)
    if job is None:
        raise UserError(f"no job {job_id!r} in {jobs_dir(runs_dir)}")
    if job.pid <= 1 or job.pid == os.getpgrp() or job.pid not in _live_groups():
        return
    job.cancelled = store.utc_now()
    _save(job, runs_dir)
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5)):
        try:
            os.killpg(job.pid, sig)
        except ProcessLookupError:
            break
        if _wait_gone(job.pid, wait_s):
            break
    if job.pid in _live_groups() or job.kind != "train":  # a cancelled resume leaves its run resumable
        return
    # Training writes its own run.json, also on SIGTERM once it trains. Killed while starting or waiting for
    # the device (or by SIGKILL) it cannot, so the run would read "queued" forever: the process is gone, no
    # one else writes this run.json any more, and this is the one place outside training that does.
    rd = store.run_dir(runs_dir, job.run_id)
    info = store.read_json(rd.run_json)
    if info and runstatus.is_active(info.get("status")):
        rd.update_run(status="cancelled", finished=store.utc_now(), error="cancelled by the user")


def _wait_gone(pgid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while pgid in _live_groups():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


# ---------------------------------------------------------------- what the sidebar shows before launching

_probe_lock = threading.Lock()


@functools.lru_cache(maxsize=16)
def describe_cutoffs(model_name: str, image_size: int | None = None) -> list:
    """The frozen-layer cutoffs offered for a model, each with its phase-2 trainable-parameter count."""
    from poc.models import get_spec, probe, resolve_image_size
    from poc.models.cutoffs import cutoff_choices

    spec = get_spec(model_name)
    size = resolve_image_size(spec, image_size)
    with _probe_lock:  # cutoff_choices toggles trainable flags on the shared probe model
        return cutoff_choices(probe(model_name, size), spec)


@functools.lru_cache(maxsize=1)
def device_summary() -> dict:
    from poc.device import describe_device, has_gpu

    return {"gpu": has_gpu(), "text": describe_device()}


# ---------------------------------------------------------------- the wrapper process

def _run_job(exit_file: str, argv: list[str]) -> int:
    """Run `argv`, then record its exit code. SIGTERM reaches the whole group, so here it only waits on."""
    signal.signal(signal.SIGTERM, lambda signum, frame: None)  # a handler, not SIG_IGN: the child must not inherit it
    code = subprocess.Popen(argv).wait()
    store.write_json(Path(exit_file), {"returncode": code, "finished": store.utc_now()})
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    if len(sys.argv) < 5 or sys.argv[1] != "run-job" or sys.argv[3] != "--":
        sys.exit("usage: python -m poc.launch.launcher run-job EXIT_FILE -- COMMAND...")
    sys.exit(_run_job(sys.argv[2], sys.argv[4:]))
