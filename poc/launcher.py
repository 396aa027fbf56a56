"""Background training jobs started from the dashboard, owned by this module rather than a browser session.

A job is one process group: a small wrapper (`python -m poc.launcher run-job EXIT_FILE -- CMD...`) that runs
`python -m poc train ... --run-id ID` (or `python -m poc demo`) and records its exit code when it ends. All
state is on disk under `<runs_dir>/.jobs/` (the runs listing skips dot-folders), so jobs outlive a browser
reload or a dashboard restart:

    <id>.json       id, kind, run_id, argv, pid (= process group id), created, log, config, cancelled
    <id>.log        stdout + stderr of the job
    <id>.exit.json  returncode, finished (written by the wrapper; absent while running or when killed)

A train job's status comes from its run's run.json (the training process writes it); liveness comes from the
process group, read from /proc, so a zombie or a re-parented child never looks alive or dead by mistake.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from poc import artifacts
from poc.config import RunConfig
from poc.config import default_data_root as data_root  # datasets the launcher accepts live under it
from poc.errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
JOBS_DIR = ".jobs"
ACTIVE = ("queued", "running")
PHASE_WORDS = {"starting": "starting", "queued": "waiting for the device", "tl": "transfer learning",
               "ft": "fine-tuning",
               "eval_tl": "evaluating (after transfer learning)", "eval_ft": "evaluating (after fine-tuning)"}

# Children started by this process: polled so they are reaped (an unreaped child is a zombie that still
# answers kill(pid, 0)). After a dashboard restart the old children belong to init, which reaps them.
_CHILDREN: dict[int, subprocess.Popen] = {}


@dataclass
class Job:
    id: str
    kind: str  # "train" | "demo"
    argv: list[str]  # the command the job runs (without the wrapper)
    pid: int  # the wrapper's pid, also the job's process group id
    created: str
    log: str
    run_id: str | None = None
    config: dict | None = None
    cancelled: str | None = None  # when cancel() was asked


@dataclass
class JobStatus:
    job: Job
    status: str  # queued running completed failed cancelled interrupted
    name: str
    phase: str | None = None
    epoch: int | None = None
    epochs: int | None = None
    eta_seconds: float | None = None
    progress: float | None = None  # 0..1 over both phases
    message: str | None = None
    metrics: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def run_id(self) -> str | None:
        return self.job.run_id

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


# ---------------------------------------------------------------- paths and records

def jobs_dir(runs_dir: Path | str | None = None) -> Path:
    return _runs_dir(runs_dir) / JOBS_DIR


def _runs_dir(runs_dir: Path | str | None) -> Path:
    return Path(runs_dir or artifacts.default_runs_dir()).resolve()


def _job_file(runs_dir: Path, job_id: str, suffix: str = ".json") -> Path:
    return jobs_dir(runs_dir) / f"{job_id}{suffix}"


def _save(job: Job, runs_dir: Path) -> None:
    artifacts.write_json(_job_file(runs_dir, job.id), job.__dict__)


def load_job(job_id: str, runs_dir: Path | str | None = None) -> Job | None:
    info = artifacts.read_json(_job_file(_runs_dir(runs_dir), job_id))
    try:
        return Job(**info) if info else None
    except TypeError:  # a record from another version: not ours to interpret
        return None


def _new_job_id(kind: str) -> str:
    """Sortable by creation time (microseconds), unique without a lock."""
    return f"{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S-%f}-{kind}-{secrets.token_hex(2)}"


# ---------------------------------------------------------------- launching

def config_to_argv(config: RunConfig) -> list[str]:
    """The `python -m poc train` flags for `config`: --data and --model always, the rest where not default."""
    default = RunConfig(data=config.data)
    argv = ["--data", str(config.data), "--model", config.model]
    for name, value in config.to_dict().items():
        if name in ("data", "model") or value == getattr(default, name):
            continue
        if name == "augment":
            value = ",".join(value) if value else "none"
        argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


def launch_training(config: RunConfig, runs_dir: Path | str | None = None) -> Job:
    """Validate `config` (UserError with the reason, nothing started), then start training in the background."""
    runs_dir = _runs_dir(runs_dir)
    config = validate_launch(config, runs_dir)
    run_id = artifacts.new_run_id(config.model)
    argv = [sys.executable, "-m", "poc", "train", *config_to_argv(config), "--runs-dir", str(runs_dir),
            "--run-id", run_id]
    return _start("train", argv, runs_dir, run_id=run_id, config=config.to_dict())


def launch_demo(runs_dir: Path | str | None = None) -> Job:
    """`python -m poc demo` in the background: demo data plus one CNN and one ViT run."""
    runs_dir = _runs_dir(runs_dir)
    data_dir = data_root().resolve() / "demo"
    argv = [sys.executable, "-m", "poc", "demo", "--runs-dir", str(runs_dir), "--data-dir", str(data_dir)]
    return _start("demo", argv, runs_dir)


def validate_launch(config: RunConfig, runs_dir: Path) -> RunConfig:
    """Everything the dashboard can check before starting a process; returns a copy with an absolute data path."""
    from poc.models import get_spec, resolve_image_size, resolve_weights

    config = RunConfig.from_dict(config.to_dict()).validate()
    spec = get_spec(config.model)
    if config.from_run:
        # Phase 2 only: data and split come from the source run (which may predate the data root).
        from poc.training import source_run

        source, info = source_run(config.from_run, config.model, runs_dir)
        config.from_run = source.id
        config.image_size = int(info.get("image_size") or config.image_size or spec.default_image_size)
    else:
        config.data = str(_check_data_folder(config.data))
    size = resolve_image_size(spec, config.image_size)
    resolve_weights(config.model, config.weights, size)
    if spec.family != "hub":  # a hub model would need a download just to list its layers: training checks it
        from poc.models.cutoffs import resolve_cutoff  # imports TensorFlow: only once the cheap checks pass

        resolve_cutoff(_probe_model(config.model, size).get_layer("backbone"), config.fine_tune_at, spec)
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
    wrapper = [sys.executable, "-m", "poc.launcher", "run-job", str(exit_path), "--", *argv]
    env = {**os.environ, "VITRINE_RUNS_DIR": str(runs_dir), "PYTHONUNBUFFERED": "1"}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(wrapper, cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # own group: cancel kills all
    _CHILDREN[proc.pid] = proc
    job = Job(job_id, kind, argv, proc.pid, artifacts.utc_now(), str(log_path), run_id, config)
    _save(job, runs_dir)
    return job


# ---------------------------------------------------------------- status

def list_jobs(runs_dir: Path | str | None = None) -> list[JobStatus]:
    """Every job on disk, newest first, with its status and progress."""
    runs_dir = _runs_dir(runs_dir)
    folder = jobs_dir(runs_dir)
    if not folder.is_dir():
        return []
    live = _live_groups()
    ids = sorted((p.name[:-5] for p in folder.glob("*.json") if not p.name.endswith(".exit.json")), reverse=True)
    jobs = [load_job(i, runs_dir) for i in ids]
    return [job_status(j, runs_dir, live) for j in jobs if j is not None]


def job_status(job: Job, runs_dir: Path | str | None = None, live: set[int] | None = None) -> JobStatus:
    runs_dir = _runs_dir(runs_dir)
    alive = job.pid in (live if live is not None else _live_groups())
    exit_info = artifacts.read_json(_job_file(runs_dir, job.id, ".exit.json"))
    if job.kind == "train":
        return _train_status(job, runs_dir, alive, exit_info)
    name = "demo (data + CNN + ViT runs)"
    if alive:
        return _demo_progress(JobStatus(job, "running", name), runs_dir)
    if exit_info and exit_info.get("returncode") == 0:
        return JobStatus(job, "completed", name, progress=1.0)
    if job.cancelled:
        return JobStatus(job, "cancelled", name, message="cancelled by the user")
    if exit_info:
        return JobStatus(job, "failed", name, message=_log_message(job))
    return JobStatus(job, "interrupted", name, message="the process stopped without recording an exit code")


def _train_status(job: Job, runs_dir: Path, alive: bool, exit_info: dict | None) -> JobStatus:
    rd = artifacts.run_dir(runs_dir, job.run_id)
    info = artifacts.read_json(rd.run_json)
    config = (info or {}).get("config") or job.config or {}
    name = (info or {}).get("name") or config.get("name") or job.run_id
    if info is None:  # the process has not created its run directory yet, or died before it could
        if alive:
            return JobStatus(job, "queued", name, phase="starting", progress=0.0)
        if job.cancelled:
            return JobStatus(job, "cancelled", name, message="cancelled before the run started")
        return JobStatus(job, "failed", name, message=_log_message(job))
    status = info.get("status", "unknown")
    if status in ACTIVE and not alive:
        status = "cancelled" if job.cancelled else "interrupted"
    progress = artifacts.read_progress(rd) or {}
    js = JobStatus(job, status, name, message=info.get("error"))
    if status == "completed":
        js.progress = 1.0
    elif status in ACTIVE:
        js.phase = progress.get("phase") or "starting"
        js.epoch, js.epochs = progress.get("epoch"), progress.get("epochs")
        js.eta_seconds = progress.get("eta_seconds")
        js.metrics = progress.get("metrics") or {}
        js.progress = overall_progress(progress, config)
    elif status == "interrupted":
        js.message = "the training process stopped without finishing (killed?); see " + job.log
    elif status == "failed" and not js.message:
        js.message = _log_message(job)
    return js


def _demo_progress(js: JobStatus, runs_dir: Path) -> JobStatus:
    """A running demo's progress from the runs it has created so far (each started after the job)."""
    from poc.demo import DEMO_SETTINGS

    planned = len(DEMO_SETTINGS["runs"])
    mine = [r for r in artifacts.list_runs(runs_dir) if str(r.info.get("created") or "") >= js.job.created]
    if not mine:
        js.phase, js.progress = "generating demo data", 0.0
        return js
    done = 0.0
    for run in mine:
        if run.status == "completed":
            done += 1
        elif run.status in ACTIVE:
            done += overall_progress(artifacts.read_progress(run.dir) or {}, run.info.get("config") or {})
    js.phase = f"run {min(len(mine), planned)} of {planned}"
    js.progress = min(1.0, done / planned)
    return js


