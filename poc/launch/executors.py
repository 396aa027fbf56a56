"""Where runs execute: the executor interface, and choosing one.

    local   today's queue: each job a process group on this machine, one training at a time per machine
            (`.device.lock`). The default; it imports no Ray.
    ray     a Ray cluster (`poc.launch.ray_executor`), one Ray Job per run; chosen by `--executor ray
            [--cluster ADDRESS]` or `VITRINE_RAY_ADDRESS` (the cluster's job-submission address).

An executor answers the same questions for every job: `record` (run.json's `executor` block: kind, address,
job_id), `submit`, `states` (liveness as the executor sees it), `stop`, `resources` (what the sidebar shows).
The local queue's process handling stays in `poc.launch.launcher` (`_start`, `_live_groups`, `cancel`), which
dispatches on a job's `executor` block; a job record without one is a local job (records before executors).
"""

from __future__ import annotations

import functools
import json
import os

from poc.errors import UserError

KINDS = ("local", "ray")
ENV_ADDRESS = "VITRINE_RAY_ADDRESS"


class LocalExecutor:
    """Today's local queue (poc.launch.launcher starts and stops its process groups)."""

    kind = "local"
    address = None

    def record(self, job_id: str | None) -> dict:
        return {"kind": self.kind, "address": None, "job_id": job_id}

    def resources(self) -> dict:
        return {"cpus": float(os.cpu_count() or 1), "gpus": None}


LOCAL = LocalExecutor()


def cluster_address() -> str | None:
    """VITRINE_RAY_ADDRESS, or None when unset or empty."""
    return (os.environ.get(ENV_ADDRESS) or "").strip() or None


def choose(kind: str | None = None, address: str | None = None):
    """The executor for `--executor KIND [--cluster ADDRESS]`: an explicit kind wins; with none, a cluster address
    (given, else VITRINE_RAY_ADDRESS) means ray, else local. UserError for ray without an address."""
    if kind not in (None, *KINDS):
        raise UserError(f"--executor {kind}: choose one of {', '.join(KINDS)}")
    if inside_job():
        return LOCAL  # this process is a cluster job: it trains here, whatever VITRINE_RAY_ADDRESS says
    address = address or cluster_address()
    if kind == "local" or (kind is None and not address):
        return LOCAL
    if not address:
        raise UserError("--executor ray needs the cluster's job-submission address: --cluster http://HEAD:8265 "
                        f"or {ENV_ADDRESS}")
    return ray_executor(address)


@functools.lru_cache(maxsize=8)
def ray_executor(address: str):
    """One RayExecutor per address and process (it caches the probe of the runs directory and job states)."""
    from poc.launch.ray_executor import RayExecutor

    return RayExecutor(address)


def inside_job() -> bool:
    """Whether this process was started by a cluster executor (VITRINE_EXECUTOR names one): poc.launch.remote
    never resubmits from inside a job."""
    try:
        record = json.loads(os.environ.get("VITRINE_EXECUTOR") or "{}")
    except ValueError:
        return False
    return isinstance(record, dict) and record.get("kind") not in (None, "local")


def for_record(record: dict | None):
    """The executor a job or run.json `executor` block names (local when there is none)."""
    if not isinstance(record, dict) or record.get("kind") in (None, "local") or not record.get("address"):
        return LOCAL
    return ray_executor(record["address"])
