"""The `ray` executor: one Ray Job per run (`ray.job_submission.JobSubmissionClient`), and a local head for tests.

Imported only when a run goes to a cluster (`poc.launch.executors.choose`): the default path imports no Ray.
A job's entrypoint is the command line the local queue runs (`python -m poc train ...`), started with this
machine's Python path (`VITRINE_RAY_PYTHON` overrides it) and `PYTHONPATH` at this checkout: every node needs
the same image or virtual environment, and the project and the runs directory at the same paths (README, "Runs
on a Ray cluster"). Ray's resources decide what runs where:

- a job asks for one GPU when the cluster has GPUs, else `VITRINE_RAY_CPUS` CPUs (default 1), never more than
  the cluster has;
- TensorFlow's thread pools (and OpenMP's) are pinned to that CPU share through the job's environment;
- `VITRINE_EXECUTOR` tells the training process where it runs: run.json records it, and `.device.lock` (one
  training per machine) is skipped, since Ray already keeps jobs within the node's resources.

Nothing here writes a run directory. Shared storage is checked before the first submit (`probe_storage`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from poc.errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ACTIVE_STATES = ("PENDING", "RUNNING")  # Ray's job states in which the entrypoint is (or will be) running
FINAL_STATES = ("SUCCEEDED", "FAILED", "STOPPED")
_STATUS_TTL_S = 2.0  # one list_jobs call serves every job of a dashboard refresh


def normalize_address(address: str) -> str:
    """The job-submission (dashboard) address as an http URL: "127.0.0.1:8265" -> "http://127.0.0.1:8265"."""
    address = str(address).strip().rstrip("/")
    return address if address.startswith(("http://", "https://")) else f"http://{address}"


def check_reachable(address: str, timeout_s: float = 5.0) -> dict:
    """The cluster's /api/version, or UserError naming the address (nothing is submitted)."""
    try:
        with urllib.request.urlopen(f"{address}/api/version", timeout=timeout_s) as answer:
            return json.loads(answer.read().decode())
    except (OSError, ValueError, urllib.error.URLError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise UserError(f"the Ray cluster at {address} is unreachable ({reason}); nothing was submitted. Start it "
                        "(ray start --head) or fix VITRINE_RAY_ADDRESS / --cluster (its job-submission address, "
                        "e.g. http://HEAD:8265)") from None


class RayExecutor:
    """Runs as Ray Jobs on the cluster at `address` (its job-submission address)."""

    kind = "ray"

    def __init__(self, address: str, num_cpus: int | None = None, python: str | None = None):
        self.address = normalize_address(address)
        self.num_cpus = int(num_cpus or os.environ.get("VITRINE_RAY_CPUS") or 1)
        self.python = python or os.environ.get("VITRINE_RAY_PYTHON") or sys.executable
        self._client = None
        self._probed: set[str] = set()
        self._states: tuple[float, dict[str, str]] | None = None

    # ---------------------------------------------------------------- the cluster

    def client(self):
        if self._client is None:
            check_reachable(self.address)
            from ray.job_submission import JobSubmissionClient

            self._client = JobSubmissionClient(self.address)
        return self._client

    def resources(self, timeout_s: float = 3.0) -> dict:
        """{"cpus", "cpus_free", "gpus", "gpus_free"} of the whole cluster (Ray's logical resources);
        UserError when it does not answer."""
        try:
            with urllib.request.urlopen(f"{self.address}/api/cluster_status?format=0", timeout=timeout_s) as answer:
                report = json.loads(answer.read().decode())
        except (OSError, ValueError, urllib.error.URLError) as exc:
            raise UserError(f"the Ray cluster at {self.address} does not answer ({getattr(exc, 'reason', exc)})") \
                from None
        usage = (((report.get("data") or {}).get("clusterStatus") or {}).get("loadMetricsReport") or {}).get("usage")
        usage = usage or {}
        out = {}
        for name, key in (("cpus", "CPU"), ("gpus", "GPU")):
            used, total = (usage.get(key) or [0.0, 0.0])[:2]
            out[name], out[f"{name}_free"] = float(total), max(0.0, float(total) - float(used))
        return out

    def registered_resources(self, wait_s: float = 30.0) -> dict:
        """`resources()`, asked again while the cluster reports none at all: a head that has just started answers
        on its dashboard a few seconds before its node's CPUs and GPUs show in the cluster status."""
        deadline = time.monotonic() + wait_s
        while True:
            resources = self.resources()
            if resources["cpus"] >= 1 or resources["gpus"] >= 1 or time.monotonic() > deadline:
                return resources
            time.sleep(0.5)

    def share(self, resources: dict | None = None, wait_s: float = 30.0) -> dict:
        """What one run asks for: one GPU when the cluster has GPUs, else `num_cpus` CPUs; never more than the
        cluster has. {"num_gpus", "num_cpus"}: num_cpus is also the thread count the job is pinned to."""
        resources = resources if resources is not None else self.registered_resources(wait_s)
        total_cpus, total_gpus = int(resources["cpus"]), int(resources["gpus"])
        if total_gpus >= 1:
            per_gpu = max(1, total_cpus // total_gpus) if total_cpus else 1
            return {"num_gpus": 1, "num_cpus": min(self.num_cpus, per_gpu)}
        if total_cpus < 1:
            raise UserError(f"the Ray cluster at {self.address} has no CPUs or GPUs to run on; nothing was "
                            "submitted. Check that its nodes joined (ray status)")
        return {"num_gpus": 0, "num_cpus": min(self.num_cpus, total_cpus)}

    # ---------------------------------------------------------------- jobs

    def record(self, job_id: str | None) -> dict:
        """run.json's `executor` block of a job on this cluster."""
        return {"kind": self.kind, "address": self.address, "job_id": job_id}

    def submit(self, argv: list[str], runs_dir: Path, submission_id: str, env: dict | None = None,
               driver: bool = False) -> str:
        """Submit `python -m poc ARGV...` as one job; returns its submission id. The runs directory must have
        passed `probe_storage`. `driver`: a job that only submits and follows other jobs (a detached sweep): it
        reserves no CPU or GPU, so it never takes a run's slot."""
        share = {"num_gpus": 0, "num_cpus": 0} if driver else self.share()
        threads = str(max(1, share["num_cpus"]))
        env_vars = {"PYTHONPATH": str(PROJECT_ROOT), "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
                    "VITRINE_RUNS_DIR": str(runs_dir), "VITRINE_EXECUTOR": json.dumps(self.record(submission_id)),
                    "TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": threads,
                    "OMP_NUM_THREADS": threads, **(env or {})}
        self._states = None  # the next question sees this job
        return self._submit_job(
            entrypoint=shlex.join([self.python, "-m", "poc", *argv]), submission_id=submission_id,
            runtime_env={"env_vars": env_vars}, entrypoint_num_cpus=share["num_cpus"],
            entrypoint_num_gpus=share["num_gpus"] or None, metadata={"vitrine": "1"})

    def _submit_job(self, wait_s: float = 60, **job) -> str:
        """JobSubmissionClient.submit_job, tried again while the cluster says it is not ready yet: a head that has
        just started answers on its dashboard a few seconds before its job agent takes submissions ("No available
        agent to submit job, please try again later")."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return self.client().submit_job(**job)
            except RuntimeError as exc:
                if "try again later" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(1.0)

    def states(self, fresh: bool = False) -> dict[str, str] | None:
        """Ray's state (PENDING RUNNING SUCCEEDED FAILED STOPPED) of every job on the cluster, by submission id;
        None when the cluster does not answer (its runs then read interrupted: nothing trains them for sure)."""
        now = time.monotonic()
        if not fresh and self._states and now - self._states[0] < _STATUS_TTL_S:
            return self._states[1]
        try:
            check_reachable(self.address, timeout_s=2.0)
            jobs = self.client().list_jobs()
        except Exception:  # noqa: BLE001 - an unreachable or restarted cluster: no answer, no exception on a page
            self._client, self._states = None, (now, None)
            return None
        states = {j.submission_id: str(getattr(j.status, "value", j.status)) for j in jobs if j.submission_id}
        self._states = (now, states)
        return states

    def state(self, submission_id: str) -> str | None:
        """A job's state asked now (None: unknown job, or no answer)."""
        states = self.states(fresh=True)
        return None if states is None else states.get(submission_id)

    def state_of(self, submission_id: str | None) -> str | None:
        """A job's state from the answer of the last couple of seconds (one call serves a whole jobs list)."""
        states = self.states()
        if states is not None and submission_id not in states:  # submitted since the last answer
            states = self.states(fresh=True)
        return None if states is None else states.get(submission_id)

    def alive(self, submission_id: str | None) -> bool:
        """Pending or running on the cluster; False when the cluster does not answer."""
        return self.state_of(submission_id) in ACTIVE_STATES

    def stop(self, submission_id: str, timeout_s: float = 30) -> str | None:
        """Stop a job (Ray sends SIGTERM, later SIGKILL) and wait until Ray reports it final; its last state."""
        try:
            self.client().stop_job(submission_id)
        except UserError:
            return None
        except Exception:  # noqa: BLE001 - already finished, or unknown to a restarted cluster
            pass
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = self.state(submission_id)
            if state is None or state in FINAL_STATES:
                return state
            time.sleep(0.5)
        return self.state(submission_id)

    def logs(self, submission_id: str) -> str:
        try:
            return self.client().get_job_logs(submission_id)
        except Exception:  # noqa: BLE001 - the log is a courtesy; the run's own files say what happened
            return ""

    # ---------------------------------------------------------------- shared storage

    def probe_storage(self, runs_dir: Path | str, timeout_s: float = 120) -> None:
        """A probe job writes a file under `runs_dir` (the path as given, as the jobs will see it) and this
        machine looks for it: UserError naming the path and what to mount when it does not see it."""
        key = str(runs_dir)
        if key in self._probed:
            return
        token = secrets.token_hex(6)
        target = Path(runs_dir) / ".jobs" / f".probe-{token}"
        code = ("import pathlib, sys; p = pathlib.Path(sys.argv[1]); p.parent.mkdir(parents=True, exist_ok=True); "
                "p.write_text(sys.argv[2])")
        sid = self._submit_job(entrypoint=shlex.join([self.python, "-c", code, str(target), token]),
                               submission_id=f"vitrine-probe-{token}", entrypoint_num_cpus=0)
        deadline, state, seen = time.monotonic() + timeout_s, None, False
        while time.monotonic() < deadline:  # the file is the answer: no need to wait for the job's end
            state = self.state(sid)
            seen = _holds(target, token)  # read after the state: a job that ended wrote its file before
            if seen or state in FINAL_STATES:
                break
            time.sleep(0.2)
        with contextlib.suppress(OSError):
            target.unlink()
        if not seen:
            how = f"the probe job {sid} ended {state}" if state else f"the probe job {sid} did not finish"
            raise UserError(
                f"the runs directory {runs_dir} ({Path(runs_dir).resolve()} here) is not shared with the Ray "
                f"cluster at {self.address}: a probe job wrote {target} and this machine does not see it ({how}). "
                f"Mount the same storage at {Path(runs_dir).resolve()} on every node (e.g. an NFS share), or point "
                "--runs-dir / VITRINE_RUNS_DIR at an absolute path on storage every node mounts; nothing was "
                "submitted")
        self._probed.add(key)


def _holds(path: Path, token: str) -> bool:
    try:
        return path.read_text() == token
    except OSError:
        return False


# ---------------------------------------------------------------- a local head (tests, benchmark, trying it out)

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_head(num_cpus: int = 2, cwd: Path | str | None = None, timeout_s: float = 90):
    """A one-node Ray cluster on 127.0.0.1 for the duration of the block; yields its job-submission address.

    `ray start --head --block` in its own process group, with a short temp dir (Unix socket paths are short);
    stopping SIGTERMs that group only (a bare `ray stop` would stop every Ray instance of the user). Every port is
    a free one, agents' included: Ray's fixed defaults (e.g. the dashboard agent's 52365) would collide with
    another Ray instance on the machine, and that head would answer but never take a job."""
    ray_bin = Path(sys.executable).with_name("ray")
    temp_dir = tempfile.mkdtemp(prefix="vr", dir="/tmp")
    port, dash = _free_port(), _free_port()
    agents = [(flag, str(_free_port())) for flag in ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                                                     "--metrics-export-port", "--runtime-env-agent-port",
                                                     "--ray-client-server-port")]
    cmd = [str(ray_bin), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
           "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--num-cpus", str(num_cpus),
           "--num-gpus", "0", "--include-dashboard", "true", "--temp-dir", temp_dir, "--disable-usage-stats",
           *[part for pair in agents for part in pair]]
    log = open(Path(temp_dir) / "head.log", "ab")
    proc = subprocess.Popen(cmd, cwd=cwd or temp_dir, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                check_reachable(address, timeout_s=1.0)
                break
            except UserError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the local Ray head did not start; see {temp_dir}/head.log") from None
                time.sleep(0.5)
        RayExecutor(address).registered_resources(wait_s=max(1.0, deadline - time.monotonic()))
        yield address
    finally:
        for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            if _group_gone(proc, wait_s):
                break
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _group_gone(proc: subprocess.Popen, timeout_s: float) -> bool:
    """Whether every process of the head's group has exited within `timeout_s` (the head process reaped)."""
    from poc.runs.status import live_groups

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        proc.poll()
        if proc.returncode is not None and proc.pid not in live_groups(candidates=[proc.pid]):
            return True
        time.sleep(0.2)
    return False
