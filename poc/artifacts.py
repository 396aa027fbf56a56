"""The run directory: its layout and every read and write of it.

Nobody else builds artifact paths. Writes are atomic (temp file in the same folder + os.replace) so a reader
never sees half a file; reads never raise on a damaged run: they return what they can and say what is wrong.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

STAGES = ("tl", "ft")
STATUSES = ("queued", "running", "completed", "failed", "cancelled")
HISTORY_COLUMNS = ["epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"]
REPORT_COLUMNS = ["class", "precision", "recall", "f1", "support"]
SPLIT_COLUMNS = ["path", "label", "split", "sha256"]

RUN_JSON = "run.json"
SPLIT_CSV = "split.csv"
HISTORY_CSV = "history.csv"
PROGRESS_JSON = "progress.json"
WEIGHTS = "model.weights.h5"
STAGE_WEIGHTS = "weights_{stage}.weights.h5"
TRAIN_LOG = "train.log"
LOGS_DIR = "logs"
EVAL_FILES = {
    "predictions": "predictions.csv",
    "confusion_matrix": "confusion_matrix.csv",
    "classification_report": "classification_report.csv",
    "metrics": "metrics.json",
    "explanations": "explanations.npz",
}


def default_runs_dir() -> Path:
    return Path(os.environ.get("VITRINE_RUNS_DIR", "artifacts/runs"))


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def new_run_id(model: str) -> str:
    """Sortable by creation time, unique without a lock: timestamp + model + random suffix."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")[:24]
    return f"{stamp}-{slug}-{secrets.token_hex(2)}"


# ---------------------------------------------------------------- atomic writes

def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    _atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


def write_csv(path: Path, df: pd.DataFrame, index: bool = False) -> None:
    _atomic_write_bytes(path, df.to_csv(index=index).encode())


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    _atomic_write_bytes(path, buf.getvalue())


def atomic_target(path: Path) -> Path:
    """A temp path beside `path` for writers that need a filename (Keras weights); pair with commit()."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{''.join(path.suffixes)}")


def commit(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# ---------------------------------------------------------------- the run directory

@dataclass(frozen=True)
class RunDir:
    """Paths of one run; the only place that knows file names."""

    path: Path

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def run_json(self) -> Path:
        return self.path / RUN_JSON

    @property
    def split_csv(self) -> Path:
        return self.path / SPLIT_CSV

    @property
    def history_csv(self) -> Path:
        return self.path / HISTORY_CSV

    @property
    def progress_json(self) -> Path:
        return self.path / PROGRESS_JSON

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS

    def stage_weights(self, stage: str) -> Path:
        return self.path / STAGE_WEIGHTS.format(stage=stage)

    @property
    def train_log(self) -> Path:
        return self.path / TRAIN_LOG

    @property
    def logs_dir(self) -> Path:
        return self.path / LOGS_DIR

    def eval_dir(self, stage: str) -> Path:
        return self.path / "eval" / stage

    def eval_file(self, stage: str, kind: str) -> Path:
        return self.eval_dir(stage) / EVAL_FILES[kind]

    # -- writers (only the run's own training process calls these)
    def create(self) -> "RunDir":
        self.path.mkdir(parents=True, exist_ok=False)
        return self

    def write_run(self, info: dict) -> None:
        write_json(self.run_json, info)

    def update_run(self, **changes: Any) -> dict:
        info = read_json(self.run_json) or {}
        info.update(changes)
        self.write_run(info)
        return info

    def write_progress(self, progress: dict) -> None:
        write_json(self.progress_json, {**progress, "updated": utc_now()})

    def write_history(self, rows: list[dict]) -> None:
        write_csv(self.history_csv, pd.DataFrame(rows, columns=HISTORY_COLUMNS))

    def write_eval(self, stage: str, *, predictions: pd.DataFrame, confusion: pd.DataFrame,
                   report: pd.DataFrame, metrics: dict) -> None:
        write_csv(self.eval_file(stage, "predictions"), predictions)
        write_csv(self.eval_file(stage, "confusion_matrix"), confusion, index=True)
        write_csv(self.eval_file(stage, "classification_report"), report)
        write_json(self.eval_file(stage, "metrics"), metrics)

    def write_explanations(self, stage: str, maps: np.ndarray, method: str) -> None:
        write_npz(self.eval_file(stage, "explanations"), maps=maps.astype(np.float16),
                  rows=np.arange(len(maps), dtype=np.int32), method=np.array(method))


def run_dir(runs_dir: Path | str, run_id: str) -> RunDir:
    return RunDir(Path(runs_dir) / run_id)


# ---------------------------------------------------------------- readers (never raise on damage)

def read_json(path: Path) -> dict | None:
    """The JSON object in `path`, or None when it is missing, unreadable, or not an object."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _read_csv(path: Path, required: list[str] | None = None, index_col: int | None = None) -> pd.DataFrame | None:
    try:
        df = pd.read_csv(path, index_col=index_col)
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    if required and not set(required) <= set(df.columns):
        return None
    return df


