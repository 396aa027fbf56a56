"""The command line on a cluster: `train`, `sweep` and `demo` with `--executor ray`.

Each run becomes one cluster job (`launcher.submit_command`) running the same `python -m poc train ...` command
line the local queue runs, with its run id, study block and split seed passed as hidden flags; the jobs are
recorded like the dashboard's, so `python -m poc jobs` and the sidebar list, follow and cancel them. A study's
runs go in waves: those that start from nothing (a sweep's phase 1, every repeat of a seeds study) first, then
those that start from a finished one (a sweep's phase-2 runs), all of a wave submitted at once, so they run
concurrently as the cluster's resources allow. `follow` waits and prints each run's progress.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

from poc.config import RunConfig, config_to_argv
from poc.errors import UserError
from poc.launch import launcher
from poc.runs import status as runstatus
from poc.runs import store
from poc.runs.jobs import Job, JobStatus
from poc.train.studies import Plan, PlannedRun, StudyResult


def absolute(config: RunConfig) -> RunConfig:
    """A copy whose dataset is named by its absolute path: the nodes see this machine's paths (shared storage)."""
    config = RunConfig.from_dict(config.to_dict())
    if config.data and not config.from_run:
        config.data = str(Path(config.data).expanduser().resolve())
    return config


def run_argv(planned: PlannedRun, run_id: str, runs_dir: Path) -> list[str]:
    """`train ...` for one planned run: the local queue's flags plus the run id, study block and split seed."""
    argv = ["train", *config_to_argv(absolute(planned.config)), "--runs-dir", str(runs_dir), "--run-id", run_id]
    if planned.study:
        argv += ["--study", json.dumps(planned.study)]
    if planned.split_seed is not None:
        argv += ["--split-seed", str(planned.split_seed)]
    return argv


def run_plan_on(executor, plan: Plan, runs_dir: Path | str | None, detach: bool = False,
                out=sys.stderr) -> tuple[StudyResult, list[Job]]:
    """Submit the plan's runs to `executor` in waves (see the module docstring) and wait for each wave, printing
    progress to `out`; with `detach`, submit only the first wave and return at once (a plan whose runs start from
    others cannot detach here: `sweep --detach` follows it from a local background job instead)."""
    runs_dir = Path(runs_dir or store.default_runs_dir()).resolve()
    executor.probe_storage(runs_dir)  # before anything is submitted
    result, jobs = StudyResult(plan), []
    done: dict[int, str] = {}  # plan index -> completed run id
    for wave in _waves(plan):
        submitted: dict[int, Job] = {}
        for i in wave:
            planned = plan.runs[i]
            if planned.base is not None:
                if planned.base not in done:
                    result.failed.append(f"{planned.config.name}: skipped, its phase-1 run failed")
                    continue
                planned = dataclasses.replace(planned, config=dataclasses.replace(planned.config,
                                                                                  from_run=done[planned.base]))
            run_id = _free_run_id(planned.config.model, runs_dir)
            submitted[i] = launcher.submit_command(run_argv(planned, run_id, runs_dir), "train", runs_dir, executor,
                                                   run_id=run_id, config=planned.config.to_dict())
        jobs += submitted.values()
        if detach:
            return result, jobs
        statuses = follow(list(submitted.values()), runs_dir, out)
        for i, job in submitted.items():
            js = statuses[job.id]
            if js.status == "completed":
                done[i] = job.run_id
            else:
                result.failed.append(f"{plan.runs[i].config.name}: {js.status}"
                                     + (f" ({js.message})" if js.message else ""))
    result.runs = [store.run_dir(runs_dir, done[i]) for i in sorted(done)]
    return result, jobs


def _waves(plan: Plan) -> list[list[int]]:
    first = [i for i, p in enumerate(plan.runs) if p.base is None]
    then = [i for i, p in enumerate(plan.runs) if p.base is not None]
    return [w for w in (first, then) if w]


def _free_run_id(model: str, runs_dir: Path) -> str:
    while True:
        run_id = store.new_run_id(model)
        if not store.run_dir(runs_dir, run_id).path.exists():
            return run_id


def single_plan(config: RunConfig) -> Plan:
    """One run as a plan of one (no study block)."""
    return Plan(store.new_run_id(config.model), "run", [PlannedRun(config, {}, None)])


