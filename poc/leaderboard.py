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
    info = run.info
    row = {c: None for c in COLUMNS}
    params = info.get("params") or {}
    best = info.get("best_epoch") or {}
    timing = info.get("timing") or {}
    row.update({
        "id": run.id, "name": info.get("name") or run.id, "model": info.get("model"),
        "family": info.get("family"), "weights": info.get("weights"), "fine_tune_at": info.get("fine_tune_at"),
        "trainable_tl": params.get("trainable_tl"), "trainable_ft": params.get("trainable_ft"),
        "weights_mb": artifacts.weights_size_mb(run.dir), "best_epoch_tl": best.get("tl"),
        "best_epoch_ft": best.get("ft"),
        "train_seconds": sum(v for v in timing.values() if isinstance(v, (int, float))) or None,
        "device": info.get("device"), "status": effective_status(run), "error": info.get("error"),
        "problems": "; ".join(run.problems) or None, "created": info.get("created"),
        "num_classes": len(run.class_names) or None, "image_size": info.get("image_size"),
    })
    for stage in artifacts.STAGES:
        metrics = artifacts.read_json(run.dir.eval_file(stage, "metrics")) or {}
        if "accuracy" in metrics:
            low, high = (metrics.get("accuracy_ci95") or [None, None])[:2]
            row.update({f"acc_{stage}": metrics["accuracy"], f"acc_{stage}_low": low, f"acc_{stage}_high": high})
            row["macro_f1"] = metrics.get("macro_f1")  # the last stage's: ft when present
    if row["status"] in ("running", "queued"):
        row["progress"] = progress_fraction(artifacts.read_progress(run.dir))
    return row


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
