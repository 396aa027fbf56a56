"""Runs on a real local Ray cluster (ray start --head on 127.0.0.1, 2 CPUs, its own process group): a sweep's
phase-2 runs side by side, the artifact contract, cancel, a detached sweep, a cluster lost mid-run, an unreachable
address, the shared-storage probe, and the default path importing no Ray."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from cli import run_cli
from poc.config import RunConfig
from poc.errors import UserError
from poc.launch import launcher
from poc.runs import status as runstatus
from poc.runs import store

pytest.importorskip("ray.job_submission")

REPO = Path(__file__).resolve().parents[1]
TINY = ["--model", "mobilenet_v2", "--weights", "none", "--image-size", "32", "--tl-epochs", "1", "--ft-epochs", "1",
        "--batch-size", "16"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from poc.launch.ray_executor import local_head

    with local_head(num_cpus=2, cwd=tmp_path_factory.mktemp("ray_cwd")) as address:
        yield address


@pytest.fixture(scope="module")
def sweep(cluster, demo_roots):
    """The issue's must-show: a 2-cutoff sweep with --executor ray, through the CLI."""
    data_root, runs = demo_roots
    result = run_cli("sweep", "--data", str(data_root / "demo"), *TINY, "--cutoffs", "block_15_expand,Conv_1",
                     "--executor", "ray", "--cluster", cluster, runs_dir=runs)
    assert result.returncode == 0, result.stderr[-3000:]
    runs_of = [store.load_run(Path(line)) for line in result.stdout.splitlines() if line.startswith(str(runs))]
    return result, runs_of


def test_the_default_path_imports_no_ray():
    script = ("import sys, importlib\n"
              "for m in ('poc.cli', 'poc.launch.launcher', 'poc.launch.remote', 'ui.sidebar', 'ui.data'):\n"
              "    importlib.import_module(m)\n"
              "from poc.launch.executors import choose\n"
              "assert choose().kind == 'local'\n"
              "print('ray' in sys.modules)")
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("VITRINE_RAY_ADDRESS", "VITRINE_EXECUTOR")}
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_an_unreachable_address_exits_2_naming_it_and_submits_nothing(demo_roots, tmp_path):
    data_root, _ = demo_roots
    result = run_cli("train", "--data", str(data_root / "demo"), *TINY, "--executor", "ray", "--cluster",
                     "http://127.0.0.1:9", runs_dir=tmp_path)
    assert result.returncode == 2
    assert "http://127.0.0.1:9" in result.stderr and "unreachable" in result.stderr
    assert list(tmp_path.iterdir()) == []  # no run directory, no job record


@pytest.mark.system
def test_the_storage_probe_refuses_a_runs_dir_the_jobs_cannot_see(cluster, tmp_path, monkeypatch):
    """A relative runs path: the jobs run in the cluster's working directory, this process in another."""
    from poc.launch.ray_executor import RayExecutor

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as caught:
        RayExecutor(cluster).probe_storage(Path("relative/runs"))
    message = str(caught.value)
    assert "relative/runs" in message and "Mount" in message and "nothing was submitted" in message
    assert not (tmp_path / "relative" / "runs" / ".jobs").exists() or not any(
        (tmp_path / "relative" / "runs" / ".jobs").iterdir())


@pytest.mark.system
def test_a_sweep_on_ray_completes_every_run_on_the_cluster(sweep):
    _, runs = sweep
    assert len(runs) == 3
    for run in runs:
        assert run.info["status"] == "completed", run.info.get("error")
        assert run.info["executor"]["kind"] == "ray" and run.info["executor"]["job_id"].startswith("vitrine-")
        assert runstatus.effective_status(run) == "completed"
    roles = sorted(run.info["study"]["role"] for run in runs)
    assert roles == ["phase1", "phase2", "phase2"]


@pytest.mark.system
def test_the_phase2_runs_ran_side_by_side(sweep):
    _, runs = sweep
    a, b = [r.info for r in runs if r.info["study"]["role"] == "phase2"]
    assert a["started"] < b["finished"] and b["started"] < a["finished"], (a["started"], a["finished"],
                                                                            b["started"], b["finished"])


@pytest.mark.system
def test_cluster_runs_pass_the_local_artifact_contract(sweep):
    _, runs = sweep
    for run in (r for r in runs if r.info["study"]["role"] == "phase2"):
        rd = run.dir
        assert list(pd.read_csv(rd.split_csv).columns) == ["path", "label", "split", "sha256"]
        assert list(pd.read_csv(rd.history_csv).columns) == store.HISTORY_COLUMNS
        assert rd.weights.exists() and rd.train_log.exists()
        for kind in store.EVAL_FILES:
            assert rd.eval_file("ft", kind).exists(), kind
        metrics = json.loads(rd.eval_file("ft", "metrics").read_text())
        assert {"accuracy", "accuracy_ci95", "macro_f1", "loss", "n"} <= set(metrics)