def follow(jobs: list[Job], runs_dir: Path, out=sys.stderr, poll_s: float = 0.5) -> dict[str, JobStatus]:
    """Wait until every job has ended, printing a line whenever a run's progress line changes. Returns the final
    status of each job by id."""
    last: dict[str, str] = {}
    while True:
        statuses = {job.id: launcher.job_status(job, runs_dir) for job in jobs}
        for js in statuses.values():
            line = progress_line(js)
            if last.get(js.id) != line:
                print(line, file=out, flush=True)
                last[js.id] = line
        if not any(js.active for js in statuses.values()):
            return statuses
        time.sleep(poll_s)


def progress_line(js: JobStatus) -> str:
    where = (js.job.executor or {}).get("job_id") or js.id
    text = f"{js.name} [{where}]: {js.status}"
    if js.active:
        phase = launcher.PHASE_WORDS.get(js.phase, js.phase) if js.phase else None
        epoch = f", epoch {js.epoch}/{js.epochs}" if js.epoch and js.epochs else ""
        text += f" ({phase}{epoch}, {100 * (js.progress or 0):.0f}%)" if phase else ""
    elif js.message and js.status != "completed":
        text += f": {js.message}"
    return text


def resume_on(executor, ref: str, runs_dir: Path | str | None, out=sys.stderr) -> store.RunDir:
    """`train --resume RUN` as a cluster job, for a run the launcher's resume rule accepts; waits for it."""
    runs_dir = Path(runs_dir or store.default_runs_dir()).resolve()
    rd = store.find_run(ref, runs_dir)
    if rd is None:
        raise UserError(f"--resume {ref}: no such run in {runs_dir}")
    run = store.load_run(rd.path)
    reason = runstatus.resume_refusal(run, executor_alive=launcher.run_executor_alive(run.info))
    if reason:
        raise UserError(f"run {rd.id} cannot be resumed: {reason}")
    argv = ["train", "--resume", rd.id, "--runs-dir", str(runs_dir), "--executor-checked"]
    job = launcher.submit_command(argv, "resume", runs_dir, executor, run_id=rd.id, config=run.info.get("config"))
    js = follow([job], runs_dir, out)[job.id]
    if js.status != "completed":
        raise UserError(f"run {rd.id} did not complete on the cluster: {js.status}"
                        + (f" ({js.message})" if js.message else ""))
    return rd


def demo_on(executor, runs_dir: Path | str | None, data_dir: Path | str | None, out=sys.stderr) -> JobStatus:
    """`python -m poc demo` as one cluster job (its data and runs on the shared storage); waits for it."""
    runs_dir = Path(runs_dir or store.default_runs_dir()).resolve()
    data_dir = Path(data_dir).resolve() if data_dir else launcher.data_root().resolve() / "demo"
    argv = ["demo", "--runs-dir", str(runs_dir), "--data-dir", str(data_dir)]
    executor.probe_storage(runs_dir)
    job = launcher.submit_command(argv, "demo", runs_dir, executor)
    return follow([job], runs_dir, out)[job.id]


def executor_alive_of(ref: str, runs_dir: Path | str | None) -> bool | None:
    """launcher.run_executor_alive for the run `ref` names (None when there is no such run: resume says so)."""
    rd = store.find_run(ref, runs_dir)
    info = store.read_json(rd.run_json) if rd else None
    return launcher.run_executor_alive(info) if isinstance(info, dict) else None


def detach_sweep(executor, config: RunConfig, cutoffs: list[str], seeds: list[int] | None, plan: Plan,
                 runs_dir: Path | str | None) -> Job:
    """`sweep --detach`: the same sweep, not detached, as a driver job on the cluster itself (it reserves no CPU),
    which submits the runs and follows them (its phase-2 runs wait for its phase 1): this machine may go away.
    Returns that job; the cluster is probed first, so a runs directory the nodes cannot see is refused here,
    nothing started."""
    runs_dir = Path(runs_dir or store.default_runs_dir()).resolve()
    executor.probe_storage(runs_dir)
    argv = ["sweep", *config_to_argv(absolute(config)), "--cutoffs", ",".join(cutoffs), "--runs-dir", str(runs_dir),
            "--study-id", plan.id, "--executor", executor.kind, "--cluster", executor.address,
            *(["--seeds", ",".join(map(str, seeds))] if seeds else [])]
    study = {"id": plan.id, "cutoffs": cutoffs, "planned": len(plan.runs)}
    return launcher.submit_command(argv, "sweep", runs_dir, executor, config={**config.to_dict(), "study": study})
