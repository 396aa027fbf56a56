"""Background training jobs started from the dashboard, owned by this module rather than a browser session.

A job is one process group: a small wrapper (`python -m poc.launch.launcher run-job EXIT_FILE NICENESS -- CMD...`)
that runs `python -m poc train ... --run-id ID` (or `train --resume RUN`, or `python -m poc demo`) below the
dashboard's priority (JOB_NICENESS) and records its exit code when it ends. All
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
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from poc.launch import executors
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
# A job trains beside the pages that show it: at this niceness (its threads' and its session's scheduling group's)
# the scheduler serves the dashboard, its model server and the browser first and gives the job every cycle they
# leave (VITRINE_JOB_NICENESS; 0: the dashboard's priority).
JOB_NICENESS = 10

# Children started by this process: polled so they are reaped (an unreaped child is a zombie that still
# answers kill(pid, 0)). After a dashboard restart the old children belong to init, which reaps them.
_CHILDREN: dict[int, subprocess.Popen] = {}


# ---------------------------------------------------------------- launching

def launch_training(config: RunConfig, runs_dir: Path | str | None = None, executor: str | None = None) -> Job:
    """Validate `config` (UserError with the reason, nothing started), then start training in the background:
    on the local queue, or as a job on the cluster `executor` names ("local" / "ray"; None: VITRINE_RAY_ADDRESS
    decides, poc.launch.executors.choose). An unreachable cluster or unshared storage: UserError, nothing started."""
    runs_dir = _runs_dir(runs_dir)
    config = validate_launch(config, runs_dir)
    where = executors.choose(executor)
    with _launch_lock(runs_dir):  # two sessions launching at one instant get distinct run ids
        run_id = _free_run_id(config.model, runs_dir)
        argv = [sys.executable, "-m", "poc", "train", *config_to_argv(config), "--runs-dir", str(runs_dir),
                "--run-id", run_id]
        return _start("train", argv, runs_dir, run_id=run_id, config=config.to_dict(), executor=where)


def launch_resume(run_id: str, runs_dir: Path | str | None = None, executor: str | None = None) -> Job:
    """`python -m poc train --resume RUN` in the background for a run `resume_refusal` accepts (UserError with
    the reason otherwise, nothing started), on any executor (a run started on a cluster may continue locally and
    the other way round). The job follows the run like a launched one, and can be cancelled."""
    runs_dir = _runs_dir(runs_dir)
    rd = store.find_run(run_id, runs_dir)
    if rd is None:
        raise UserError(f"no run {run_id!r} in {runs_dir}")
    where = executors.choose(executor)
    with _launch_lock(runs_dir):  # a second click, or another session, then finds this job and is refused
        run = store.RunRecord(rd, store.read_json(rd.run_json) or {})
        reason = runstatus.resume_refusal(run, _busy_runs(runs_dir), run_executor_alive(run.info))
        if reason:
            raise UserError(f"run {rd.id} cannot be resumed: {reason}")
        # --executor-checked: the run's own executor was asked just now (a remote run's heartbeat may look fresh)
        argv = [sys.executable, "-m", "poc", "train", "--resume", rd.id, "--runs-dir", str(runs_dir),
                *(["--executor-checked"] if runstatus.is_remote(run.info) else [])]
        return _start("resume", argv, runs_dir, run_id=rd.id, config=run.info.get("config"), executor=where)


def resumable_runs(runs_dir: Path | str | None = None, ids: list[str] | None = None) -> list[store.RunRecord]:
    """The runs `launch_resume` accepts, newest first; `ids`: only these runs (a reader that indexed the runs
    passes those not completed, so a thousand finished runs cost nothing). Reads run.json only (and asks a
    cluster about its runs still marked active)."""
    runs_dir = _runs_dir(runs_dir)
    busy = _busy_runs(runs_dir)
    dirs = store.run_dirs(runs_dir) if ids is None else [store.run_dir(runs_dir, i) for i in sorted(ids, reverse=True)]
    runs = [store.RunRecord(rd, store.read_json(rd.run_json) or {}) for rd in dirs]
    return [r for r in runs if r.readable and runstatus.resume_refusal(r, busy, run_executor_alive(r.info)) is None]


def run_executor_alive(info: dict) -> bool | None:
    """Whether the cluster job that trains the run `info` (run.json) is still pending or running, as its executor
    says (False when the cluster does not answer: nothing trains the run for sure); None for a local-queue run
    or a run no longer marked active (its pid, or its final status, tells)."""
    if not runstatus.is_remote(info) or not runstatus.is_active(info.get("status")):
        return None
    record = info["executor"]
    return executors.for_record(record).alive(record.get("job_id"))


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
    return {job.run_id for job in _jobs_on_disk(runs_dir) if job.kind in TRAIN_KINDS and _job_alive(job, live)}


def launch_demo(runs_dir: Path | str | None = None, executor: str | None = None) -> Job:
    """`python -m poc demo` in the background: demo data plus one CNN and one ViT run. On a cluster, a local
    process follows one cluster job that makes the demo (poc.launch.remote)."""
    runs_dir = _runs_dir(runs_dir)
    data_dir = data_root().resolve() / "demo"
    argv = [sys.executable, "-m", "poc", "demo", "--runs-dir", str(runs_dir), "--data-dir", str(data_dir),
            *_executor_flags(executors.choose(executor), runs_dir)]
    return _start("demo", argv, runs_dir)


def _executor_flags(where, runs_dir: Path) -> list[str]:
    """`--executor ray --cluster ADDRESS` for a command that a local process runs against a cluster (a sweep, the
    demo), after checking the cluster answers and sees the runs directory (UserError, nothing started)."""
    if where.kind == "local":
        return []
    where.probe_storage(runs_dir)
    return ["--executor", where.kind, "--cluster", where.address]


def launch_sweep(config: RunConfig, cutoffs: str, runs_dir: Path | str | None = None,
                 executor: str | None = None) -> Job:
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
            "--runs-dir", str(runs_dir), "--study-id", study_id, *_executor_flags(executors.choose(executor), runs_dir)]
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
           config: dict | None = None, executor=None) -> Job:
    """Start `argv` (`python -m poc ...`) as a job: a process group here, or one job on a cluster."""
    local = executor is None or executor.kind == "local"
    niceness = job_niceness() if local else 0  # a bad setting is refused before anything is written
    job_id = _new_job_id(kind)
    folder = jobs_dir(runs_dir)
    folder.mkdir(parents=True, exist_ok=True)
    log_path = _job_file(runs_dir, job_id, ".log")
    if not local:
        return _submit(executor, job_id, kind, argv, runs_dir, run_id, config, log_path)
    exit_path = _job_file(runs_dir, job_id, ".exit.json")
    wrapper = [sys.executable, "-m", "poc.launch.launcher", "run-job", str(exit_path), str(niceness), "--", *argv]
    record = executors.LOCAL.record(job_id)
    env = {**os.environ, "VITRINE_RUNS_DIR": str(runs_dir), "PYTHONUNBUFFERED": "1",
           "VITRINE_EXECUTOR": json.dumps(record)}
    with open(log_path, "ab") as log:
        proc = _spawn(wrapper, env, log)
    _CHILDREN[proc.pid] = proc
    job = Job(job_id, kind, argv, proc.pid, store.utc_now(), str(log_path), run_id, config, executor=record)
    _save(job, runs_dir)
    return job


def _submit(executor, job_id: str, kind: str, argv: list[str], runs_dir: Path, run_id: str | None,
            config: dict | None, log_path: Path) -> Job:
    """One cluster job running the same `python -m poc ...` command line; the runs directory is probed first.
    The job record is written before the submit, so the job is listed (and cancellable) from the first moment;
    a refused submit removes it again."""
    executor.probe_storage(runs_dir)
    submission_id = f"vitrine-{job_id}"
    job = Job(job_id, kind, argv, 0, store.utc_now(), str(log_path), run_id, config,
              executor=executor.record(submission_id))
    _save(job, runs_dir)
    try:
        executor.submit(argv[3:], runs_dir, submission_id, driver=kind == "sweep")  # argv[:3]: `python -m poc`
    except BaseException:
        _job_file(runs_dir, job_id).unlink(missing_ok=True)
        raise
    return job


def submit_command(argv: list[str], kind: str, runs_dir: Path | str | None, executor, run_id: str | None = None,
                   config: dict | None = None) -> Job:
    """`python -m poc ARGV...` as a job on `executor` (the CLI's runs on a cluster, poc.launch.remote)."""
    return _start(kind, [sys.executable, "-m", "poc", *argv], _runs_dir(runs_dir), run_id, config, executor)


def job_niceness() -> int:
    """How much lower than the dashboard a local job runs: VITRINE_JOB_NICENESS, else JOB_NICENESS."""
    text = os.environ.get("VITRINE_JOB_NICENESS", "").strip()
    if not text:
        return JOB_NICENESS
    hint = f"use 0 (the dashboard's priority) to 19 (the lowest), or unset it for the default of {JOB_NICENESS}"
    try:
        niceness = int(text)
    except ValueError:
        raise UserError(f"VITRINE_JOB_NICENESS={text!r} is not a whole number; {hint}") from None
    if not 0 <= niceness <= 19:
        raise UserError(f"VITRINE_JOB_NICENESS={niceness} is out of range; {hint}")
    return niceness


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


def _is_remote(job: Job) -> bool:
    return isinstance(job.executor, dict) and job.executor.get("kind") not in (None, "local")


def _job_alive(job: Job, live: set[int]) -> bool:
    """A local job by its process group; a cluster job by its executor (pending or running; False when the
    cluster does not answer)."""
    if _is_remote(job):
        return bool(executors.for_record(job.executor).alive(job.executor.get("job_id")))
    return job.pid in live


def _exit_info(job: Job, runs_dir: Path) -> dict | None:
    """The job's exit record: the wrapper's .exit.json here; a cluster job's final state (None while it runs,
    and when the cluster does not answer: then its runs read interrupted)."""
    if not _is_remote(job):
        return store.read_json(_job_file(runs_dir, job.id, ".exit.json"))
    state = executors.for_record(job.executor).state_of(job.executor.get("job_id"))
    codes = {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": -int(signal.SIGTERM)}
    return {"returncode": codes[state], "state": state} if state in codes else None


def find_job(job_id: str, runs_dir: Path | str | None = None) -> JobStatus | None:
    """One job's status (None when there is no such job), e.g. the demo job the Home page follows."""
    job = load_job(job_id, runs_dir)
    return None if job is None else job_status(job, runs_dir)


def job_status(job: Job, runs_dir: Path | str | None = None, live: set[int] | None = None) -> JobStatus:
    runs_dir = _runs_dir(runs_dir)
    alive = _job_alive(job, live if live is not None else _live_groups())
    exit_info = None if alive else _exit_info(job, runs_dir)
    if job.kind in TRAIN_KINDS:
        return _train_status(job, runs_dir, alive, exit_info)
    sweep = job.kind == "sweep"
    name = _sweep_name(job) if sweep else "demo (data, CNN + ViT runs, cutoff sweep)"
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
        if _is_remote(job):  # the resumed process has written its own executor block (its job id) once it trains
            taken_over = runstatus.is_active(status) and (info.get("executor") or {}) == job.executor
        else:
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
    from poc.train.demo import planned_runs

    mine = [r for r in store.list_runs(runs_dir)
            if str(r.info.get("created") or "") >= js.job.created and not _is_baseline(r.info)]
    return _plan_progress(js, mine, planned_runs(), "generating demo data")


def _is_baseline(info: dict) -> bool:
    """A baseline run (poc.train.baselines) the demo adds after its CNN: not one of its planned runs."""
    return info.get("family") == "baseline" or str(info.get("model") or "").startswith("baseline")


def _log_message(job: Job) -> str:
    """The CLI's one-line error (`error: ...`) from the end of the job log, else its last line. A cluster job's
    log is fetched from the cluster once it has ended, and kept beside the job record."""
    if _is_remote(job) and not os.path.exists(job.log):
        text = executors.for_record(job.executor).logs(job.executor.get("job_id"))
        if text:
            with contextlib.suppress(OSError):
                Path(job.log).write_text(text)
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
    if _is_remote(job):
        return _cancel_remote(job, runs_dir, grace_s)
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


def _cancel_remote(job: Job, runs_dir: Path, grace_s: float) -> None:
    """Stop a cluster job. Ray's stop_job sends SIGTERM, later SIGKILL: the intent is recorded first, so a run
    killed before it could write its own status reads cancelled, not interrupted."""
    where = executors.for_record(job.executor)
    if not where.alive(job.executor.get("job_id")):
        return
    job.cancelled = store.utc_now()
    _save(job, runs_dir)
    state = where.stop(job.executor["job_id"], timeout_s=grace_s + 20)
    if job.kind != "train" or state not in ("STOPPED", "FAILED", "SUCCEEDED"):
        return  # still running (or the cluster stopped answering), or a resume: its run stays resumable
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


def executor_summary(executor: str | None = None) -> dict:
    """Which executor launches runs, for the sidebar: {"kind", "address", "cluster" (VITRINE_RAY_ADDRESS or
    None: a switch is offered when set), "cpus", "cpus_free", "gpus", "gpus_free", "error"}. Never raises: an
    unreachable cluster is an `error` sentence."""
    address = executors.cluster_address()
    out = {"kind": "local", "address": None, "cluster": address, "error": None}
    try:
        where = executors.choose(executor)
        out.update(kind=where.kind, address=where.address)
        out.update(where.resources())
    except UserError as exc:
        out["error"] = str(exc)
    return out


@functools.lru_cache(maxsize=1)
def device_summary() -> dict:
    from poc.device import describe_device, has_gpu

    return {"gpu": has_gpu(), "text": describe_device()}


# ---------------------------------------------------------------- the wrapper process

def _run_job(exit_file: str, niceness: int, argv: list[str]) -> int:
    """Run `argv` `niceness` steps below this process's priority (inherited by all it starts), then record its
    exit code. SIGTERM reaches the whole group, so here it only waits on."""
    os.nice(niceness)
    _lower_session_group(niceness)
    signal.signal(signal.SIGTERM, lambda signum, frame: None)  # a handler, not SIG_IGN: the child must not inherit it
    code = subprocess.Popen(argv).wait()
    store.write_json(Path(exit_file), {"returncode": code, "finished": store.utc_now()})
    return code if code >= 0 else 128 - code


def _lower_session_group(niceness: int) -> None:
    """The job is a session of its own (its process group), and with Linux's autogroup scheduling (on by default)
    each session is one scheduling group, weighed against the dashboard's and the browser's sessions by the
    group's niceness, not its threads': threads at nice 10 in a group at 0 still get a full group's share.
    Without autogroup (another kernel or OS) there is no such file and the threads' niceness is what counts."""
    with contextlib.suppress(OSError):
        Path("/proc/self/autogroup").write_text(str(niceness))


if __name__ == "__main__":
    if len(sys.argv) < 6 or sys.argv[1] != "run-job" or not sys.argv[3].isdigit() or sys.argv[4] != "--":
        sys.exit("usage: python -m poc.launch.launcher run-job EXIT_FILE NICENESS -- COMMAND...")
    sys.exit(_run_job(sys.argv[2], int(sys.argv[3]), sys.argv[5:]))