@pytest.mark.system
def test_compare_and_every_page_work_on_the_cluster_runs_as_on_local_runs(sweep, demo_roots, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from apptest_checks import assert_no_section_failed

    _, runs = sweep
    _, runs_dir = demo_roots
    a, b = [r for r in runs if r.info["study"]["role"] == "phase2"]
    compared = run_cli("compare", a.id, b.id, "--json", runs_dir=runs_dir)
    assert compared.returncode == 0, compared.stderr[-2000:]
    result = json.loads(compared.stdout)
    assert result["paired"] and result["n"] == len(pd.read_csv(a.dir.eval_file("ft", "predictions")))  # same images
    monkeypatch.setenv("VITRINE_RUNS_DIR", str(runs_dir))
    for page in sorted((REPO / "pages").glob("*.py")):
        at = AppTest.from_file(str(page), default_timeout=300).run()
        assert not at.exception, (page.name, [e.value for e in at.exception])
        assert_no_section_failed(at)


@pytest.mark.system
def test_cancel_stops_a_cluster_run_that_read_running_while_it_trained(cluster, demo_roots):
    data_root, runs = demo_roots
    config = RunConfig(data=str(data_root / "demo"), model="mobilenet_v2", weights="none", image_size=32,
                       tl_epochs=200, ft_epochs=1, patience=200, batch_size=16, augment=[], feature_cache=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VITRINE_RAY_ADDRESS", cluster)
        job = launcher.launch_training(config, runs, executor="ray")
    assert job.executor["kind"] == "ray" and job.pid == 0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        js = launcher.job_status(job, runs)
        if js.phase == "tl" or not js.active:
            break
        time.sleep(1)
    assert js.status == "running" and js.phase == "tl", (js.status, js.phase, js.message)
    run = store.load_run(store.run_dir(runs, job.run_id).path)
    assert runstatus.effective_status(run) == "running"  # judged by its heartbeat, not a local pid
    launcher.cancel(job.id, runs, grace_s=10)
    assert store.read_json(store.run_dir(runs, job.run_id).run_json)["status"] == "cancelled"
    assert launcher.job_status(launcher.load_job(job.id, runs), runs).status == "cancelled"
    assert job.run_id not in {r.id for r in launcher.resumable_runs(runs)}


def _wait_for_phase_one_epoch(job, runs, timeout_s: float = 240):
    """Until the run has trained at least one phase-1 epoch (its checkpoint exists), or the job ended."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        js = launcher.job_status(job, runs)
        if not js.active or (js.phase == "tl" and (js.epoch or 0) >= 2):
            return js
        time.sleep(0.5)
    return js


@pytest.mark.system
def test_a_run_whose_node_died_reads_interrupted_the_pages_keep_working_and_it_resumes_here(demo_roots,
                                                                                              tmp_path_factory):
    """The cluster is lost mid-run: its one node stops, and the run's process with it (a node's death takes every
    process on it). The run reads interrupted, no page fails, and `train --resume` continues it on the local
    queue to the end."""
    import os
    import signal

    from streamlit.testing.v1 import AppTest

    from apptest_checks import assert_no_section_failed
    from poc.launch.ray_executor import local_head

    data_root, _ = demo_roots
    runs = tmp_path_factory.mktemp("lost_cluster_runs")
    config = RunConfig(data=str(data_root / "demo"), model="mobilenet_v2", weights="none", image_size=32,
                       tl_epochs=12, ft_epochs=1, patience=12, batch_size=16, augment=[], feature_cache=False)
    with local_head(num_cpus=1, cwd=tmp_path_factory.mktemp("lost_cluster_cwd")) as address:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("VITRINE_RAY_ADDRESS", address)
            job = launcher.launch_training(config, runs, executor="ray")
        js = _wait_for_phase_one_epoch(job, runs)
        assert js.status == "running", (js.status, js.phase, js.message)
        pid = store.read_json(store.run_dir(runs, job.run_id).run_json)["pid"]
        os.kill(pid, signal.SIGKILL)  # the node goes down: its processes first, then the cluster (leaving the block)
    run = store.load_run(store.run_dir(runs, job.run_id).path)
    assert run.status == "running"  # what the run last wrote
    assert launcher.run_executor_alive(run.info) is False  # the lost cluster does not answer: nothing trains it
    assert job.run_id in {r.id for r in launcher.resumable_runs(runs)}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VITRINE_RUNS_DIR", str(runs))
        home = AppTest.from_file("../pages/0_Home.py", default_timeout=300).run()
    assert not home.exception
    assert_no_section_failed(home)

    resumed = run_cli("train", "--resume", job.run_id, runs_dir=runs)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    info = store.read_json(store.run_dir(runs, job.run_id).run_json)
    assert info["status"] == "completed"
    assert store.run_dir(runs, job.run_id).eval_file("ft", "metrics").exists()


@pytest.mark.system
def test_a_detached_sweep_returns_at_once_with_the_ray_job_id_of_its_driver(cluster, demo_roots, tmp_path):
    """`sweep --detach` prints the cluster's id of the sweep's driver job, which runs on the cluster, not here
    (that it reserves no CPU: test_executor_liveness). The test stops it and whatever it submitted."""
    from ray.job_submission import JobStatus as RayStatus
    from ray.job_submission import JobSubmissionClient

    data_root, _ = demo_roots
    result = run_cli("sweep", "--data", str(data_root / "demo"), *TINY, "--cutoffs", "block_15_expand,Conv_1",
                     "--executor", "ray", "--cluster", cluster, "--detach", runs_dir=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    job_id = result.stdout.strip().splitlines()[-1]
    assert job_id in result.stderr  # the explanation names it too
    client = JobSubmissionClient(cluster)
    try:
        info = client.get_job_info(job_id)
        assert " sweep " in f" {info.entrypoint} " and "--executor ray" in info.entrypoint  # runs there, not here
        assert info.status in (RayStatus.PENDING, RayStatus.RUNNING)
        recorded = [js.job for js in launcher.list_jobs(tmp_path)]
        assert [j.executor["job_id"] for j in recorded if j.kind == "sweep"] == [job_id]  # `jobs` lists it
    finally:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            running = [j for j in client.list_jobs() if not j.status.is_terminal()]
            for j in running:
                client.stop_job(j.submission_id)
            if not running:
                break
            time.sleep(1)
