"""Cached loaders: the pages' only way to read run artifacts (through `poc.runs.store` / `poc.analysis.leaderboard`).

Every loader is keyed on the path it reads and that path's modification time (ns) and size, so a file a
training process (re)writes shows up on the next rerun, while an unchanged file is read once. The checks
(numbers, shapes, statuses) happen in poc where the files are read; nothing here re-types a value.

Public API (stable; other pages import it):
    runs_dir() -> Path                              VITRINE_RUNS_DIR or artifacts/runs
    run_dir(run_id) -> RunDir                       one run's directory in it
    stamp(path) -> (path, mtime_ns, size)           a cache key that changes when the file is replaced
    ACTIVE                                          the statuses of a run still in progress (poc.runs.status)
    load_leaderboard() -> pd.DataFrame              poc.analysis.leaderboard.COLUMNS, one row per run, damaged included
    any_active(board, ids=None) -> bool             whether a run of `board` (or of `ids`) is still in progress
    load_run(run_id) -> RunRecord | None            one run (None when the directory is gone)
    load_history(run_id) -> pd.DataFrame | None     history.csv
    load_stage(run_id, stage) -> StageEval          eval/<stage>/*, checked: predictions, confusion, report,
                                                    metrics; missing or malformed parts are None + `problems`
    run_stages(run_id) -> list[str]                 stages ("tl", "ft") whose metrics.json exists
    load_explanations(run_id, stage) -> (maps (N, h, w) float32, method) | None
    load_image(path, max_side=256) -> PIL.Image | None   an RGB thumbnail of a dataset image (None: missing)
    load_model(run_id, stage=None) -> LoadedRun     poc.inference.load_model, built once per process in a
                                                    background thread; waits for it; raises UserError /
                                                    OSError when the run has no usable weights
    model_job(run_id, stage=None) -> Future         that build (started on first call): .done() = ready
    live_model_job(run_id) -> Future                the build, then its compiled predict traced
    models_loading() -> bool                        whether a build is running in the background now
    run_label(row_or_record) -> str                 "<model> · <name>" (just the name when it names the model)
    run_labels(ids=None) -> dict[str, str]          id -> label for every readable run (or just `ids`)
Derived views (pure functions of what the loaders return):
    accuracy_gap(run_a, stage_a, run_b, stage_b) -> dict | None
                                                    poc.analysis.leaderboard.accuracy_gap, cached: paired bootstrap
    stage_totals(tl, ft) -> dict                    diagonal gain and perfect-class shares (StageEval tl and
                                                    ft of one run); per image: ui.compare_view.stage_change
"""

from __future__ import annotations

import functools
import os
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from poc.runs import store
from poc.analysis import leaderboard
from poc.runs import status as runstatus
from poc.runs.store import RunDir, RunRecord, StageEval

Signature = tuple  # ((path, mtime_ns, size), ...): what a cached value depends on
ACTIVE = runstatus.ACTIVE


def runs_dir() -> Path:
    """The runs folder the dashboard reads: $VITRINE_RUNS_DIR or artifacts/runs."""
    return store.default_runs_dir()


def stamp(path: Path) -> tuple[str, int, int]:
    """(path, mtime, size): a cache key that changes whenever the file is replaced; (path, -1, -1) when absent."""
    try:
        st_ = os.stat(path)
        return (str(path), st_.st_mtime_ns, st_.st_size)
    except OSError:
        return (str(path), -1, -1)


def _run_signature(rd: RunDir) -> Signature:
    """Changes whenever a file the leaderboard reads is replaced (atomic writes also touch the folder)."""
    paths = [rd.path, rd.run_json, rd.history_csv, rd.progress_json, rd.path / "eval"]
    for stage in store.STAGES:
        paths += [rd.eval_dir(stage), rd.eval_file(stage, "metrics")]
    return tuple(stamp(p) for p in paths)


def _runs_signature(root: Path) -> Signature:
    return (stamp(root),) + tuple(_run_signature(rd) for rd in store.run_dirs(root))


def run_dir(run_id: str) -> RunDir:
    """The run's directory in the dashboard's runs folder."""
    return store.run_dir(runs_dir(), run_id)


# ---------------------------------------------------------------- runs and leaderboard

@st.cache_data(show_spinner=False, ttl=10)  # ttl: a killed training changes no file but its pid dies
def _cached_leaderboard(root: str, signature: Signature) -> pd.DataFrame:
    return leaderboard.leaderboard(store.list_runs(root))


