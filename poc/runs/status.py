"""What state a run or a job is in: the status vocabulary, process liveness, progress, and evaluated stages.

The one owner of these facts: the leaderboard, the launcher and the dashboard ask here rather than spelling
out `("queued", "running")` or probing processes themselves. Pure functions over what the run directory
holds (run.json's status and pid, progress.json, eval/<stage>/metrics.json) plus the kernel's process table.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from pathlib import Path

from poc.runs.store import STAGES, WRITTEN, read_progress

# What readers derive: a run marked active whose process is gone, a run directory whose run.json is unusable.
DERIVED = ("interrupted", "unreadable")
STATUSES = WRITTEN + DERIVED
ACTIVE = ("queued", "running")  # the process is (or should be) alive; every other status is final
FINAL = tuple(s for s in STATUSES if s not in ACTIVE)

_PROC = Path("/proc")
CHECKPOINT_DIR = "checkpoint"  # poc.runs.writer.checkpoint_dir's folder, named here without importing Keras


def is_active(status: str | None) -> bool:
    return status in ACTIVE


# ---------------------------------------------------------------- liveness

def _proc_fields(stat_text: str) -> list[str]:
    """state, ppid, pgrp, ... of a /proc/<pid>/stat line (the command name in parentheses may hold spaces)."""
    return stat_text[stat_text.rfind(")") + 2:].split()


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (a zombie still answers kill(pid, 0))."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    if _PROC.is_dir():
        try:
            fields = _proc_fields((_PROC / str(pid) / "stat").read_text())
        except OSError:
            return False
        return bool(fields) and fields[0] not in ("Z", "X")
    return _signal_probe(os.kill, pid)  # not Linux


def live_groups(candidates=()) -> set[int]:
    """Process group ids with at least one live (non-zombie) member. Read from /proc; where there is no /proc,
    each of `candidates` is probed with killpg(pgid, 0) instead."""
    if not _PROC.is_dir():
        return {g for g in candidates if _signal_probe(os.killpg, g)}
    groups = set()
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _proc_fields((entry / "stat").read_text())
        except OSError:
            continue
        if len(fields) > 2 and fields[0] not in ("Z", "X"):
            groups.add(int(fields[2]))
    return groups


def _signal_probe(send, target: int) -> bool:
    """Signal 0 through `send` (os.kill or os.killpg): whether the process (group) exists. A process we may
    not signal exists too."""
    try:
        send(target, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------- status

def effective_status(run, executor_alive: bool | None = None) -> str:
    """A RunRecord's status as the dashboard shows it: "unreadable" without a usable run.json, "interrupted"
    when it is marked queued or running but nothing trains it any more, else run.json's status.

    Who judges "nothing trains it": a run of the local queue by its process (run.json's pid); a run started by a
    cluster executor (run.json's `executor`) by that executor when the caller asked it (`executor_alive`: the
    launcher asks Ray), else by its heartbeat (`remote_alive`). A remote run's pid is another machine's, so a
    local process that reuses it proves nothing."""
    if not run.readable:
        return "unreadable"
    status = run.status
    if status not in ACTIVE:
        return status
    if is_remote(run.info):
        alive = executor_alive if executor_alive is not None else remote_alive(run)
        return status if alive else "interrupted"
    pid = run.info.get("pid")
    if isinstance(pid, int) and not pid_alive(pid):
        return "interrupted"
    return status


HEARTBEAT_STALE_S = 600  # a remote run whose progress.json has not moved for this long is no longer trained


def is_remote(info: dict) -> bool:
    """Whether a cluster executor (not the local queue) started the run that run.json `info` describes."""
    executor = info.get("executor")
    return isinstance(executor, dict) and executor.get("kind") not in (None, "local")


def remote_alive(run, now: float | None = None) -> bool:
    """A remote run's liveness without asking its executor: on this very machine its pid answers (dead -> not
    alive; alive proves nothing, the pid may be reused); otherwise its heartbeat, progress.json's `updated` (or
    run.json's `started`), must be younger than HEARTBEAT_STALE_S."""
    info = run.info
    if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int) and not pid_alive(info["pid"]):
        return False
    beat = (read_progress(run.dir) or {}).get("updated") or info.get("started") or info.get("created")
    try:
        when = dt.datetime.fromisoformat(str(beat))
    except ValueError:
        return False
    now = now if now is not None else dt.datetime.now(dt.timezone.utc).timestamp()
    return now - when.timestamp() < HEARTBEAT_STALE_S