@dataclass
class StageEval:
    """One stage's evaluation files; a missing or unreadable file is None and listed in `problems`."""

    stage: str
    predictions: pd.DataFrame | None = None
    confusion: pd.DataFrame | None = None
    report: pd.DataFrame | None = None
    metrics: dict | None = None
    problems: list[str] = field(default_factory=list)


@dataclass
class RunRecord:
    """What the dashboard knows about one run directory, including what is wrong with it."""

    dir: RunDir
    info: dict
    problems: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.dir.id

    @property
    def status(self) -> str:
        return self.info.get("status", "unknown")

    @property
    def readable(self) -> bool:
        return bool(self.info)

    @property
    def class_names(self) -> list[str]:
        return list(self.info.get("class_names") or [])

    def stages(self) -> list[str]:
        return [s for s in STAGES if self.dir.eval_file(s, "metrics").exists()]


def load_run(path: Path | str) -> RunRecord:
    rd = RunDir(Path(path))
    info = read_json(rd.run_json)
    problems = []
    if info is None:
        problems.append("run.json missing or unreadable" if rd.run_json.exists() or not any(rd.path.iterdir())
                        else "run.json missing")
        info = {}
    elif info.get("status") not in STATUSES:
        problems.append(f"unknown status {info.get('status')!r}")
    for stage in STAGES:
        if rd.eval_file(stage, "metrics").exists() and read_json(rd.eval_file(stage, "metrics")) is None:
            problems.append(f"eval/{stage}/metrics.json unreadable")
    if rd.history_csv.exists() and read_history(rd) is None:
        problems.append("history.csv unreadable")
    return RunRecord(rd, info, problems)


def list_runs(runs_dir: Path | str | None = None) -> list[RunRecord]:
    """Every run directory, newest first; damaged ones included with their problems."""
    root = Path(runs_dir) if runs_dir else default_runs_dir()
    if not root.is_dir():
        return []
    dirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return [load_run(p) for p in sorted(dirs, key=lambda p: p.name, reverse=True)]


def find_run(ref: str, runs_dir: Path | str | None = None) -> RunDir | None:
    """A run by path, id, or unique id prefix."""
    as_path = Path(ref)
    if (as_path / RUN_JSON).exists():
        return RunDir(as_path)
    root = Path(runs_dir) if runs_dir else default_runs_dir()
    if (root / ref / RUN_JSON).exists():
        return RunDir(root / ref)
    matches = [p for p in root.glob(f"{ref}*") if (p / RUN_JSON).exists()] if root.is_dir() else []
    return RunDir(matches[0]) if len(matches) == 1 else None


def read_history(rd: RunDir) -> pd.DataFrame | None:
    return _read_csv(rd.history_csv, HISTORY_COLUMNS)


def read_progress(rd: RunDir) -> dict | None:
    return read_json(rd.progress_json)


def read_split(rd: RunDir) -> pd.DataFrame | None:
    return _read_csv(rd.split_csv, SPLIT_COLUMNS)


def read_stage(rd: RunDir, stage: str) -> StageEval:
    ev = StageEval(stage)
    ev.predictions = _read_csv(rd.eval_file(stage, "predictions"), ["path", "label", "pred", "confidence"])
    ev.confusion = _read_csv(rd.eval_file(stage, "confusion_matrix"), index_col=0)
    ev.report = _read_csv(rd.eval_file(stage, "classification_report"), REPORT_COLUMNS)
    ev.metrics = read_json(rd.eval_file(stage, "metrics"))
    for name in ("predictions", "confusion", "report", "metrics"):
        if getattr(ev, name) is None:
            ev.problems.append(f"eval/{stage}: {name} missing or unreadable")
    return ev


def read_explanations(rd: RunDir, stage: str) -> tuple[np.ndarray, str] | None:
    """(maps (N, h, w) float32 aligned with predictions.csv rows, method) or None."""
    path = rd.eval_file(stage, "explanations")
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["maps"].astype(np.float32), str(z["method"])
    except (OSError, KeyError, ValueError):
        return None


def weights_size_mb(rd: RunDir) -> float | None:
    try:
        return rd.weights.stat().st_size / 1e6
    except OSError:
        return None
