"""The runs leaderboard as a DataFrame: one row per run, damaged runs included and flagged."""

from __future__ import annotations

import os

import pandas as pd

from poc import artifacts
from poc.artifacts import RunRecord

COLUMNS = ["id", "name", "model", "family", "weights", "fine_tune_at", "trainable_tl", "trainable_ft",
           "weights_mb", "acc_tl", "acc_tl_low", "acc_tl_high", "acc_ft", "acc_ft_low", "acc_ft_high",
           "macro_f1", "best_epoch_tl", "best_epoch_ft", "train_seconds", "device", "status", "progress",
           "error", "problems", "created", "num_classes", "image_size"]


def run_row(run: RunRecord) -> dict:
    """One leaderboard row; a field of the wrong type reads as missing rather than breaking the table."""
    info = run.info
    row = {c: None for c in COLUMNS}
    params, best, timing = (_mapping(info.get(key)) for key in ("params", "best_epoch", "timing"))
    notes = list(run.problems)
    row.update({
        "id": run.id, "name": info.get("name") or run.id, "model": info.get("model"),
        "family": info.get("family"), "weights": info.get("weights"), "fine_tune_at": info.get("fine_tune_at"),
        "trainable_tl": params.get("trainable_tl"), "trainable_ft": params.get("trainable_ft"),
        "weights_mb": artifacts.weights_size_mb(run.dir), "best_epoch_tl": best.get("tl"),
        "best_epoch_ft": best.get("ft"),
        "train_seconds": sum(v for v in map(_number, timing.values()) if v is not None) or None,
        "device": info.get("device"), "status": effective_status(run), "error": info.get("error"),
        "created": info.get("created"),
        "num_classes": len(run.class_names) or None, "image_size": info.get("image_size"),
    })
    for stage in artifacts.STAGES:
        metrics = artifacts.read_json(run.dir.eval_file(stage, "metrics")) or {}
        notes += [f"eval/{stage}/metrics.json: {key} is not a number" for key in ("accuracy", "macro_f1")
                  if key in metrics and _number(metrics[key]) is None]
        if _number(metrics.get("accuracy")) is not None:
            interval = metrics.get("accuracy_ci95")
            low, high = interval[:2] if isinstance(interval, list) and len(interval) >= 2 else (None, None)
            row.update({f"acc_{stage}": _number(metrics["accuracy"]), f"acc_{stage}_low": _number(low),
                        f"acc_{stage}_high": _number(high)})
            row["macro_f1"] = _number(metrics.get("macro_f1"))  # the last stage's: ft when present
    row["problems"] = "; ".join(notes) or None
    if row["status"] in ("running", "queued"):
        row["progress"] = progress_fraction(artifacts.read_progress(run.dir))
    return row


def _mapping(value) -> dict:
    return value if isinstance(value, dict) else {}


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def leaderboard(runs: list[RunRecord]) -> pd.DataFrame:
    return pd.DataFrame([run_row(r) for r in runs], columns=COLUMNS)


def progress_fraction(progress: dict | None) -> float | None:
    """0..1 within the current phase, from progress.json."""
    if not progress or not progress.get("epochs") or not progress.get("steps"):
        return None
    done = (progress["epoch"] - 1) * progress["steps"] + progress.get("step", 0)
    return max(0.0, min(1.0, done / (progress["epochs"] * progress["steps"])))


def effective_status(run: RunRecord) -> str:
    """A run marked running whose process is gone was killed: say so instead of 'running' forever."""
    status = run.status if run.readable else "unreadable"
    pid = run.info.get("pid")
    if status in ("running", "queued") and isinstance(pid, int) and not _alive(pid):
        return "interrupted"
    return status


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