def final_stage(recorded, evaluated: list[str]) -> str | None:
    """The stage whose weights are the run's model, among the `evaluated` stages (training order): run.json's
    `final_stage` (recorded, the stage with the lower validation loss) when that stage was evaluated; for an
    older run (nothing recorded), a partial one (tl only) or a recorded stage whose files are gone, the last
    evaluated stage; None when no stage was evaluated. The one rule every page, command and report follows."""
    if recorded in evaluated:
        return recorded
    return evaluated[-1] if evaluated else None


def final_stage_of(rd, info: dict, needs: str = "metrics") -> str | None:
    """final_stage over the stages of a RunDir that have their eval/<stage>/<needs> file."""
    return final_stage(info.get("final_stage"), [s for s in STAGES if rd.eval_file(s, needs).exists()])


def stages(rd) -> list[str]:
    """The stages of a RunDir ("tl", "ft", in training order) whose eval/<stage>/metrics.json exists."""
    return [s for s in STAGES if rd.eval_file(s, "metrics").exists()]


# ---------------------------------------------------------------- progress

def phase_fraction(progress: dict | None) -> float | None:
    """0..1 within the current phase, from progress.json (epoch and step within the phase)."""
    if not isinstance(progress, dict):
        return None
    epoch, epochs, step, steps = (progress.get(k) for k in ("epoch", "epochs", "step", "steps"))
    if not all(isinstance(v, (int, float)) for v in (epoch, epochs, steps)) or not epochs or not steps:
        return None
    step = step if isinstance(step, (int, float)) else 0
    done = (epoch - 1) * steps + step
    return max(0.0, min(1.0, done / (epochs * steps)))


def run_fraction(progress: dict | None, config: dict | None) -> float:
    """0..1 across both phases of one run, counting planned epochs (early stopping makes it jump ahead)."""
    progress, config = progress or {}, config or {}
    tl = 0 if config.get("from_run") else int(config.get("tl_epochs") or 0)
    ft = int(config.get("ft_epochs") or 0)
    total = tl + ft
    phase, within = progress.get("phase"), phase_fraction(progress) or 0.0
    done = {"tl": within * tl, "eval_tl": tl, "ft": tl + within * ft, "eval_ft": total}.get(phase, 0.0)
    return max(0.0, min(1.0, done / total)) if total else 0.0


def runs_fraction(runs: list[tuple[str, dict | None, dict | None]], planned: int) -> float:
    """0..1 over a plan of `planned` runs (the demo's), from each started run's (status, progress, config):
    a completed run counts 1, an active one its epochs so far, so the bar moves with every epoch."""
    if planned <= 0:
        return 0.0
    done = 0.0
    for status, progress, config in runs:
        if status == "completed":
            done += 1.0
        elif status in ACTIVE:
            done += run_fraction(progress, config)
    return max(0.0, min(1.0, done / planned))


# ---------------------------------------------------------------- resuming

def resume_refusal(run, busy: set[str] = frozenset(), executor_alive: bool | None = None) -> str | None:
    """Why `run` cannot be resumed, or None: it must be interrupted (marked running, its process gone) or failed
    with a checkpoint, have its split written, and have no live job (in `busy`) training it already.
    `executor_alive`: a remote run's liveness as its executor reports it (see effective_status)."""
    status = effective_status(run, executor_alive)
    if run.id in busy:
        return "a job is already training it"
    if status != "interrupted" and not (status == "failed" and (run.dir.path / CHECKPOINT_DIR).is_dir()):
        return (f"it is {status}{' without a checkpoint' if status == 'failed' else ''}; only interrupted runs "
                "and failed runs with a checkpoint resume")
    if not run.class_names or not run.dir.split_csv.exists():
        return "it stopped before its split was written; start a new run instead"
    return None
