"""One image through a finished run: the upload rules, the resize, one compiled predict function, top-k
and the explanation. `python -m poc predict` and the dashboard's Live predict and Attention maps pages all
come through here, so a file gets the same verdict and the same probabilities everywhere.

A run is rebuilt from run.json in code and given its saved weights (never unpickled). Its predict function
is one `tf.function` with a fixed input signature (N, S, S, 3) float32: traced once for all batch sizes,
compiled with XLA when a GPU is present (XLA slows MobileNetV2 down on a CPU). The eager Keras call
re-dispatches every op and `model.predict` builds a dataset per call: for one 224 px MobileNetV2 image on
a 2-core CPU, 153 ms eager and 99 ms model.predict vs 23 ms compiled (`benchmarks/predict.py`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from poc.runs import store
from poc.runs.store import RunDir
from poc.data.images import ImageRejected, Source, open_rgb, resize_pixels
from poc.errors import UserError

__all__ = ["ImageRejected", "LoadedRun", "MAX_UPLOAD_BYTES", "MAX_UPLOAD_PIXELS", "NO_EXPLANATION", "PREDICT_BATCH",
           "compile_predict", "explain", "layer_attention", "load_model", "model_family", "open_image",
           "predict_arrays", "predict_files", "resize_pixels", "top_k", "warm_up"]

MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # matches .streamlit/config.toml maxUploadSize = 20 (MB)
MAX_UPLOAD_PIXELS = 80_000_000  # checked from the header, before any pixel is decoded
PREDICT_BATCH = 64  # images decoded and predicted at a time: thousands of files fit in memory
NO_EXPLANATION = {
    "hub": "no explanation for TF-Hub models: the SavedModel exposes neither attention weights nor a "
           "convolutional feature map to take Grad-CAM from",
}


@dataclass
class LoadedRun:
    rd: RunDir
    info: dict
    model: object
    spec: object
    image_size: int
    class_names: list[str]
    predict: Callable = None  # compiled: float32 pixels (N, S, S, 3) -> probabilities (N, C) tensor
    warm: bool = field(default=False, repr=False)  # whether `predict` has been traced


def compile_predict(model, image_size: int) -> Callable:
    """The model's inference call as one tf.function over (None, S, S, 3) float32 pixels, XLA on a GPU."""
    import tensorflow as tf

    from poc.device import has_gpu

    @tf.function(input_signature=[tf.TensorSpec((None, image_size, image_size, 3), tf.float32)],
                 jit_compile=has_gpu())
    def predict(pixels):
        return tf.cast(model(pixels, training=False), tf.float32)  # (N, C); float16 under mixed precision

    return predict


def compile_logits(model, image_size: int) -> Callable:
    """The classifier's pre-softmax outputs (N, C) float32, as one tf.function like compile_predict: the
    features entering the `head` layer times its kernel plus its bias. Evaluation keeps these (logits.npz), so a
    temperature is fitted on margins that probabilities near 0 and 1 have lost."""
    import keras
    import tensorflow as tf

    from poc.device import has_gpu

    head = model.get_layer("head")
    features = keras.Model(model.inputs, head.input)  # (N, D): the dropout is the identity at inference

    @tf.function(input_signature=[tf.TensorSpec((None, image_size, image_size, 3), tf.float32)],
                 jit_compile=has_gpu())
    def logits(pixels):
        x = tf.cast(features(pixels, training=False), tf.float32)  # (N, D)
        return tf.matmul(x, tf.cast(head.kernel, tf.float32)) + tf.cast(head.bias, tf.float32)  # (N, C)

    return logits


def load_model(rd: RunDir, stage: str | None = None) -> LoadedRun:
    """The run's classifier with its final weights, or a stage's (`tl` / `ft`) when given."""
    from poc.models import get_spec
    from poc.runs.run_info import rebuild_model, recorded_image_size

    info = store.read_json(rd.run_json)
    if not info or "class_names" not in info:
        raise UserError(f"run {rd.id}: run.json missing, unreadable or incomplete")
    weights = rd.stage_weights(stage) if stage else rd.weights
    if not weights.exists():
        raise UserError(f"run {rd.id} has no saved weights{' for stage ' + stage if stage else ''} "
                        f"(status {info.get('status')!r})")
    size = recorded_image_size(info)
    if size is None:
        raise UserError(f"run {rd.id}: run.json does not say which image size the run trained at")
    try:
        _open_hdf5(weights)  # a truncated or non-HDF5 file is named before seconds go into building the model
    except OSError as exc:
        raise _weights_refused(rd, weights, info, size, exc) from None
    model = rebuild_model(info)
    try:
        model.load_weights(weights)
    except (OSError, ValueError) as exc:  # h5py: unreadable datasets; Keras: layers or shapes that differ
        raise _weights_refused(rd, weights, info, size, exc) from None
    return LoadedRun(rd, info, model, get_spec(info["model"]), size, list(info["class_names"]),
                     compile_predict(model, size))


