"""Job records on disk: what a background job is (`Job`), what it is doing (`JobStatus`), and where its files live
(`<runs_dir>/.jobs/<id>.json`, `.log`, `.exit.json`). `poc.launch.launcher` starts, follows and cancels jobs."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from poc.runs import store
from poc.runs import status as runstatus

JOBS_DIR = ".jobs"


@dataclass
class Job:
    id: str
    kind: str  # "train" | "resume" | "demo" | "sweep"
    argv: list[str]  # the command the job runs (without the wrapper)
    pid: int  # the wrapper's pid, also the job's process group id (0 for a job on a cluster)
    created: str
    log: str
    run_id: str | None = None
    config: dict | None = None
    cancelled: str | None = None  # when cancel() was asked
    executor: dict | None = None  # {kind, address, job_id}: where it runs (None: the local queue, older records)


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
        return runstatus.is_active(self.status)


def jobs_dir(runs_dir: Path | str | None = None) -> Path:
    return runs_path(runs_dir) / JOBS_DIR


def runs_path(runs_dir: Path | str | None) -> Path:
    return Path(runs_dir or store.default_runs_dir()).resolve()


def job_file(runs_dir: Path, job_id: str, suffix: str = ".json") -> Path:
    return jobs_dir(runs_dir) / f"{job_id}{suffix}"


def save(job: Job, runs_dir: Path) -> None:
    store.write_json(job_file(runs_dir, job.id), job.__dict__)


def load_job(job_id: str, runs_dir: Path | str | None = None) -> Job | None:
    info = store.read_json(job_file(runs_path(runs_dir), job_id))
    try:
        return Job(**info) if info else None
    except TypeError:  # a record from another version: not ours to interpret
        return None


def new_job_id(kind: str) -> str:
    """Sortable by creation time (microseconds), unique without a lock."""
    return f"{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S-%f}-{kind}-{secrets.token_hex(2)}"


def jobs_on_disk(runs_dir: Path) -> list[Job]:
    folder = jobs_dir(runs_dir)
    if not folder.is_dir():
        return []
    ids = sorted((p.name[:-5] for p in folder.glob("*.json") if not p.name.endswith(".exit.json")), reverse=True)
    return [job for job in map(lambda i: load_job(i, runs_dir), ids) if job is not None]
