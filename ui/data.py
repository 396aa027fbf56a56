"""Cached loaders: the pages' only way to read run artifacts (through `poc.artifacts` / `poc.leaderboard`).

Every loader is keyed on the path it reads and that path's modification time (ns) and size, so a file a
training process (re)writes shows up on the next rerun, while an unchanged file is read once. Loaders never
raise on a damaged run: they return None (or a value carrying `problems`) and the page shows a warning.

Public API (stable; other pages import it):
    runs_dir() -> Path                              VITRINE_RUNS_DIR or artifacts/runs
    load_runs() -> list[RunRecord]                  every run dir, newest first, damaged ones included
    load_leaderboard() -> pd.DataFrame              poc.leaderboard.COLUMNS + dataset, split_fingerprint;
                                                    numeric columns are numbers (text -> NaN + a `problems`
                                                    note); a run whose run.json has the wrong shape is a row
                                                    with status "unreadable" and its `problems`
    load_run(run_id) -> RunRecord | None            one run (None when the directory is gone)
    load_history(run_id) -> pd.DataFrame | None     history.csv
    load_progress(run_id) -> dict | None            progress.json
    load_split(run_id) -> pd.DataFrame | None       split.csv
    load_stage(run_id, stage) -> StageEval          eval/<stage>/*: predictions, confusion, report, metrics
    run_stages(run_id) -> list[str]                 stages ("tl", "ft") whose metrics.json exists
    load_explanations(run_id, stage) -> (maps (N, h, w) float32, method) | None
    load_image(path, max_side=256) -> PIL.Image | None   an RGB thumbnail of a dataset image (None: missing)
    load_model(run_id, stage=None) -> LoadedRun     poc.inference.load_model, @st.cache_resource; raises
                                                    UserError / OSError when the run has no usable weights
    run_label(row_or_record) -> str                 "<model> · <name>" (just the name when it names the model)
    run_labels(ids=None) -> dict[str, str]          id -> label for every readable run (or just `ids`)
Derived views (pure functions of what the loaders return):
    final_stage(row) -> "ft" | "tl" | None          the last evaluated stage of a leaderboard row
    accuracy_gap(run_a, stage_a, run_b, stage_b) -> dict | None
                                                    accuracy(a) - accuracy(b) with a bootstrap 95% interval
                                                    (paired when both list the same test images)
    stage_changes(tl, ft) -> dict                   newly correct / wrong images, diagonal gain, perfect-class
                                                    shares (StageEval tl and ft of one run)
    f1_delta(tl_report, ft_report) -> pd.DataFrame  class, f1_tl, f1_ft, delta
    as_float(value) -> float | None                 a finite number from a damaged-file value, else None
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from poc import artifacts, leaderboard
from poc.artifacts import RunDir, RunRecord, StageEval

Signature = tuple  # ((path, mtime_ns, size), ...): what a cached value depends on


def runs_dir() -> Path:
    """The runs folder the dashboard reads: $VITRINE_RUNS_DIR or artifacts/runs."""
    return artifacts.default_runs_dir()


def _stamp(path: Path) -> tuple[str, int, int]:
    try:
        st_ = os.stat(path)
        return (str(path), st_.st_mtime_ns, st_.st_size)
    except OSError:
        return (str(path), -1, -1)


def _run_signature(rd: RunDir) -> Signature:
    """Changes whenever a file the leaderboard reads is replaced (atomic writes also touch the folder)."""
    paths = [rd.path, rd.run_json, rd.history_csv, rd.progress_json, rd.weights, rd.path / "eval"]
    for stage in artifacts.STAGES:
        paths += [rd.eval_dir(stage), rd.eval_file(stage, "metrics")]
    return tuple(_stamp(p) for p in paths)


def _runs_signature(root: Path) -> Signature:
    try:
        dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return (_stamp(root),)
    return (_stamp(root),) + tuple(_run_signature(RunDir(p)) for p in dirs)


def _rd(run_id: str) -> RunDir:
    return artifacts.run_dir(runs_dir(), run_id)


# ---------------------------------------------------------------- runs and leaderboard

def _load_run_safely(path: Path) -> RunRecord:
    """artifacts.load_run (which already flags a run.json that is not an object), but any other failure to
    read the directory (it vanished mid-read, say) becomes a flagged record instead of an exception."""
    try:
        return artifacts.load_run(path)
    except Exception as exc:
        return RunRecord(RunDir(Path(path)), {}, [f"run.json unusable ({type(exc).__name__}: {exc})"])


def _list_runs_safely(root: str) -> list[RunRecord]:
    try:
        return artifacts.list_runs(root)
    except Exception:  # one malformed run must not hide the others: load them one by one
        base = Path(root)
        dirs = [p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")] if base.is_dir() else []
        return [_load_run_safely(p) for p in sorted(dirs, key=lambda p: p.name, reverse=True)]


def _board_row(record: RunRecord) -> dict:
    try:
        row = leaderboard.run_row(record)
    except Exception as exc:  # wrong types inside run.json or metrics.json
        row = {c: None for c in leaderboard.COLUMNS}
        row.update(id=record.id, name=record.id, status="unreadable",
                   problems="; ".join(record.problems + [f"run.json or eval files malformed "
                                                         f"({type(exc).__name__}: {exc})"]))
    dataset = record.info.get("dataset") if isinstance(record.info, dict) else None
    dataset = dataset if isinstance(dataset, dict) else {}
    row["dataset"], row["split_fingerprint"] = dataset.get("path"), dataset.get("split_fingerprint")
    return row


@st.cache_data(show_spinner=False, ttl=10)  # ttl: a killed training changes no file but its pid dies
def _cached_runs(root: str, signature: Signature) -> list[RunRecord]:
    return _list_runs_safely(root)


NUMERIC_COLUMNS = ["trainable_tl", "trainable_ft", "weights_mb", "acc_tl", "acc_tl_low", "acc_tl_high", "acc_ft",
                   "acc_ft_low", "acc_ft_high", "macro_f1", "best_epoch_tl", "best_epoch_ft", "train_seconds",
                   "progress", "num_classes", "image_size"]


@st.cache_data(show_spinner=False, ttl=10)
def _cached_leaderboard(root: str, signature: Signature) -> pd.DataFrame:
    rows = [_board_row(r) for r in _list_runs_safely(root)]
    board = pd.DataFrame(rows, columns=leaderboard.COLUMNS + ["dataset", "split_fingerprint"])
    for column in NUMERIC_COLUMNS:  # a hand-edited or damaged file may hold text where numbers belong
        numbers = pd.to_numeric(board[column], errors="coerce")
        bad = board[column].notna() & numbers.isna()
        if bad.any():
            note = f"{column} is not a number"
            board.loc[bad, "problems"] = [f"{p}; {note}" if isinstance(p, str) else note
                                         for p in board.loc[bad, "problems"]]
        board[column] = numbers
    for column in ("id", "name", "model", "family", "status", "created", "device", "error", "dataset"):
        board[column] = board[column].map(lambda v: v if v is None or isinstance(v, str) else str(v))
    return board


def load_runs() -> list[RunRecord]:
    """Every run directory, newest first; damaged ones included with their `problems`."""
    root = runs_dir()
    return _cached_runs(str(root), _runs_signature(root))


def load_leaderboard() -> pd.DataFrame:
    """One row per run (poc.leaderboard.COLUMNS); empty frame with those columns when there is no run."""
    root = runs_dir()
    try:
        return _cached_leaderboard(str(root), _runs_signature(root))
    except Exception:  # a run dir vanishing mid-read: show what we can rather than a traceback
        return pd.DataFrame(columns=leaderboard.COLUMNS + ["dataset", "split_fingerprint"])


def load_run(run_id: str) -> RunRecord | None:
    rd = _rd(run_id)
    if not rd.path.is_dir():
        return None
    return _cached_run(str(rd.path), _run_signature(rd))


@st.cache_data(show_spinner=False)
def _cached_run(path: str, signature: Signature) -> RunRecord:
    return _load_run_safely(Path(path))


def run_stages(run_id: str) -> list[str]:
    """The stages ("tl", "ft") that have an eval/<stage>/metrics.json, in training order."""
    rd = _rd(run_id)
    return [s for s in artifacts.STAGES if rd.eval_file(s, "metrics").exists()]


# ---------------------------------------------------------------- per-run files

@st.cache_data(show_spinner=False)
def _cached_history(path: str, signature: Signature) -> pd.DataFrame | None:
    return artifacts.read_history(RunDir(Path(path)))


def load_history(run_id: str) -> pd.DataFrame | None:
    """history.csv (epoch, phase, loss, accuracy, val_loss, val_accuracy, lr, seconds) or None."""
    rd = _rd(run_id)
    return _cached_history(str(rd.path), (_stamp(rd.history_csv),))


@st.cache_data(show_spinner=False)
def _cached_progress(path: str, signature: Signature) -> dict | None:
    return artifacts.read_progress(RunDir(Path(path)))


def load_progress(run_id: str) -> dict | None:
    rd = _rd(run_id)
    return _cached_progress(str(rd.path), (_stamp(rd.progress_json),))


@st.cache_data(show_spinner=False)
def _cached_split(path: str, signature: Signature) -> pd.DataFrame | None:
    return artifacts.read_split(RunDir(Path(path)))


def load_split(run_id: str) -> pd.DataFrame | None:
    rd = _rd(run_id)
    return _cached_split(str(rd.path), (_stamp(rd.split_csv),))


@st.cache_data(show_spinner=False, max_entries=64)
def _cached_stage(path: str, stage: str, signature: Signature) -> StageEval:
    return artifacts.read_stage(RunDir(Path(path)), stage)


def load_stage(run_id: str, stage: str) -> StageEval:
    """eval/<stage>: predictions, confusion, report, metrics; missing parts are None and in `.problems`."""
    rd = _rd(run_id)
    files = [rd.eval_file(stage, k) for k in ("predictions", "confusion_matrix", "classification_report",
                                               "metrics")]
    return _cached_stage(str(rd.path), stage, tuple(_stamp(p) for p in files))


@st.cache_data(show_spinner=False, max_entries=16)
def _cached_explanations(path: str, stage: str, signature: Signature):
    return artifacts.read_explanations(RunDir(Path(path)), stage)


def load_explanations(run_id: str, stage: str):
    """(maps (N, h, w) float32 aligned with predictions.csv rows, method) or None."""
    rd = _rd(run_id)
    return _cached_explanations(str(rd.path), stage, (_stamp(rd.eval_file(stage, "explanations")),))


# ---------------------------------------------------------------- images and models

@st.cache_data(show_spinner=False, max_entries=2048)
def _cached_image(path: str, max_side: int, signature: Signature):
    from poc.data.images import ImageRejected, open_rgb

    try:
        image = open_rgb(path)
    except (ImageRejected, OSError, ValueError):
        return None
    image.thumbnail((max_side, max_side))
    return image


def load_image(path: str, max_side: int = 256):
    """An RGB PIL thumbnail of a dataset image, or None when the file is missing or unreadable."""
    return _cached_image(str(path), int(max_side), (_stamp(Path(path)),))


@st.cache_resource(show_spinner="Loading the model...", max_entries=4)
def _cached_model(path: str, stage: str | None, signature: Signature):
    from poc.inference import load_model as _load

    return _load(RunDir(Path(path)), stage)


def load_model(run_id: str, stage: str | None = None):
    """poc.inference.LoadedRun (model, class_names, image_size, spec) with final or stage weights; cached
    per weights file version. Raises poc.errors.UserError when the run has no usable weights."""
    rd = _rd(run_id)
    weights = rd.stage_weights(stage) if stage else rd.weights
    return _cached_model(str(rd.path), stage, (_stamp(weights), _stamp(rd.run_json)))


# ---------------------------------------------------------------- labels

def run_label(row) -> str:
    """A short human label: '<model> · <name>' (name defaults to the id); works on a leaderboard row
    (dict / Series) or a RunRecord."""
    if isinstance(row, RunRecord):
        model, name, rid = row.info.get("model"), row.info.get("name"), row.id
    else:
        model, name, rid = row.get("model"), row.get("name"), row.get("id")
    name = name if isinstance(name, str) and name else rid
    if not isinstance(model, str) or not model or model in str(name):
        return str(name)
    return f"{model} · {name}"


def run_labels(ids: list[str] | None = None) -> dict[str, str]:
    """id -> label for readable runs (all, or those in `ids` in that order); unknown ids map to themselves."""
    board = load_leaderboard()
    by_id = {r["id"]: run_label(r) for r in board.to_dict("records")}
    seen: dict[str, int] = {}
    for label in by_id.values():
        seen[label] = seen.get(label, 0) + 1
    by_id = {i: (f"{label} ({i})" if seen[label] > 1 else label) for i, label in by_id.items()}  # unique
    if ids is None:
        return by_id
    return {i: by_id.get(i, i) for i in ids}


# ---------------------------------------------------------------- derived views

def final_stage(row) -> str | None:
    """"ft" when the row has an accuracy after fine-tuning, else "tl", else None."""
    for stage in ("ft", "tl"):
        value = row.get(f"acc_{stage}")
        if value is not None and pd.notna(value):
            return stage
    return None


def _correct(run_id: str, stage: str) -> pd.DataFrame | None:
    pred = load_stage(run_id, stage).predictions
    if pred is None or pred.empty:
        return None
    return pd.DataFrame({"path": pred["path"].astype(str), "correct": (pred["label"] == pred["pred"]).to_numpy()})


def accuracy_gap(run_a: str, stage_a: str, run_b: str, stage_b: str, n_boot: int = 2000,
                 seed: int = 0) -> dict | None:
    """Accuracy of a minus accuracy of b with a percentile-bootstrap 95% interval.

    Paired (the same test images resampled for both) when both predictions list the same test paths, which
    is what a shared split gives; otherwise the two test sets are resampled independently. Returns
    {gap, low, high, paired, n_a, n_b} or None when a stage's predictions are missing."""
    a, b = _correct(run_a, stage_a), _correct(run_b, stage_b)
    if a is None or b is None:
        return None
    rng = np.random.default_rng(seed)
    paired = len(a) == len(b) and sorted(a["path"]) == sorted(b["path"])
    ca, cb = a["correct"].to_numpy(float), b["correct"].to_numpy(float)
    if paired:
        if a["path"].is_unique:
            cb = b.set_index("path").loc[a["path"], "correct"].to_numpy(float)
        diff = ca - cb  # per image: -1, 0 or +1
        # Resampling n images with replacement only changes how many of each value are drawn: a multinomial
        # draw gives the same bootstrap distribution in O(n_boot) memory.
        shares = np.array([(diff == v).mean() for v in (-1.0, 0.0, 1.0)])
        shares = shares / shares.sum()
        counts = rng.multinomial(len(diff), shares, size=n_boot)  # (n_boot, 3)
        samples = (counts[:, 2] - counts[:, 0]) / len(diff)
    else:
        samples = (rng.binomial(len(ca), ca.mean(), n_boot) / len(ca)
                   - rng.binomial(len(cb), cb.mean(), n_boot) / len(cb))
    low, high = np.percentile(samples, [2.5, 97.5])
    gap = float(ca.mean() - cb.mean())
    return {"gap": gap, "low": float(low), "high": float(high), "paired": paired, "n_a": len(a), "n_b": len(b)}