def load_leaderboard() -> pd.DataFrame:
    """One row per run (poc.analysis.leaderboard.COLUMNS); an empty frame with those columns when there is no run."""
    root = runs_dir()
    return _cached_leaderboard(str(root), _runs_signature(root))


def any_active(board: pd.DataFrame, ids=None) -> bool:
    rows = board if ids is None else board[board["id"].isin(list(ids))]
    return bool(rows["status"].isin(ACTIVE).any())


def load_run(run_id: str) -> RunRecord | None:
    rd = run_dir(run_id)
    if not rd.path.is_dir():
        return None
    return _cached_run(str(rd.path), _run_signature(rd))


@st.cache_data(show_spinner=False)
def _cached_run(path: str, signature: Signature) -> RunRecord:
    return store.load_run(Path(path))


def run_stages(run_id: str) -> list[str]:
    """The stages ("tl", "ft") that have an eval/<stage>/metrics.json, in training order."""
    return runstatus.stages(run_dir(run_id))


# ---------------------------------------------------------------- per-run files

@st.cache_data(show_spinner=False)
def _cached_history(path: str, signature: Signature) -> pd.DataFrame | None:
    return store.read_history(RunDir(Path(path)))


def load_history(run_id: str) -> pd.DataFrame | None:
    """history.csv (epoch, phase, loss, accuracy, val_loss, val_accuracy, lr, seconds) or None."""
    rd = run_dir(run_id)
    return _cached_history(str(rd.path), (stamp(rd.history_csv),))


def _stage_files(rd: RunDir, stage: str) -> Signature:
    return tuple(stamp(rd.eval_file(stage, k))
                 for k in ("predictions", "confusion_matrix", "classification_report", "metrics"))


@st.cache_data(show_spinner=False, max_entries=64)
def _cached_stage(path: str, stage: str, signature: Signature) -> StageEval:
    return store.read_stage(RunDir(Path(path)), stage)


def load_stage(run_id: str, stage: str) -> StageEval:
    """eval/<stage>: predictions, confusion, report, metrics, checked where read (poc.runs.store.read_stage);
    missing or malformed parts are None and named in `.problems`. A copy: the cache keeps its own."""
    rd = run_dir(run_id)
    return _cached_stage(str(rd.path), stage, _stage_files(rd, stage))


@st.cache_data(show_spinner=False, max_entries=16)
def _cached_explanations(path: str, stage: str, signature: Signature):
    return store.read_explanations(RunDir(Path(path)), stage)


def load_explanations(run_id: str, stage: str):
    """(maps (N, h, w) float32 aligned with predictions.csv rows, method) or None."""
    rd = run_dir(run_id)
    return _cached_explanations(str(rd.path), stage, (stamp(rd.eval_file(stage, "explanations")),))


# ---------------------------------------------------------------- images and models

@st.cache_data(show_spinner=False, max_entries=2048)
def _cached_image(path: str, max_side: int, signature: Signature):
    return _open_image(path, max_side)


def _open_image(path: str, max_side: int):
    """A dataset image decoded by the upload rules (no size limit: scan accepted it), shrunk to max_side."""
    from poc.inference import ImageRejected, open_image

    try:
        image = open_image(path, max_bytes=None)
    except (ImageRejected, OSError, ValueError):
        return None
    image.thumbnail((max_side, max_side))
    return image


def load_image(path: str, max_side: int = 256):
    """An RGB PIL thumbnail of a dataset image, or None when the file is missing or unreadable."""
    return _cached_image(str(path), int(max_side), (stamp(Path(path)),))


class _Builder:
    """One thread, for the whole server process, that imports TensorFlow and builds models: a page asks for a
    model and renders at once, and the model is ready a few seconds later. One at a time: two builds on a
    small CPU are no faster together, and each holds its own memory."""

    def __init__(self):
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vitrine-models")
        self.jobs: list[Future] = []

    def submit(self, fn, *args) -> Future:
        job = self.pool.submit(fn, *args)
        self.jobs = [j for j in self.jobs if not j.done()] + [job]
        return job

    def busy(self) -> bool:
        return any(not job.done() for job in self.jobs)


@st.cache_resource(show_spinner=False)
def _model_builder() -> _Builder:
    return _Builder()


def models_loading() -> bool:
    """Whether a model is being built in the background now (a latency measured meanwhile shares the CPU)."""
    return _model_builder().busy()


def _built_model(path: str, stage: str | None):
    from poc import inference

    _keep_keras_session()
    return inference.load_model(RunDir(Path(path)), stage)


