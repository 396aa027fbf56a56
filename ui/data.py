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
    load_explanation_layer(run_id, stage) -> str | None   the layer Grad-CAM read (explanations.npz `layer`)
    load_image(path, max_side=256) -> PIL.Image | None   an RGB thumbnail of a dataset image (None: missing)
    model_server() -> ModelServer                   the model-serving process (ui.live_predict_serving): builds
                                                    models, predicts, explains; one per dashboard process
    model_job(run_id, stage=None) -> Future         a run's model built there (started on first call for each
                                                    version of its weights): .done() = ready, .result() =
                                                    ServedModel or UserError when the run has no usable weights
    load_model(run_id, stage=None) -> ServedModel   model_job(...).result()
    model_key(run_id, stage=None) -> Key            (run directory, stage, weights stamp, run.json stamp)
    models_loading() -> bool                        whether a build is running now
    run_label(row_or_record) -> str                 "<model> · <name>" (just the name when it names the model)
    run_labels(ids=None) -> dict[str, str]          id -> label for every readable run (or just `ids`)
Derived views (pure functions of what the loaders return):
    accuracy_gap(run_a, stage_a, run_b, stage_b) -> dict | None
                                                    poc.analysis.leaderboard.accuracy_gap, cached: paired bootstrap
    stage_totals(tl, ft) -> dict                    diagonal gain and perfect-class shares (StageEval tl and
                                                    ft of one run); per image: ui.compare_view.stage_change
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from poc.runs import store
from poc.analysis import leaderboard
from poc.runs import run_info
from poc.runs import status as runstatus
from poc.runs.store import RunDir, RunRecord, StageEval
from ui.live_predict_serving import Key, ModelServer, ServedModel

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




def run_dir(run_id: str) -> RunDir:
    """The run's directory in the dashboard's runs folder."""
    return store.run_dir(runs_dir(), run_id)


# ---------------------------------------------------------------- runs and leaderboard

# The run index, process-wide: each run is read once per change of its files (store.run_stamps), so a rerun
# with 1,000 runs costs one stat pass; a run still in progress is re-judged on every call, since a killed
# training process changes no file.
_RECORDS: dict[str, tuple[tuple, RunRecord, dict]] = {}  # run directory -> (stamps, record, leaderboard row)
_BOARDS: dict[str, tuple] = {}  # runs folder -> (what it was built from, leaderboard, unique run labels)
_INDEX_LOCK = threading.Lock()


def _indexed(path: str, stamps: tuple) -> tuple[RunRecord, dict]:
    """The run's record and leaderboard row as of `stamps`, read again only when they changed."""
    known = _RECORDS.get(path)
    if known is None or known[0] != stamps:
        record = store.load_run(path)
        known = _RECORDS[path] = (stamps, record, leaderboard.row(record))
    return known[1], known[2]


def _live_row(record: RunRecord, row: dict) -> dict:
    """A run still marked active is judged again: liveness and progress move without a file change."""
    return leaderboard.row(record) if record.status in ACTIVE else row


def load_leaderboard() -> pd.DataFrame:
    """One row per run (poc.analysis.leaderboard.COLUMNS); an empty frame with those columns when there is no run.
    A copy: callers may add columns."""
    root = str(runs_dir())
    listing = store.run_stamps(root)
    with _INDEX_LOCK:
        rows = [_live_row(*_indexed(path, stamps)) for path, stamps in listing]
        listed = {path for path, _ in listing}
        for gone in [path for path in _RECORDS if path not in listed and os.path.dirname(path) == root]:
            del _RECORDS[gone]
        built_from = (tuple(listing), tuple((r["status"], r["progress"]) for r in rows if r["status"] in ACTIVE))
        known = _BOARDS.get(root)
        if known is None or known[0] != built_from:
            known = _BOARDS[root] = (built_from, leaderboard.frame(rows), _unique_labels(rows))
    return known[1].copy()


def unfinished_runs() -> list[str]:
    """Ids of the runs whose run.json is not completed or cancelled (the candidates for Resume), from the index's
    records: one stat pass, no leaderboard row rebuilt (the sidebar's job fragment asks every few seconds)."""
    listing = store.run_stamps(str(runs_dir()))
    with _INDEX_LOCK:
        records = [_indexed(path, stamps)[0] for path, stamps in listing]
    return [r.id for r in records if r.status not in ("completed", "cancelled")]