def _weights_refused(rd: RunDir, weights: Path, info: dict, size: int, exc: Exception) -> UserError:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return UserError(f"run {rd.id}: {weights.name} does not fit the model its run.json describes "
                     f"({info['model']}, {len(info['class_names'])} classes, {size} px) or is damaged "
                     f"({reason}); train the run again or delete it")


def _open_hdf5(path: Path) -> None:
    """OSError unless `path` opens as an HDF5 file: HDF5 checks the signature and the end of file its superblock
    records, so a truncated or non-HDF5 file fails here, in milliseconds."""
    import h5py

    with h5py.File(path, "r"):
        pass


def warm_up(run: LoadedRun) -> None:
    """Trace the compiled call once (on one blank image), so no timed call pays for tracing."""
    if not run.warm:
        run.predict(np.zeros((1, run.image_size, run.image_size, 3), np.float32))
        run.warm = True


def predict_arrays(run: LoadedRun, pixels: np.ndarray, batch_size: int = PREDICT_BATCH) -> tuple[np.ndarray, float]:
    """(probabilities (N, C), seconds per image) for raw pixels (N, S, S, 3), `batch_size` images per call.

    The seconds are those of the compiled calls alone; the first call of a run also traces (see warm_up)."""
    pixels = np.asarray(pixels, np.float32)
    probs, seconds = [], 0.0
    for start in range(0, len(pixels), batch_size):
        begin = time.perf_counter()
        probs.append(np.asarray(run.predict(pixels[start:start + batch_size])))  # (b, C)
        seconds += time.perf_counter() - begin
    if not probs:
        return np.zeros((0, len(run.class_names)), np.float32), 0.0
    run.warm = True
    return np.concatenate(probs), seconds / len(pixels)


def top_k(probs: np.ndarray, class_names: list[str], k: int = 5) -> list[list[tuple[str, float]]]:
    """The k most probable classes of each row, probabilities clipped to [0, 1] (a float32 softmax can return
    1.0000001, which would print as a confidence above 100%)."""
    probs = np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)
    order = np.argsort(-probs, axis=1)[:, :k]
    return [[(class_names[i], float(row[i])) for i in idx] for row, idx in zip(probs, order)]


# ---------------------------------------------------------------- the upload rules

def open_image(source: Source, max_bytes: int | None = MAX_UPLOAD_BYTES,
               max_pixels: int = MAX_UPLOAD_PIXELS):
    """A user's file as an upright 8-bit RGB PIL image, or ImageRejected with the reason.

    Refused: files over `max_bytes` (None: no limit; checked before reading a path), non-image and empty
    files, truncated or corrupt images, images over `max_pixels` or with a side under 8 px (read from the
    header, before decoding: a decompression bomb is never expanded). Converted: 16-bit to 8-bit, CMYK and
    palette to RGB, transparency onto white; an animation gives its first frame (poc.data.images.open_rgb).
    """
    if max_bytes is not None:
        source = _within_bytes(source, max_bytes)
    return open_rgb(source, max_pixels=max_pixels)


def _within_bytes(source: Source, max_bytes: int) -> Source:
    """`source` unchanged (a stream read into bytes) when it holds at most `max_bytes`; else ImageRejected."""
    if isinstance(source, (str, Path)):
        try:
            size = Path(source).stat().st_size
        except OSError:
            return source  # open_rgb names the missing file
    elif isinstance(source, (bytes, bytearray, memoryview)):
        size = len(source)
    else:
        source = source.read(max_bytes + 1)  # a stream: never more than the limit and one byte
        if len(source) > max_bytes:
            raise ImageRejected(f"too large (over the {_amount(max_bytes, '%g')} limit)")
        return source
    if size > max_bytes:
        raise ImageRejected(f"too large ({_amount(size)}; limit {_amount(max_bytes, '%g')})")
    return source