def overall_progress(progress: dict, config: dict) -> float:
    """0..1 across both phases, counting planned epochs (early stopping makes it jump ahead)."""
    from poc.leaderboard import progress_fraction

    tl = 0 if config.get("from_run") else int(config.get("tl_epochs") or 0)
    ft = int(config.get("ft_epochs") or 0)
    total = tl + ft
    phase, within = progress.get("phase"), progress_fraction(progress) or 0.0
    done = {"tl": within * tl, "eval_tl": tl, "ft": tl + within * ft, "eval_ft": total}.get(phase, 0.0)
    return max(0.0, min(1.0, done / total)) if total else 0.0


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
    """Process group ids with at least one live (non-zombie) member."""
    for pid, proc in list(_CHILDREN.items()):
        if proc.poll() is not None:
            del _CHILDREN[pid]
    proc_root = Path("/proc")
    if not proc_root.is_dir():  # not Linux: ask each known group instead
        return {g for g in _CHILDREN if _killpg_probe(g)}
    groups = set()
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # state ppid pgrp ...; the name may hold spaces
        if fields and fields[0] not in ("Z", "X"):
            groups.add(int(fields[2]))
    return groups


def _killpg_probe(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------- cancelling

def cancel(job_id: str, runs_dir: Path | str | None = None, grace_s: float = 10) -> None:
    """SIGTERM the job's process group, SIGKILL after `grace_s`; a finished job is left alone."""
    runs_dir = _runs_dir(runs_dir)
    job = load_job(job_id, runs_dir)
    if job is None:
        raise UserError(f"no job {job_id!r} in {jobs_dir(runs_dir)}")
    if job.pid <= 1 or job.pid == os.getpgrp() or job.pid not in _live_groups():
        return
    job.cancelled = artifacts.utc_now()
    _save(job, runs_dir)
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5)):
        try:
            os.killpg(job.pid, sig)
        except ProcessLookupError:
            break
        if _wait_gone(job.pid, wait_s):
            break
    if job.pid in _live_groups() or job.kind != "train":
        return
    # Training writes its own run.json, also on SIGTERM once it trains. Killed while starting or waiting for
    # the device (or by SIGKILL) it cannot, so the run would read "queued" forever: the process is gone, no
    # one else writes this run.json any more, and this is the one place outside training that does.
    rd = artifacts.run_dir(runs_dir, job.run_id)
    info = artifacts.read_json(rd.run_json)
    if info and info.get("status") in ACTIVE:
        rd.update_run(status="cancelled", finished=artifacts.utc_now(), error="cancelled by the user")