def indexed_runs(ids: list[str]) -> list[RunRecord]:
    """The RunRecords of `ids` as the index last read them (load_leaderboard), in that order; unknown ids are
    read now."""
    root = runs_dir()
    out = []
    for run_id in ids:
        path = str(store.run_dir(root, run_id).path)
        known = _RECORDS.get(path)
        out.append(known[1] if known is not None else store.load_run(path))
    return out


def _unique_labels(rows: list[dict]) -> dict[str, str]:
    """id -> run_label, the id appended where two runs share a label."""
    by_id = {r["id"]: run_label(r) for r in rows}
    seen: dict[str, int] = {}
    for label in by_id.values():
        seen[label] = seen.get(label, 0) + 1
    return {i: (f"{label} ({i})" if seen[label] > 1 else label) for i, label in by_id.items()}


def any_active(board: pd.DataFrame, ids=None) -> bool:
    rows = board if ids is None else board[board["id"].isin(list(ids))]
    return bool(rows["status"].isin(ACTIVE).any())


def have_weights(ids: list[str]) -> dict[str, bool]:
    """id -> whether the run has its final weights file (one existence check each, no read)."""
    root = runs_dir()
    return {i: os.path.exists(store.run_dir(root, i).weights) for i in ids}


def load_run(run_id: str) -> RunRecord | None:
    rd = run_dir(run_id)
    if not rd.path.is_dir():
        return None
    return _cached_run(str(rd.path), store.run_stamp(str(rd.path)))


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


@st.cache_data(show_spinner=False, max_entries=64)
def _cached_explanation_layer(path: str, stage: str, signature: Signature) -> str | None:
    return store.read_explanation_layer(RunDir(Path(path)), stage)


def load_explanation_layer(run_id: str, stage: str) -> str | None:
    """The backbone layer the stage's Grad-CAM maps were read from (None: rollout, or not recorded)."""
    rd = run_dir(run_id)
    return _cached_explanation_layer(str(rd.path), stage, (stamp(rd.eval_file(stage, "explanations")),))


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


@st.cache_resource(show_spinner=False, on_release=ModelServer.close)
def model_server() -> ModelServer:
    """The dashboard's one model-serving process (ui.live_predict_serving), started on first use: it builds the
    models and runs the live predictions, out of reach of the keras.backend.clear_session() that Streamlit
    calls after every script run."""
    return ModelServer()


def models_loading() -> bool:
    """Whether a model is being built now (a latency measured meanwhile shares the CPU with the build)."""
    return model_server().busy()


def model_key(run_id: str, stage: str | None = None) -> Key:
    """One version of a run's model: its directory, the stage (None: final weights) and the stamps of the
    weights file and run.json, so a retrained run is a new model."""
    rd = run_dir(run_id)
    weights = rd.stage_weights(stage) if stage else rd.weights
    return str(rd.path.resolve()), stage, stamp(weights), stamp(rd.run_json)


def model_job(run_id: str, stage: str | None = None) -> Future:
    """The build of a run's model (final or stage weights) in the serving process, started on the first call
    for each version; `.done()` says whether it is ready, `.result()` is a ServedModel or raises
    poc.errors.UserError (no usable weights). The final weights' model also has its compiled predict traced, so
    no displayed latency includes tracing."""
    return model_server().build(model_key(run_id, stage), warm=stage is None)


def load_model(run_id: str, stage: str | None = None) -> ServedModel:
    """model_job's ServedModel (class names, input size), waiting for the build when it is still running."""
    return model_job(run_id, stage).result()


# ---------------------------------------------------------------- labels

def run_label(row) -> str:
    """poc.runs.run_info.run_label ('<model> · <name>', the name defaulting to the id) of a leaderboard row
    (dict / Series) or a RunRecord."""
    if isinstance(row, RunRecord):
        return run_info.run_label(row.info, row.id)
    return run_info.run_label(row, row.get("id"))


def run_labels(ids: list[str] | None = None) -> dict[str, str]:
    """id -> label for readable runs (all, or those in `ids` in that order); unknown ids map to themselves."""
    known = _BOARDS.get(str(runs_dir()))  # the index as this rerun's load_leaderboard left it
    if known is None:
        load_leaderboard()
        known = _BOARDS[str(runs_dir())]
    by_id = known[2]
    if ids is None:
        return dict(by_id)
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
