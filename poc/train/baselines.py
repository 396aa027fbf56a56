"""Baselines every comparison needs: a logistic regression on raw pixels and a linear probe on frozen features.

A new user's first question is whether deep transfer learning beats something simple on the same split. Each
baseline is a run directory of its own (family "baseline", one stage `tl`, no network weights), so the
leaderboard, the verdict and paired comparisons treat it like any run. The regularisation strength C is chosen
on the validation split only; the test split is evaluated once, after the choice.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from poc.runs import store
from poc.runs.run_info import recorded_split
from poc.runs.store import RunDir
from poc.errors import UserError

log = logging.getLogger("poc.train.baselines")

C_GRID = (0.01, 0.1, 1.0, 10.0)  # inverse regularisation strengths tried on the validation split
MAX_ITER = 3000  # lbfgs iterations; standardised inputs converge well within this on small sets
PIXELS_MODEL = "baseline_pixels"
PROBE_PREFIX = "baseline_probe:"
FEATURE_BATCH = 32
SINGLE_THREAD_BELOW = 20_000_000  # training-set values (images x inputs) under which the fit uses one thread
Progress = Callable[[int, int], None]


# ---------------------------------------------------------------- command line

def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `baseline` subcommand's flags (dest names match `run_baselines`' keywords, plus `json`)."""
    p.add_argument("--data", default=None, help="dataset folder (not needed with --from-run)")
    p.add_argument("--from-run", default=None, metavar="RUN",
                   help="reuse this run's split and probe its phase-1 backbone (id, prefix or path)")
    p.add_argument("--model", default=None, help="backbone for the linear probe (without --from-run); "
                                                  "without it only the pixel baseline runs")
    p.add_argument("--weights", default="imagenet", help="the probe backbone's weights: imagenet, demo, none, PATH")
    p.add_argument("--image-size", type=int, default=None, help="the probe backbone's input size (px)")
    p.add_argument("--pixels-size", type=int, default=32, help="side of the downscaled image the pixel "
                                                                "baseline reads (default 32)")
    p.add_argument("--val", type=float, default=0.1)
    p.add_argument("--test", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs-dir", type=Path, default=None)
    p.add_argument("--json", action="store_true")


# ---------------------------------------------------------------- where the split and the backbone come from

@dataclass
class Source:
    """The split every baseline uses, resolved before anything is written."""

    split: pd.DataFrame
    class_names: list[str]
    data_path: str
    seed: int
    run: RunDir | None = None  # --from-run
    info: dict = field(default_factory=dict)  # its run.json

    @property
    def carved(self) -> dict:
        """Splits carved from train/ because their folder was missing (as the source run recorded it)."""
        recorded = (self.info.get("dataset") or {}).get("carved")
        return dict(self.split.attrs.get("carved") or (recorded if isinstance(recorded, dict) else {}))

    def frame(self, split: str) -> pd.DataFrame:
        return self.split[self.split["split"] == split].reset_index(drop=True)

    def labels(self, frame: pd.DataFrame) -> np.ndarray:
        index = {name: i for i, name in enumerate(self.class_names)}
        return np.array([index[label] for label in frame["label"]], dtype=np.int64)  # (N,)


@dataclass
class Backbone:
    name: str  # registry name, e.g. mobilenet_v2
    classifier: object  # keras.Model from poc.models.build, its backbone holding the probed weights
    image_size: int
    weights: str  # what run.json records: the --weights value, or run:<id>
    pretraining: str


def resolve_source(data: str | Path | None, from_run: str | None, val: float, test: float, seed: int,
                   runs_dir: Path) -> Source:
    """`from_run`'s split.csv, else `data` scanned and split exactly as `poc.train.training.prepare` does (same data,
    fractions and seed: same split fingerprint as a `train` run)."""
    if from_run:
        return _source_from_run(from_run, runs_dir, data)
    if not data:
        raise UserError("baseline needs --data DATA (a dataset folder), or --from-run RUN to reuse a run's split")
    from poc.data.split import scan_and_split

    split = scan_and_split(data, val=val, test=test, seed=seed)
    return Source(split, split.attrs["class_names"], str(Path(data).resolve()), seed)


def _keep_attrs(frame: pd.DataFrame, attrs: dict) -> pd.DataFrame:
    frame.attrs = dict(attrs)
    return frame


def _source_from_run(ref: str, runs_dir: Path, data) -> Source:
    rd = store.find_run(ref, runs_dir)
    info = store.read_json(rd.run_json) if rd else None
    if not info:
        raise UserError(f"--from-run {ref}: no such run in {runs_dir}; see python -m poc runs")
    if info.get("family") == "baseline":
        raise UserError(f"--from-run {rd.id} is itself a baseline; name a trained CNN or ViT run")
    split, names = recorded_split(rd, info), info.get("class_names")
    if split is None or not isinstance(names, list) or not names:
        raise UserError(f"--from-run {rd.id}: split.csv or class names missing (status {info.get('status')!r}); "
                        "pick a run that got past its start, or use --data")
    split = split.astype({c: str for c in store.SPLIT_COLUMNS}).pipe(_keep_attrs, split.attrs)  # "1" stays text
    names = [str(n) for n in names]
    unknown = sorted(set(split["label"]) - set(names))
    if unknown:
        raise UserError(f"--from-run {rd.id}: split.csv has labels {unknown} missing from its class names")
    missing = [p for p in split["path"] if not Path(p).is_file()]
    if missing:
        raise UserError(f"--from-run {rd.id}: {len(missing)} image(s) of its split are gone (first: {missing[0]}); "
                        "the dataset moved? run python -m poc baseline --data DATA for a fresh split")
    path = str((info.get("dataset") or {}).get("path") or "")
    if data and Path(data).resolve() != Path(path).resolve():
        log.warning("--data %s is ignored: --from-run %s brings its own split of %s", data, rd.id, path)
    return Source(split, names, path, int(info.get("seed", 0) or 0), rd, info)


def resolve_backbone(source: Source, model: str | None, weights: str, image_size: int | None,
                     runs_dir: Path) -> Backbone | None:
    """The probe's frozen backbone: the --from-run run's own, with its phase-1 weights (the backbone is frozen
    in phase 1, so those are its starting weights); else --model/--weights; None when neither is given."""
    from poc.models import build, pretraining_kind
    from poc.runs.run_info import rebuild_model, recorded_image_size

    if source.run is None:
        if not model:
            return None
        import keras

        keras.utils.set_random_seed(source.seed)  # a random backbone (--weights none) is the same every time
        classifier = build(model, len(source.class_names), image_size, weights)
        return Backbone(model, classifier, int(classifier.input_shape[1]), weights, pretraining_kind(weights))
    info = source.info
    if model and model != info.get("model"):
        log.warning("--model %s is ignored: --from-run %s probes its own %s", model, source.run.id, info.get("model"))
    weights_file = phase1_weights(source.run, info, runs_dir)
    size = recorded_image_size(info)
    if not isinstance(info.get("model"), str) or size is None:
        raise UserError(f"--from-run {source.run.id}: run.json does not say which model and image size it "
                        "trained; use --data with --model/--weights/--image-size instead")
    classifier = rebuild_model(info)
    try:
        classifier.load_weights(weights_file)
    except (ValueError, OSError) as exc:
        raise UserError(f"--from-run {source.run.id}: its phase-1 weights do not load into {info['model']} "
                        f"({exc}); the file is damaged or from another model") from None
    kind = info.get("pretraining") or pretraining_kind(str(info.get("weights", "none")))
    return Backbone(info["model"], classifier, size, f"run:{source.run.id}", kind)


def phase1_weights(rd: RunDir, info: dict, runs_dir: Path) -> Path:
    """The run's phase-1 weights file; a run that fine-tuned `--from-run` another one has its source's."""
    seen = set()
    while not rd.stage_weights("tl").exists():
        seen.add(rd.id)
        source = store.find_run(str(info.get("from_run") or ""), runs_dir) if info.get("from_run") else None
        if source is None or source.id in seen:
            raise UserError(f"--from-run {rd.id} has no phase-1 weights (status {info.get('status')!r}); pick a "
                            "run that finished transfer learning, or use --model/--weights")
        rd, info = source, store.read_json(source.run_json) or {}
    return rd.stage_weights("tl")


# ---------------------------------------------------------------- the model: C chosen on validation

@dataclass
class Choice:
    """A standardised multinomial logistic regression, C chosen on the validation split."""

    model: object  # sklearn Pipeline(StandardScaler, LogisticRegression), fitted on train
    C: float
    val_accuracy: float
    val_loss: float
    grid: list[dict]  # per C tried: C, val_accuracy, val_loss, iterations, converged


def choose_logistic(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                    num_classes: int, grid=C_GRID) -> Choice:
    """Fit one model per C on train; keep the best on validation (highest accuracy, then lower loss, then the
    smaller C). The test split is not an argument: it cannot take part in the choice."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    from poc.analysis import evaluation  # scipy: kept out of the CLI's parser, which imports this module

    fitted, rows = {}, []
    # Small fits run far faster on one BLAS thread: on a busy 2-core machine, two spinning threads made a
    # 96 x 3072 fit 40x slower. Large ones keep every core.
    threads = 1 if x_train.size < SINGLE_THREAD_BELOW else None
    for c in grid:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, solver="lbfgs", max_iter=MAX_ITER))
        with warnings.catch_warnings(), threadpool_limits(threads):
            warnings.simplefilter("ignore", ConvergenceWarning)  # recorded per C below instead
            model.fit(x_train, y_train)
        loss, accuracy = evaluation.loss_and_accuracy(class_probabilities(model, x_val, num_classes), y_val)
        iterations = int(np.max(model[-1].n_iter_))
        fitted[c] = model
        rows.append({"C": float(c), "val_accuracy": accuracy, "val_loss": loss, "iterations": iterations,
                     "converged": iterations < MAX_ITER})
    best = min(rows, key=lambda r: (-r["val_accuracy"], r["val_loss"], r["C"]))
    if not best["converged"]:
        log.warning("logistic regression with C=%g stopped at %d iterations before converging", best["C"], MAX_ITER)
    return Choice(fitted[best["C"]], best["C"], best["val_accuracy"], best["val_loss"], rows)


def class_probabilities(model, x: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, num_classes) probabilities, a column per class index even if a class was absent from training."""
    probs = np.zeros((len(x), num_classes))
    probs[:, model.classes_] = model.predict_proba(x)
    return probs


ABSENT_MARGIN = 50.0  # a class absent from training: this far below the row's lowest logit (probability ~e-50)


def class_logits(model, x: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, num_classes) pre-softmax outputs whose softmax is predict_proba: the decision function per class (two
    classes: [0, d], as sklearn's binary probabilities are [1 - sigmoid(d), sigmoid(d)]); a class absent from
    training sits ABSENT_MARGIN below the row's lowest logit."""
    decision = np.asarray(model.decision_function(x), dtype=float)
    if decision.ndim == 1:
        decision = np.stack([np.zeros_like(decision), decision], axis=1)
    logits = np.empty((len(x), num_classes))
    logits[:] = (decision.min(axis=1, keepdims=True) - ABSENT_MARGIN) if len(x) else 0.0
    logits[:, model.classes_] = decision
    return logits


# ---------------------------------------------------------------- inputs: pixels and frozen features

def pixel_inputs(frame: pd.DataFrame, size: int, progress: Progress | None = None) -> np.ndarray:
    """(N, size*size*3) pixels in [0, 1]: each image downscaled to size x size RGB and flattened."""
    from poc.data.images import ImageRejected, load_array

    out = np.empty((len(frame), size * size * 3), dtype=np.float32)
    for i, path in enumerate(frame["path"]):
        try:
            out[i] = load_array(path, size).reshape(-1) / 255.0
        except (ImageRejected, OSError) as exc:
            raise UserError(f"image {path} cannot be read ({getattr(exc, 'reason', exc)}); re-scan the dataset "
                            "(python -m poc scan DATA)") from None
        if progress:
            progress(i + 1, len(frame))
    return out


def feature_inputs(extractor, frame: pd.DataFrame, class_names: list[str], image_size: int,
                   progress: Progress | None = None) -> np.ndarray:
    """(N, D) pooled features of a frozen backbone (`poc.train.features.feature_extractor`), in the frame's order."""
    from poc.data.pipeline import make_dataset
    from poc.train.features import extract_features

    dataset = make_dataset(frame, class_names, image_size, FEATURE_BATCH)
    return extract_features(extractor, dataset, len(frame), progress=progress)


# ---------------------------------------------------------------- the runs

@dataclass
class Result:
    model: str
    name: str
    image_size: int
    weights: str
    pretraining: str
    choice: Choice
    logits: dict  # "val", "test": (N, C) pre-softmax outputs of the chosen model
    seconds: float
    extra: dict  # baseline-specific facts for run.json's `baseline`
    size_bytes: int


def run_baselines(data: str | Path | None = None, from_run: str | None = None, model: str | None = None,
                  weights: str = "imagenet", image_size: int | None = None, pixels_size: int = 32,
                  val: float = 0.1, test: float = 0.1, seed: int = 0, runs_dir: Path | str | None = None,
                  progress: Progress | None = None) -> list[RunDir]:
    """The pixel baseline, plus the linear probe when a backbone is named (--from-run or --model), each written
    as a completed run directory; returns them. Every UserError is raised before anything is written."""
    runs_dir = Path(runs_dir) if runs_dir else store.default_runs_dir()
    if not 4 <= pixels_size <= 128:
        raise UserError(f"--pixels-size {pixels_size} is out of range; use 4 to 128 (default 32)")
    source = resolve_source(data, from_run, val, test, seed, runs_dir)
    backbone = resolve_backbone(source, model, weights, image_size, runs_dir)
    config = {"data": source.data_path, "from_run": source.run.id if source.run else None,
              "model": backbone.name if backbone else None, "weights": backbone.weights if backbone else None,
              "image_size": backbone.image_size if backbone else None, "pixels_size": pixels_size, "val": val,
              "test": test, "seed": source.seed, "C_grid": list(C_GRID), "max_iter": MAX_ITER}
    results = [_pixel_baseline(source, pixels_size, progress)]
    if backbone is not None:
        results.append(_probe_baseline(source, backbone, progress))
    return [write_run(runs_dir, source, result, config) for result in results]


def _fit(source: Source, inputs: dict[str, np.ndarray]) -> tuple[Choice, dict]:
    y = {s: source.labels(source.frame(s)) for s in ("train", "val")}
    choice = choose_logistic(inputs["train"], y["train"], inputs["val"], y["val"], len(source.class_names))
    return choice, {s: class_logits(choice.model, inputs[s], len(source.class_names)) for s in ("val", "test")}


def _pixel_baseline(source: Source, size: int, progress: Progress | None) -> Result:
    start = time.monotonic()
    inputs = {s: pixel_inputs(source.frame(s), size, progress) for s in ("train", "val", "test")}
    choice, logits = _fit(source, inputs)
    head = choice.model[-1]
    return Result(PIXELS_MODEL, f"pixel logistic regression ({size} px)", size, "none", "none", choice, logits,
                  time.monotonic() - start, {"pixels_size": size, "inputs": size * size * 3},
                  head.coef_.nbytes + head.intercept_.nbytes)


def _probe_baseline(source: Source, backbone: Backbone, progress: Progress | None) -> Result:
    if backbone.pretraining == "none":
        log.warning("warning: the probed %s backbone is randomly initialised: its features are nearly constant, "
                    "so expect a probe near chance. Use --weights imagenet (download) or demo (offline)",
                    backbone.name)
    from poc.train.features import feature_extractor

    start = time.monotonic()
    extractor = feature_extractor(backbone.classifier)  # one model: traced once for the three splits
    inputs = {s: feature_inputs(extractor, source.frame(s), source.class_names, backbone.image_size, progress)
              for s in ("train", "val", "test")}
    choice, logits = _fit(source, inputs)
    head = choice.model[-1]
    frozen = backbone.classifier.get_layer("backbone")
    backbone_bytes = sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in frozen.weights)
    return Result(f"{PROBE_PREFIX}{backbone.name}", f"linear probe on frozen {backbone.name} "
                  f"({backbone.image_size} px)", backbone.image_size, backbone.weights, backbone.pretraining, choice,
                  logits, time.monotonic() - start, {"features": int(inputs["train"].shape[1])},
                  backbone_bytes + head.coef_.nbytes + head.intercept_.nbytes)


def write_run(runs_dir: Path, source: Source, result: Result, config: dict) -> RunDir:
    """One baseline as a run directory: run.json, split.csv and eval/tl/ (the test split, evaluated once)."""
    from scipy.special import softmax

    from poc.analysis.calibration import temperature_metrics
    from poc.analysis.evaluation import evaluate_probabilities

    rd = store.run_dir(runs_dir, store.new_run_id(result.model)).create()
    rd.write_run(_run_info(rd, source, result, config))
    try:
        store.write_split(rd.split_csv, source.split)
        y_val, y_test = (source.labels(source.frame(s)) for s in ("val", "test"))
        evaluation = evaluate_probabilities(source.frame("test"), softmax(result.logits["test"], axis=1),
                                            source.class_names, seed=source.seed)
        evaluation["metrics"].update(val_loss=result.choice.val_loss, val_accuracy=result.choice.val_accuracy,
                                     **temperature_metrics(result.logits["val"], y_val, result.logits["test"], y_test))
        rd.write_logits("tl", result.logits["val"], y_val, result.logits["test"])
        rd.write_eval("tl", **evaluation)
    except BaseException as exc:
        rd.update_run(status="failed", finished=store.utc_now(), error=f"{type(exc).__name__}: {exc}")
        raise
    rd.update_run(status="completed", finished=store.utc_now())
    metrics = evaluation["metrics"]
    log.info("%s: C=%g chosen on validation (accuracy %.4f); test accuracy %.4f (95%% CI %.3f-%.3f) -> %s",
             result.name, result.choice.C, result.choice.val_accuracy, metrics["accuracy"],
             *metrics["accuracy_ci95"], rd.path)
    return rd


def _run_info(rd: RunDir, source: Source, result: Result, config: dict) -> dict:
    from poc.runs.run_info import new_run_info

    head = result.choice.model[-1]
    params = int(head.coef_.size + head.intercept_.size)
    return new_run_info(
        rd, name=result.name, status="running", started=True, config=config, model=result.model,
        family="baseline", weights=result.weights, pretraining=result.pretraining,
        frozen_random=result.model != PIXELS_MODEL and result.pretraining == "none",
        from_run=source.run.id if source.run else None, split=source.split, class_names=source.class_names,
        data_path=source.data_path, carved=source.carved, image_size=result.image_size,
        params={"total": params, "trainable_tl": params, "trainable_ft": 0,
                "size_mb": round(result.size_bytes / 1e6, 2)},
        final_stage="tl", timing={"tl": round(result.seconds, 2)}, seed=source.seed, device=_device(result),
        versions=_versions(result),
        baseline={"C": result.choice.C, "val_accuracy": result.choice.val_accuracy,
                  "val_loss": result.choice.val_loss, "grid": result.choice.grid, **result.extra})


def _device(result: Result) -> str:
    if result.model == PIXELS_MODEL:  # scikit-learn only: always the CPU
        return f"CPU ({platform.processor() or platform.machine()})"
    from poc.device import describe_device

    return describe_device()


def _versions(result: Result) -> dict:
    import sklearn

    found = {"python": sys.version.split()[0], "numpy": np.__version__, "scikit-learn": sklearn.__version__}
    if result.model != PIXELS_MODEL:
        from poc.device import versions

        found.update(versions())
    return found


# ---------------------------------------------------------------- what the CLI prints

def baseline_summary(run_dirs: list[RunDir]) -> list[dict]:
    """One dict per baseline run: id, path, name, model, C, val_accuracy, test accuracy with its interval,
    macro-F1 and split fingerprint (for `--json` and the printed table)."""
    rows = []
    for rd in run_dirs:
        info = store.read_json(rd.run_json) or {}
        metrics, _ = store.read_metrics(rd, "tl")
        metrics = metrics or {}
        rows.append({"id": rd.id, "path": str(rd.path), "name": info.get("name"), "model": info.get("model"),
                     "status": info.get("status"), "C": (info.get("baseline") or {}).get("C"),
                     "val_accuracy": metrics.get("val_accuracy"), "accuracy": metrics.get("accuracy"),
                     "accuracy_ci95": metrics.get("accuracy_ci95"), "macro_f1": metrics.get("macro_f1"),
                     "split_fingerprint": (info.get("dataset") or {}).get("split_fingerprint")})
    return rows


def summary_text(rows: list[dict]) -> str:
    """The summary as terminal lines: one per baseline, then its run directory."""
    def pct(value) -> str:
        return "-" if value is None else f"{value:.1%}"

    lines = []
    for row in rows:
        low, high = row["accuracy_ci95"] or (None, None)
        lines.append(f"{row['name']}: test accuracy {pct(row['accuracy'])} (95% CI {pct(low)}-{pct(high)}), "
                     f"validation {pct(row['val_accuracy'])}, C={row['C']:g}" if row["C"] is not None else
                     f"{row['name']}: {row['status']}")
        lines.append(f"  {row['path']}")
    return "\n".join(lines)