def as_float(value) -> float | None:
    """A finite float from a JSON / CSV value, else None (damaged files hold text or null)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def stage_changes(tl: StageEval, ft: StageEval) -> dict:
    """What fine-tuning changed on the test set: {aligned, newly_correct, newly_wrong, diagonal_tl,
    diagonal_ft, diagonal_gain, n, perfect_tl, perfect_ft}. `aligned` is False (and the per-image
    counts None) when the two predictions files do not list the same images in the same order."""
    out = {"aligned": False, "newly_correct": None, "newly_wrong": None}
    if tl.predictions is not None and ft.predictions is not None:
        p_tl, p_ft = tl.predictions, ft.predictions
        aligned = len(p_tl) == len(p_ft) and (p_tl["path"].to_numpy() == p_ft["path"].to_numpy()).all()
        if aligned:
            ok_tl = (p_tl["label"] == p_tl["pred"]).to_numpy()
            ok_ft = (p_ft["label"] == p_ft["pred"]).to_numpy()
            out.update(aligned=True, newly_correct=int((~ok_tl & ok_ft).sum()),
                       newly_wrong=int((ok_tl & ~ok_ft).sum()), n=int(len(p_tl)))
    for name, ev in (("tl", tl), ("ft", ft)):
        cm = ev.confusion
        out[f"diagonal_{name}"] = int(np.trace(cm.to_numpy())) if cm is not None and cm.shape[0] == cm.shape[1] \
            else None
        share = as_float((ev.metrics or {}).get("perfect_class_share"))
        if share is None and ev.report is not None:
            rep = ev.report[pd.to_numeric(ev.report["support"], errors="coerce") > 0]
            share = float((pd.to_numeric(rep["f1"], errors="coerce") >= 1 - 1e-12).mean()) if len(rep) else None
        out[f"perfect_{name}"] = share
    if out["diagonal_tl"] is not None and out["diagonal_ft"] is not None:
        out["diagonal_gain"] = out["diagonal_ft"] - out["diagonal_tl"]
    else:
        out["diagonal_gain"] = None
    return out


def f1_delta(tl_report: pd.DataFrame, ft_report: pd.DataFrame) -> pd.DataFrame:
    """class, f1_tl, f1_ft, delta (ft - tl), over the classes both reports list."""
    merged = tl_report[["class", "f1"]].merge(ft_report[["class", "f1"]], on="class", suffixes=("_tl", "_ft"))
    for column in ("f1_tl", "f1_ft"):
        merged[column] = pd.to_numeric(merged[column], errors="coerce")
    return merged.assign(delta=merged["f1_ft"] - merged["f1_tl"]).dropna(subset=["delta"])
