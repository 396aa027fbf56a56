"""The run directory: its layout and every read and write of it.

Nobody else builds artifact paths. Writes are atomic (temp file in the same folder + os.replace) so a reader
never sees half a file; reads never raise on a damaged run: they return what they can and say what is wrong.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
import secrets
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from poc.data.split import COLUMNS as SPLIT_COLUMNS  # split.csv's columns: the splitter owns them


STAGES = ("tl", "ft")
# What a training process writes into run.json's `status` (poc.runs.status derives the rest from it).
WRITTEN = ("queued", "running", "completed", "failed", "cancelled")
HISTORY_COLUMNS = ["epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"]
REPORT_COLUMNS = ["class", "precision", "recall", "f1", "support"]
PREDICTION_COLUMNS = ["path", "label", "pred", "confidence"]  # then prob_<class> per class

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
    "logits": "logits.npz",
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


def write_split(path: Path, df: pd.DataFrame) -> Path:
    """split.csv (a run's, or `python -m poc split --out`): the manifest columns first, then any extra ones."""
    missing = [c for c in SPLIT_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"split manifest {path} lacks columns {missing}; expected {SPLIT_COLUMNS}")
    extra = [c for c in df.columns if c not in SPLIT_COLUMNS]
    write_csv(Path(path), df[SPLIT_COLUMNS + extra])
    return Path(path)


def write_npz(path: Path, compress: bool = True, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buf, **arrays)
    _atomic_write_bytes(path, buf.getvalue())


def atomic_target(path: Path) -> Path:
    """A temp path beside `path` for writers that need a filename (Keras weights); pair with commit()."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{''.join(path.suffixes)}")


def commit(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)


def copy_file(source: Path, path: Path) -> None:
    """`path` becomes a copy of `source`, atomically."""
    tmp = atomic_target(path)
    try:
        shutil.copyfile(source, tmp)
        commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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

    def write_logits(self, stage: str, val: np.ndarray, val_labels: np.ndarray, test: np.ndarray) -> None:
        """Pre-softmax outputs, float32: `val` (N_val, C) with its integer labels, `test` (N_test, C) in
        predictions.csv order; the stage's temperature and calibrated ECE are recomputed from them."""
        write_npz(self.eval_file(stage, "logits"), val=np.asarray(val, np.float32),
                  val_labels=np.asarray(val_labels, np.int32), test=np.asarray(test, np.float32))

    def write_explanations(self, stage: str, maps: np.ndarray, method: str, layer: str | None = None) -> None:
        """`layer`: the backbone layer Grad-CAM read (the `layer` array; "" for attention rollout)."""
        write_npz(self.eval_file(stage, "explanations"), maps=maps.astype(np.float16),
                  rows=np.arange(len(maps), dtype=np.int32), method=np.array(method), layer=np.array(layer or ""))


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
        names = self.info.get("class_names")
        return [str(n) for n in names] if isinstance(names, list) else []


def load_run(path: Path | str) -> RunRecord:
    """One run directory; a run.json that is missing, unreadable or not an object leaves `info` empty (the run
    reads as unreadable), and a directory that vanishes while being read becomes a record with that problem."""
    rd = RunDir(Path(path))
    try:
        return _load_run(rd)
    except OSError as exc:
        return RunRecord(rd, {}, [f"run directory unreadable ({type(exc).__name__}: {exc})"])


def _load_run(rd: RunDir) -> RunRecord:
    info = read_json(rd.run_json)
    problems = []
    if info is None:
        problems.append("run.json missing or unreadable" if rd.run_json.exists() or not any(rd.path.iterdir())
                        else "run.json missing")
        info = {}
    elif info.get("status") not in WRITTEN:
        problems.append(f"unknown status {info.get('status')!r}")
    for stage in STAGES:
        if rd.eval_file(stage, "metrics").exists() and read_json(rd.eval_file(stage, "metrics")) is None:
            problems.append(f"eval/{stage}/metrics.json unreadable")
        if wrong := _header_problem(rd.eval_file(stage, "predictions"), PREDICTION_COLUMNS):
            problems.append(f"eval/{stage}/predictions.csv {wrong}")
    if wrong := _header_problem(rd.history_csv, HISTORY_COLUMNS):  # the header only: cheap for every listing
        problems.append(f"history.csv {wrong}")
    if info.get("status") == "completed" and not rd.eval_dir(STAGES[0]).parent.is_dir():
        problems.append(f"eval/ missing: the run is marked completed but has no evaluation; "
                        f"`python -m poc evaluate {rd.id}` recomputes it")
    return RunRecord(rd, info, problems)


def _header_problem(path: Path, required: list[str]) -> str | None:
    """What is wrong with a CSV file's header ("unreadable", "lacks column(s) ..."); None when it is fine or the
    file is absent. Reads the header line only: cheap enough for every listing."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            columns = set(next(csv.reader(fh), []))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, csv.Error):
        return "unreadable"
    if not columns:
        return "unreadable"
    missing = [c for c in required if c not in columns]
    return f"lacks column(s) {', '.join(missing)}" if missing else None


def run_dirs(runs_dir: Path | str | None = None) -> list[RunDir]:
    """Every run directory (not the dot-folders of jobs and locks), newest first; [] without a runs folder."""
    return [RunDir(Path(path)) for path in _run_paths(runs_dir)]


def _run_paths(runs_dir: Path | str | None) -> list[str]:
    """The run directories as plain strings (cheap to stat: the run index lists 1,000 runs in milliseconds)."""
    root = str(runs_dir) if runs_dir else str(default_runs_dir())
    try:
        with os.scandir(root) as entries:
            return sorted((e.path for e in entries if e.is_dir() and not e.name.startswith(".")), reverse=True)
    except OSError:  # no runs folder (yet), or it vanished
        return []


# What load_run reads, relative to a run directory: a run whose stamps are unchanged reads the same. A write
# is a rename into its folder (the folder's stamp changes) or, for hand edits, the file's own stamp.
LISTED_FILES = ("", RUN_JSON, HISTORY_CSV, PROGRESS_JSON, SPLIT_CSV, "eval") + tuple(
    f"eval/{stage}{name}" for stage in STAGES for name in ("", f"/{EVAL_FILES['metrics']}",
                                                           f"/{EVAL_FILES['predictions']}"))


def run_stamps(runs_dir: Path | str | None = None) -> list[tuple[str, tuple]]:
    """[(run directory, run_stamp)], newest first, as run_dirs lists them: the cheap check (os.stat on plain
    strings, ~20 us a run) that tells a reader which runs changed since it last read them."""
    return [(path, run_stamp(path)) for path in _run_paths(runs_dir)]


def run_stamp(path: str) -> tuple:
    """((mtime_ns, size) or None for each LISTED_FILES entry) of one run directory: equal stamps, equal load_run."""
    stamps = []
    for name in LISTED_FILES:
        try:
            st_ = os.stat(f"{path}/{name}" if name else path)
            stamps.append((st_.st_mtime_ns, st_.st_size))
        except OSError:
            stamps.append(None)
    return tuple(stamps)


def list_runs(runs_dir: Path | str | None = None) -> list[RunRecord]:
    """Every run directory, newest first; damaged ones included with their problems."""
    return [load_run(rd.path) for rd in run_dirs(runs_dir)]


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
    """history.csv in epoch order, numbers as numbers (text -> NaN); rows without a numeric epoch or a known
    phase are dropped and counted in `.attrs["dropped_rows"]`. None when missing or unreadable."""
    frame = _read_csv(rd.history_csv, HISTORY_COLUMNS)
    if frame is None:
        return None
    for column in HISTORY_COLUMNS:
        if column != "phase":
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    keep = frame["epoch"].notna() & frame["phase"].isin(STAGES)
    frame = frame[keep].astype({"epoch": int}).sort_values("epoch", kind="stable").reset_index(drop=True)
    frame.attrs["dropped_rows"] = int((~keep).sum())
    return frame


def read_progress(rd: RunDir) -> dict | None:
    return read_json(rd.progress_json)


def read_split(rd: RunDir) -> pd.DataFrame | None:
    return _read_csv(rd.split_csv, SPLIT_COLUMNS)


def read_stage(rd: RunDir, stage: str) -> StageEval:
    """eval/<stage>/ checked as it is read: numbers are numbers (text becomes NaN, and a problem says so), class
    names are strings, a confusion matrix that is not square over the same classes is set aside (None)."""
    ev = StageEval(stage)
    ev.predictions = read_predictions(rd, stage)
    ev.confusion = _read_csv(rd.eval_file(stage, "confusion_matrix"), index_col=0)
    ev.report = _read_csv(rd.eval_file(stage, "classification_report"), REPORT_COLUMNS)
    ev.metrics, metric_problems = read_metrics(rd, stage)
    for name in ("predictions", "confusion", "report", "metrics"):
        if getattr(ev, name) is None:
            ev.problems.append(f"eval/{stage}: {name} missing or unreadable")
    ev.problems += metric_problems
    if ev.predictions is not None:
        ev.predictions = _as_numbers(ev.predictions, ["confidence"], f"eval/{stage}: predictions", ev.problems)
    if ev.report is not None:
        ev.report = _as_text(ev.report, ["class"])
        ev.report = _as_numbers(ev.report, ["precision", "recall", "f1", "support"], f"eval/{stage}: report",
                                ev.problems)
    if ev.confusion is not None:
        ev.confusion = _checked_confusion(ev.confusion, stage, ev.problems)
    return ev


def read_predictions(rd: RunDir, stage: str) -> pd.DataFrame | None:
    """eval/<stage>/predictions.csv with path, label and pred as strings; None when missing or unreadable."""
    frame = _read_csv(rd.eval_file(stage, "predictions"), PREDICTION_COLUMNS)
    return None if frame is None else _as_text(frame, ["path", "label", "pred"])


METRIC_NUMBERS = ("accuracy", "macro_f1", "weighted_f1", "top5_accuracy", "loss", "n", "perfect_class_share",
                  "val_loss", "val_accuracy", "ece", "latency_ms")


def read_metrics(rd: RunDir, stage: str) -> tuple[dict | None, list[str]]:
    """eval/<stage>/metrics.json with its numeric fields as finite floats or None (text, null and NaN read as
    missing; text is also reported) and `accuracy_ci95` as [low, high] or None. (None, []) when absent."""
    metrics = read_json(rd.eval_file(stage, "metrics"))
    if metrics is None:
        return None, []
    problems = []
    where = f"eval/{stage}/metrics.json"
    for key in METRIC_NUMBERS:
        if key in metrics:
            value = as_number(metrics[key])
            if value is None and metrics[key] is not None and not _is_nan(metrics[key]):
                problems.append(f"{where}: {key} is not a number")
            metrics[key] = value
    if "accuracy_ci95" in metrics:
        interval = metrics["accuracy_ci95"]
        bounds = [as_number(v) for v in interval[:2]] if isinstance(interval, list) and len(interval) >= 2 else []
        if len(bounds) != 2 or None in bounds:
            problems.append(f"{where}: accuracy_ci95 is not a [low, high] pair of numbers")
            bounds = None
        metrics["accuracy_ci95"] = bounds
    return metrics, problems


def as_number(value: Any) -> float | None:
    """A finite float from a JSON value, else None (a bool, text, null or NaN is not a measurement)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    value = float(value)
    return value if np.isfinite(value) else None


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and not np.isfinite(value)


def _as_text(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Class names and paths as strings (a class called "1" is read by pandas as the number 1)."""
    frame = frame.copy()
    for column in columns:
        frame[column] = frame[column].astype(str)
    return frame


def _as_numbers(frame: pd.DataFrame, columns: list[str], where: str, problems: list[str]) -> pd.DataFrame:
    for column in columns:
        numbers = pd.to_numeric(frame[column], errors="coerce")
        if (frame[column].notna() & numbers.isna()).any():
            problems.append(f"{where} column {column!r} holds values that are not numbers")
        frame[column] = numbers
    return frame


def _checked_confusion(cm: pd.DataFrame, stage: str, problems: list[str]) -> pd.DataFrame | None:
    numeric = cm.apply(pd.to_numeric, errors="coerce")
    rows, columns = [str(c) for c in cm.index], [str(c) for c in cm.columns]
    if cm.shape[0] != cm.shape[1] or rows != columns or numeric.isna().to_numpy().any():
        problems.append(f"eval/{stage}: confusion_matrix.csv is malformed ({cm.shape[0]} rows x {cm.shape[1]} "
                        "columns, or not the same classes on both axes, or not numbers)")
        return None
    numeric = numeric.astype(int)
    numeric.index, numeric.columns = rows, columns
    return numeric


def read_logits(rd: RunDir, stage: str) -> dict[str, np.ndarray] | None:
    """{"val", "val_labels", "test"} of eval/<stage>/logits.npz, or None when missing, damaged or of another
    shape (the caller says how to write it: python -m poc evaluate RUN)."""
    try:
        with np.load(rd.eval_file(stage, "logits"), allow_pickle=False) as z:
            out = {"val": z["val"].astype(np.float64), "val_labels": z["val_labels"].astype(np.int64),
                   "test": z["test"].astype(np.float64)}
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    if out["val"].ndim != 2 or out["test"].ndim != 2 or out["val"].shape[1] != out["test"].shape[1] \
            or out["val_labels"].shape != (len(out["val"]),):
        return None
    return out


def read_explanations(rd: RunDir, stage: str) -> tuple[np.ndarray, str] | None:
    """(maps (N, h, w) float32 aligned with predictions.csv rows, method) or None."""
    path = rd.eval_file(stage, "explanations")
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["maps"].astype(np.float32), str(z["method"])
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile):  # missing, empty, truncated, not ours
        return None


def read_explanation_layer(rd: RunDir, stage: str) -> str | None:
    """The backbone layer the stage's Grad-CAM maps were taken from (explanations.npz's `layer`); None for
    attention rollout, for a file written before the layer was recorded, and for a missing or damaged file."""
    path = rd.eval_file(stage, "explanations")
    try:
        with np.load(path, allow_pickle=False) as z:
            return (str(z["layer"]) or None) if "layer" in z.files else None
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile):
        return None