def _wait_gone(pgid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while pgid in _live_groups():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


# ---------------------------------------------------------------- what the sidebar shows before launching

_probe_lock = threading.Lock()


@functools.lru_cache(maxsize=4)
def _probe_model(model_name: str, image_size: int):
    """A 2-class classifier with random weights: enough to list layers and count parameters."""
    from poc.models import build

    return build(model_name, 2, image_size, "none")


@functools.lru_cache(maxsize=16)
def describe_cutoffs(model_name: str, image_size: int | None = None) -> list:
    """The frozen-layer cutoffs offered for a model, each with its phase-2 trainable-parameter count."""
    from poc.models import get_spec, resolve_image_size
    from poc.models.cutoffs import cutoff_choices

    spec = get_spec(model_name)
    size = resolve_image_size(spec, image_size)
    with _probe_lock:  # cutoff_choices toggles trainable flags on the shared probe model
        return cutoff_choices(_probe_model(model_name, size), spec)


@functools.lru_cache(maxsize=1)
def device_summary() -> dict:
    from poc.device import describe_device, has_gpu

    return {"gpu": has_gpu(), "text": describe_device()}


# ---------------------------------------------------------------- the wrapper process

def _run_job(exit_file: str, argv: list[str]) -> int:
    """Run `argv`, then record its exit code. SIGTERM reaches the whole group, so here it only waits on."""
    signal.signal(signal.SIGTERM, lambda signum, frame: None)  # a handler, not SIG_IGN: the child must not inherit it
    code = subprocess.Popen(argv).wait()
    artifacts.write_json(Path(exit_file), {"returncode": code, "finished": artifacts.utc_now()})
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    if len(sys.argv) < 5 or sys.argv[1] != "run-job" or sys.argv[3] != "--":
        sys.exit("usage: python -m poc.launcher run-job EXIT_FILE -- COMMAND...")
    sys.exit(_run_job(sys.argv[2], sys.argv[4:]))
