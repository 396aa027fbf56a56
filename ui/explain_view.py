"""Live predictions and explanations for the Live-predict and Attention-maps pages, through poc.inference.

Models live in the dashboard's model-serving process (`ui.data.model_job` / `model_server`, keyed on the run
path and the stamps of its weights file and run.json; `loading_models` asks without waiting), which runs the
compiled predict call and the explanations; the results are @st.cache_data keyed on the run, the weights
file's stamp and the image's bytes, so moving a slider does not recompute them. `read_uploads` is pure (no
Streamlit calls) and unit-tested on its own: AppTest cannot upload files. The upload rules, the resize, top-k
and the explanations are poc.inference's, shared with `python -m poc predict`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from poc import inference
from poc.inference import MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS, NO_EXPLANATION, ImageRejected
from ui import data

METHOD_LABELS = {"attention_rollout": "attention rollout", "gradcam": "Grad-CAM"}


def method_caption(method: str | None, layer: str | None, shape: tuple | None = None) -> str:
    """"Grad-CAM on block_12_add (4×4 map)", "attention rollout (8×8 map)": the method, the backbone layer it
    read when recorded (Grad-CAM), and the map's native grid."""
    text = METHOD_LABELS.get(method, method or "explanation") + (f" on {layer}" if layer else "")
    return text + (f" ({shape[0]}×{shape[1]} map)" if shape is not None and len(shape) == 2 else "")


# ---------------------------------------------------------------- uploads (pure)

@dataclass
class Upload:
    name: str
    image: Image.Image  # RGB, upright, 8 bits per channel
    digest: str  # sha256 of the file's bytes: the cache key of its predictions


def _name_and_bytes(item) -> tuple[str, bytes]:
    """An st.file_uploader / st.camera_input UploadedFile, or a (name, bytes) pair."""
    if isinstance(item, tuple):
        name, payload = item
    else:
        name = getattr(item, "name", None) or "camera image"
        payload = item.getvalue() if hasattr(item, "getvalue") else item.read()
    return str(name), bytes(payload)


def read_uploads(files, max_bytes: int = MAX_UPLOAD_BYTES,
                 max_pixels: int = MAX_UPLOAD_PIXELS) -> tuple[list[Upload], list[tuple[str, str]]]:
    """(decoded images, [(file name, reason)] for the files that are not usable images), in upload order.

    One bad file never stops the others: each goes through poc.inference.open_image (the upload rules: size,
    corrupt, truncated, non-image, bomb; 16-bit, CMYK and animations converted) and is rejected with its reason.
    """
    images, errors = [], []
    for item in files or []:
        try:
            name, payload = _name_and_bytes(item)
        except Exception as exc:  # noqa: BLE001 - an unreadable upload object is one bad file, not a crash
            errors.append((str(getattr(item, "name", "upload")), f"could not be read ({exc})"))
            continue
        try:
            image = inference.open_image(payload, max_bytes=max_bytes, max_pixels=max_pixels)
        except ImageRejected as exc:
            errors.append((name, exc.reason))
            continue
        images.append(Upload(name, image, hashlib.sha256(payload).hexdigest()))
    return images, errors


# ---------------------------------------------------------------- runs

def run_family(row) -> str:
    """"cnn" | "vit" | "hub" | "unknown" from a leaderboard row (run.json's family, else the model name)."""
    family = row.get("family")
    if isinstance(family, str) and family:
        return family
    return inference.model_family(str(row.get("model")))


def completed_board() -> pd.DataFrame:
    """Leaderboard rows of completed runs, newest first, with a `fam` column (see run_family)."""
    board = data.load_leaderboard()
    if board.empty:
        return board.assign(fam=pd.Series(dtype=str))
    done = board[board["status"] == "completed"].copy()
    done["fam"] = [run_family(r) for r in done.to_dict("records")]
    return done


def weights_stamp(run_id: str, stage: str | None = None) -> tuple[str, int, int] | None:
    """ui.data.stamp of the run's final (or stage) weights; None when the file is missing."""
    rd = data.run_dir(run_id)
    signature = data.stamp(rd.stage_weights(stage) if stage else rd.weights)
    return None if signature[1] < 0 else signature


def loading_models(run_ids: list[str]) -> dict:
    """{run id: its background build} for the runs with weights whose model is not built and warmed up yet
    (asking starts the builds that have not started)."""
    jobs = {r: data.model_job(r) for r in run_ids if weights_stamp(r) is not None}
    return {r: job for r, job in jobs.items() if not job.done()}


# ---------------------------------------------------------------- live prediction + explanation

@dataclass
class LivePrediction:
    top: list[tuple[str, float]]  # (class, probability), best first
    latency_ms: float  # one image: one compiled call, after the loaded model's one warm-up
    heatmap: np.ndarray | None = None  # (h, w) in [0, 1]
    method: str | None = None
    note: str | None = None  # why there is no heatmap
    layer: str | None = None  # the backbone layer Grad-CAM read (None for attention rollout)
    class_names: list[str] = field(default_factory=list)
    input_size: int = 0  # px, the run's square input
    contended: bool = False  # the latency was measured while another model was being built


def predict_live(run_id: str, image: Image.Image, digest: str, k: int = 5) -> LivePrediction:
    """Top-k, latency and explanation of one image by a run's final weights.

    Raises poc.errors.UserError when the run has no usable weights (the page shows the message)."""
    # A latency measured while another model builds shares the CPU with it: such a result is marked, and
    # measured again (a new cache entry) once the builds are done.
    return _cached_predict(str(data.runs_dir()), run_id, weights_stamp(run_id), digest, k, data.models_loading(),
                           _image=image)


