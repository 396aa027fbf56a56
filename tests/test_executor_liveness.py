"""Liveness of a run started by a cluster executor (poc.runs.status): judged by the executor when asked, else by
its heartbeat, never by a local pid; and choosing the executor (poc.launch.executors). No cluster needed."""

from __future__ import annotations

import datetime as dt
import os
import socket

import pytest

from poc.errors import UserError
from poc.launch import executors
from poc.runs import status as runstatus
from poc.runs import store

RAY = {"kind": "ray", "address": "http://head:8265", "job_id": "vitrine-x"}


def _run(tmp_path, beat_age_s: float | None, **info) -> store.RunRecord:
    rd = store.run_dir(tmp_path, "r1")
    rd.path.mkdir(parents=True, exist_ok=True)
    rd.write_run({"id": "r1", "status": "running", "started": "2020-01-01T00:00:00+00:00", **info})
    if beat_age_s is not None:
        rd.write_progress({"phase": "tl"})
        when = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=beat_age_s)
        rd.progress_json.write_text(f'{{"phase": "tl", "updated": "{when.isoformat()}"}}')
    return store.load_run(rd.path)


def test_a_remote_run_with_a_fresh_heartbeat_reads_running_though_its_pid_is_nobody_here(tmp_path):
    run = _run(tmp_path, 5, pid=2 ** 22 - 3, host="a-cluster-node", executor=RAY)
    assert runstatus.effective_status(run) == "running"


def test_a_remote_run_whose_heartbeat_stopped_reads_interrupted_though_its_pid_is_alive_here(tmp_path):
    run = _run(tmp_path, runstatus.HEARTBEAT_STALE_S + 5, pid=os.getpid(), host="a-cluster-node", executor=RAY)
    assert runstatus.effective_status(run) == "interrupted"


def test_the_executors_word_wins_over_the_heartbeat(tmp_path):
    run = _run(tmp_path, 5, pid=os.getpid(), host="a-cluster-node", executor=RAY)
    assert runstatus.effective_status(run, executor_alive=False) == "interrupted"
    assert runstatus.effective_status(run, executor_alive=True) == "running"


def test_a_remote_run_on_this_machine_whose_process_died_reads_interrupted_at_once(tmp_path):
    run = _run(tmp_path, 5, pid=2 ** 22 - 3, host=socket.gethostname(), executor=RAY)
    assert runstatus.effective_status(run) == "interrupted"


def test_a_local_run_is_still_judged_by_its_pid(tmp_path):
    run = _run(tmp_path, runstatus.HEARTBEAT_STALE_S + 5, pid=os.getpid(), executor={"kind": "local"})
    assert runstatus.effective_status(run) == "running"


def test_the_local_queue_is_the_default_and_a_cluster_address_chooses_ray(monkeypatch):
    monkeypatch.delenv("VITRINE_RAY_ADDRESS", raising=False)
    monkeypatch.delenv("VITRINE_EXECUTOR", raising=False)
    assert executors.choose().kind == "local"
    with pytest.raises(UserError, match="--cluster"):
        executors.choose("ray")
    monkeypatch.setenv("VITRINE_RAY_ADDRESS", "127.0.0.1:8265")
    assert executors.choose().kind == "ray" and executors.choose().address == "http://127.0.0.1:8265"
    assert executors.choose("local").kind == "local"


def test_a_cluster_job_never_resubmits_itself(monkeypatch):
    monkeypatch.setenv("VITRINE_RAY_ADDRESS", "127.0.0.1:8265")
    monkeypatch.setenv("VITRINE_EXECUTOR", '{"kind": "ray", "address": "http://127.0.0.1:8265", "job_id": "j"}')
    assert executors.choose().kind == "local"


def test_a_run_asks_for_one_gpu_when_the_cluster_has_gpus_and_never_more_cpus_than_it_has():
    pytest.importorskip("ray")
    from poc.launch.ray_executor import RayExecutor

    ex = RayExecutor("127.0.0.1:9", num_cpus=4)
    assert ex.share({"cpus": 16.0, "gpus": 2.0}) == {"num_gpus": 1, "num_cpus": 4}
    assert ex.share({"cpus": 2.0, "gpus": 0.0}) == {"num_gpus": 0, "num_cpus": 2}
    assert ex.share({"cpus": 2.0, "gpus": 4.0}) == {"num_gpus": 1, "num_cpus": 1}


def test_a_just_started_cluster_is_asked_again_until_its_cpus_register_and_refused_when_they_never_do():
    """A head answers on its dashboard seconds before its node's CPUs show in the cluster status (the CI failure
    of 2026-12-07: a run submitted then was refused with "no CPUs or GPUs")."""
    pytest.importorskip("ray")
    from poc.launch.ray_executor import RayExecutor

    answers = iter([{"cpus": 0.0, "gpus": 0.0}] * 2 + [{"cpus": 2.0, "gpus": 0.0}])
    ex = RayExecutor("127.0.0.1:9", num_cpus=1)
    ex.resources = lambda timeout_s=3.0: {**next(answers), "cpus_free": 0.0, "gpus_free": 0.0}
    assert ex.share(wait_s=10) == {"num_gpus": 0, "num_cpus": 1}

    ex.resources = lambda timeout_s=3.0: {"cpus": 0.0, "gpus": 0.0, "cpus_free": 0.0, "gpus_free": 0.0}
    with pytest.raises(UserError, match="no CPUs or GPUs.*nothing was submitted"):
        ex.share(wait_s=0.6)


def test_a_sweep_driver_reserves_nothing_and_a_run_reserves_its_share(tmp_path):
    """`sweep --detach` submits the sweep's driver as a job that only submits and follows runs: it must not take a
    run's slot (entrypoint_num_cpus=0); a run asks for its share (poc.launch.ray_executor.RayExecutor.share)."""
    pytest.importorskip("ray")
    from poc.launch.ray_executor import RayExecutor

    submitted = []

    class Client:
        def submit_job(self, **kwargs):
            submitted.append(kwargs)
            return kwargs["submission_id"]

    ex = RayExecutor("127.0.0.1:9", num_cpus=2)
    ex._client = Client()  # no cluster: the submission's arguments are what is checked
    ex.share = lambda resources=None: {"num_gpus": 1, "num_cpus": 2}
    ex.submit(["sweep", "--data", "d"], tmp_path, "driver", driver=True)
    ex.submit(["train", "--data", "d"], tmp_path, "run")
    driver, run = submitted
    assert driver["entrypoint_num_cpus"] == 0 and not driver["entrypoint_num_gpus"]
    assert " sweep " in f" {driver['entrypoint']} "
    assert run["entrypoint_num_cpus"] == 2 and run["entrypoint_num_gpus"] == 1
    assert run["runtime_env"]["env_vars"]["TF_NUM_INTRAOP_THREADS"] == "2"