def _amount(n: int, style: str = "%.1f") -> str:
    """Bytes as people read them: "20.3 MB", "512 KB", "80 bytes"."""
    for unit, scale in (("MB", 2**20), ("KB", 2**10)):
        if n >= scale:
            return f"{style % (n / scale)} {unit}"
    return f"{n} bytes"


# ---------------------------------------------------------------- files through a run

def predict_files(run: LoadedRun, paths: Iterable, batch_size: int = PREDICT_BATCH, k: int = 5,
                  max_bytes: int | None = MAX_UPLOAD_BYTES, explain_maps: bool = False) -> list[dict]:
    """One dict per path, in input order: {"image", "top_k": [{"class", "probability"}]} or {"image",
    "error": reason} for a file the upload rules refuse. Decodes and predicts `batch_size` files at a time.
    With `explain_maps`, each prediction also has "explanation": {"method", "layer" (the backbone layer Grad-CAM
    read; None for rollout), "grid" [h, w], "map" (h rows of w values in [0, 1])}, or {"note": why there is none}."""
    paths = [str(p) for p in paths]
    results: list[dict] = []
    for start in range(0, len(paths), batch_size):
        chunk = [_result_or_pixels(p, run.image_size, max_bytes) for p in paths[start:start + batch_size]]
        kept = [r for r in chunk if "pixels" in r]
        if kept:
            pixels = np.stack([r.pop("pixels") for r in kept])  # (B, S, S, 3)
            probs, _ = predict_arrays(run, pixels, batch_size)
            for r, ranked in zip(kept, top_k(probs, run.class_names, k)):
                r["top_k"] = [{"class": c, "probability": p} for c, p in ranked]
            if explain_maps:
                for r, explanation in zip(kept, _explanations(run, pixels)):
                    r["explanation"] = explanation
        results.extend(chunk)
    return results


def _explanations(run: LoadedRun, pixels: np.ndarray) -> list[dict]:
    maps, method, note, layer = explain(run, pixels)
    if maps is None:
        return [{"note": note}] * len(pixels)
    return [{"method": method, "layer": layer, "grid": list(m.shape), "map": np.round(m, 4).tolist()} for m in maps]


def _result_or_pixels(path: str, size: int, max_bytes: int | None) -> dict:
    try:
        return {"image": path, "pixels": resize_pixels(open_image(path, max_bytes=max_bytes), size)}
    except ImageRejected as exc:
        return {"image": path, "error": exc.reason}
    except OSError as exc:  # unreadable file (permissions, a folder): one bad file, not a failed command
        return {"image": path, "error": exc.strerror or str(exc)}


# ---------------------------------------------------------------- explanations

def model_family(model_name: str) -> str:
    """"cnn" | "vit" | "hub" for a model name, "unknown" when the registry does not know it."""
    from poc.models.registry import get_spec

    try:
        return get_spec(str(model_name)).family
    except Exception:  # noqa: BLE001 - an unknown model name is shown as such, not raised
        return "unknown"


def explain(run: LoadedRun, pixels: np.ndarray) -> tuple[np.ndarray | None, str | None, str | None, str | None]:
    """(maps (N, h, w) in [0, 1], method, None, layer) for raw pixels (N, S, S, 3): attention rollout for a ViT
    (layer None), Grad-CAM for a CNN (layer: the backbone layer it read, poc.explain.gradcam.gradcam_layer);
    (None, None, why, None) when the family has no method (TF-Hub)."""
    from poc.explain.maps import explain_images

    if run.spec.explanation == "none":
        return None, None, NO_EXPLANATION.get(run.spec.family, f"no explanation method for {run.spec.name}"), None
    explained = explain_images(run.model, run.spec, np.asarray(pixels, np.float32))
    if explained is None:
        return None, None, f"no explanation method for {run.spec.name}", None
    return explained.maps, explained.method, None, explained.layer


def layer_attention(run: LoadedRun, pixels: np.ndarray) -> np.ndarray:
    """(N, L, H, g, g) raw class-token attention of every encoder block and head of a ViT run."""
    from poc.explain.attention import per_layer_maps

    return per_layer_maps(run.model, np.asarray(pixels, np.float32))