@st.cache_data(show_spinner=False, max_entries=256)
def _cached_predict(root: str, run_id: str, stamp, digest: str, k: int, contended: bool,
                    _image: Image.Image) -> LivePrediction:
    model = data.model_job(run_id).result()  # built, compiled predict traced: no tracing in the latency
    pixels = inference.resize_pixels(_image, model.image_size)[None]  # (1, S, S, 3): the training resize
    served = data.model_server().predict(model, pixels)
    top = inference.top_k(served.probs, model.class_names, k=min(k, len(model.class_names)))[0]
    return LivePrediction(top, served.seconds * 1000.0, heatmap=None if served.maps is None else served.maps[0],
                          method=served.method, note=served.note, layer=served.layer,
                          class_names=model.class_names,
                          input_size=model.image_size, contended=contended or served.contended)


# ---------------------------------------------------------------- per-layer attention of one image

def _layer_stage(run_id: str, stage: str | None) -> str | None:
    """The weights per-layer attention uses: the stage's, else (None) the run's final weights."""
    return stage if stage and weights_stamp(run_id, stage) else None


def per_layer_model_ready(run_id: str, stage: str | None) -> bool:
    """Whether the model per_layer_attention needs is built in the serving process (asking starts its build), so
    that a page can show itself first and the per-layer maps when the model is ready, never waiting for it."""
    return data.model_job(run_id, _layer_stage(run_id, stage)).done()


def per_layer_attention(run_id: str, stage: str | None, image_path: str) -> np.ndarray:
    """(L, H, g, g) class-token attention per layer and head of one image, computed live with the stage's
    weights (final weights when the stage has none). Raises UserError / ImageRejected with a message."""
    use_stage = _layer_stage(run_id, stage)
    try:
        image_stamp = os.stat(image_path).st_mtime_ns
    except OSError:
        raise ImageRejected(f"test image {image_path} is missing") from None
    return _cached_per_layer(str(data.runs_dir()), run_id, use_stage, weights_stamp(run_id, use_stage),
                             str(image_path), image_stamp)


@st.cache_data(show_spinner=False, max_entries=32)
def _cached_per_layer(root: str, run_id: str, stage, stamp, image_path: str, image_stamp: int) -> np.ndarray:
    model = data.load_model(run_id, stage)
    image = inference.open_image(image_path, max_bytes=None)  # a dataset image: no upload size limit
    pixels = inference.resize_pixels(image, model.image_size)[None]  # (1, S, S, 3)
    return data.model_server().layer_attention(model, pixels)[0]  # (L, H, g, g)


# ---------------------------------------------------------------- stored explanations

@dataclass
class StoredMaps:
    """A stage's predictions joined with its stored explanation maps (rows aligned), or why not."""

    predictions: pd.DataFrame | None = None  # predictions.csv, with a `row` column (index into maps)
    maps: np.ndarray | None = None  # (N, h, w)
    method: str | None = None
    problem: str | None = None  # what is missing and why; set when maps or predictions are None
    layer: str | None = None  # the backbone layer Grad-CAM read, when explanations.npz records it


def stored_maps(run_id: str, stage: str, family: str) -> StoredMaps:
    """predictions.csv + explanations.npz of a stage; `problem` explains a missing or mismatched part."""
    if family == "hub":
        return StoredMaps(problem=NO_EXPLANATION["hub"].capitalize() + ".")
    ev = data.load_stage(run_id, stage)
    if ev.predictions is None:
        return StoredMaps(problem=f"eval/{stage}/predictions.csv is missing or unreadable, so its maps cannot "
                                  f"be matched to test images. Recompute with `python -m poc evaluate {run_id}`.")
    preds = ev.predictions.reset_index(drop=True).assign(row=lambda d: np.arange(len(d)))
    loaded = data.load_explanations(run_id, stage)
    if loaded is None:
        return StoredMaps(predictions=preds,
                          problem=f"eval/{stage}/explanations.npz is missing or unreadable (the run was evaluated "
                                  f"without explanations, or the file is damaged). Recompute it with "
                                  f"`python -m poc evaluate {run_id}`.")
    maps, method = loaded
    if maps.ndim != 3 or len(maps) != len(preds):
        return StoredMaps(predictions=preds, method=method,
                          problem=f"eval/{stage}/explanations.npz holds {len(maps)} maps of shape "
                                  f"{tuple(maps.shape[1:])} but predictions.csv has {len(preds)} rows; the "
                                  f"files are from different evaluations. Recompute with "
                                  f"`python -m poc evaluate {run_id}`.")
    return StoredMaps(preds, maps, method, layer=data.load_explanation_layer(run_id, stage))


def filter_rows(preds: pd.DataFrame, label: str | None, outcome: str) -> pd.DataFrame:
    """Rows of one true class (None: all) and outcome "all" | "correct" | "incorrect"."""
    rows = preds if label is None else preds[preds["label"].astype(str) == label]
    if outcome == "correct":
        rows = rows[rows["label"].astype(str) == rows["pred"].astype(str)]
    elif outcome == "incorrect":
        rows = rows[rows["label"].astype(str) != rows["pred"].astype(str)]
    return rows


def mean_map(maps: np.ndarray, rows) -> np.ndarray | None:
    """Average (h, w) of the selected maps, None when no row is selected."""
    rows = np.asarray(list(rows), dtype=int)
    return maps[rows].mean(axis=0) if len(rows) else None


def short_name(path) -> str:
    """`<class folder>/<file>` of a dataset path, for captions."""
    p = Path(str(path))
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name