def _warmed(model: Future):
    """The built model with its compiled predict traced, so no displayed latency includes tracing. (Running
    the explanation once on a blank image too was measured slower: it costs more here than it saves later.)"""
    from poc import inference

    run = model.result()  # done: the builder runs one task at a time, in order
    inference.warm_up(run)
    return run


def _keep_keras_session() -> None:
    """Streamlit calls keras.backend.clear_session() after every script run (_clean_problem_modules in
    streamlit/runtime/scriptrunner/script_runner.py), a guard for apps that build a model on each run. Here
    models are built once per process, in the background: that call would reset Keras' global state under a
    build in progress, collect garbage (0.25 s on this machine) and drop TensorFlow's kernel cache, so the next
    prediction pays 0.25 s again, and its displayed latency with it. Calls from Streamlit are skipped; any
    other caller still clears."""
    import keras

    original = keras.backend.clear_session
    if getattr(original, "skips_streamlit", False):
        return

    @functools.wraps(original)
    def clear_session(*args, **kwargs):
        if sys._getframe(1).f_globals.get("__name__", "").startswith("streamlit."):
            return None
        return original(*args, **kwargs)

    clear_session.skips_streamlit = True
    keras.backend.clear_session = clear_session


@st.cache_resource(show_spinner=False, max_entries=4)
def _model_job(path: str, stage: str | None, signature: Signature) -> Future:
    return _model_builder().submit(_built_model, path, stage)


@st.cache_resource(show_spinner=False, max_entries=4)
def _warm_job(path: str, signature: Signature) -> Future:
    return _model_builder().submit(_warmed, _model_job(path, None, signature))


def _signature(rd: RunDir, stage: str | None) -> Signature:
    return stamp(rd.stage_weights(stage) if stage else rd.weights), stamp(rd.run_json)


def model_job(run_id: str, stage: str | None = None) -> Future:
    """The background build of a run's model (final or stage weights), started on the first call for each
    version of the weights file; `.done()` says whether load_model would return at once."""
    rd = run_dir(run_id)
    return _model_job(str(rd.path), stage, _signature(rd, stage))


def live_model_job(run_id: str) -> Future:
    """model_job of the final weights followed by tracing its compiled predict, in the same background thread;
    `.result()` is the warmed LoadedRun."""
    rd = run_dir(run_id)
    return _warm_job(str(rd.path), _signature(rd, None))


def load_model(run_id: str, stage: str | None = None):
    """poc.inference.LoadedRun (model, class_names, image_size, spec) with final or stage weights; built once
    per weights file version (see model_job), waiting for the build when it is still running. Raises
    poc.errors.UserError when the run has no usable weights."""
    return model_job(run_id, stage).result()


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

@st.cache_data(show_spinner=False, max_entries=64)
def _cached_gap(path_a: str, stage_a: str, path_b: str, stage_b: str, signature: Signature) -> dict | None:
    return leaderboard.accuracy_gap(RunDir(Path(path_a)), stage_a, RunDir(Path(path_b)), stage_b)


def accuracy_gap(run_a: str, stage_a: str, run_b: str, stage_b: str) -> dict | None:
    """Test accuracy of a minus b over the same test images, paired bootstrap 95% interval:
    {diff, low, high, n, acc_a, acc_b}, or None (predictions missing, or not the same test images)."""
    a, b = run_dir(run_a), run_dir(run_b)
    signature = (stamp(a.eval_file(stage_a, "predictions")), stamp(b.eval_file(stage_b, "predictions")))
    return _cached_gap(str(a.path), stage_a, str(b.path), stage_b, signature)


def stage_totals(tl: StageEval, ft: StageEval) -> dict:
    """What fine-tuning changed in the totals: {diagonal_tl, diagonal_ft, diagonal_gain, perfect_tl,
    perfect_ft} from the confusion matrices and per-class reports (None where a file is missing). Per image and
    per class, poc.analysis.compare.stage_change pairs the predictions (ui.compare_view.stage_change)."""
    out = {}
    for name, ev in (("tl", tl), ("ft", ft)):
        cm = ev.confusion
        out[f"diagonal_{name}"] = int(np.trace(cm.to_numpy())) if cm is not None else None
        share = (ev.metrics or {}).get("perfect_class_share")
        if share is None and ev.report is not None:
            rep = ev.report[ev.report["support"] > 0]
            share = float((rep["f1"] >= 1 - 1e-12).mean()) if len(rep) else None
        out[f"perfect_{name}"] = share
    if out["diagonal_tl"] is not None and out["diagonal_ft"] is not None:
        out["diagonal_gain"] = out["diagonal_ft"] - out["diagonal_tl"]
    else:
        out["diagonal_gain"] = None
    return out
