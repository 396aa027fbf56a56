"""Two-phase training as data: a list of phases (stage, epochs, learning rate, cutoff) run by one loop.

Phase 1 (transfer learning) trains the new head on a frozen backbone; phase 2 (fine-tuning) unfreezes the
backbone above the cutoff at a low learning rate. Each phase early-stops on val_loss with the best weights
restored and is followed by an evaluation of its stage on the test split, which is never used for a choice.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from poc import artifacts
from poc.artifacts import RunDir
from poc.config import RunConfig
from poc.errors import Cancelled, UserError

log = logging.getLogger("poc.training")


@dataclass(frozen=True)
class Phase:
    stage: str  # "tl" | "ft"
    epochs: int
    learning_rate: float
    cutoff_index: int | None  # None: the whole backbone frozen


@dataclass
class Prepared:
    """Everything that can fail on user input, resolved before a run directory is written."""

    config: RunConfig
    spec: object
    image_size: int
    split: pd.DataFrame
    class_names: list[str]
    model: object
    cutoff_index: int
    cutoff_value: str
    source_run: RunDir | None
    data_root: str


def plan_phases(config: RunConfig, cutoff_index: int) -> list[Phase]:
    phases = []
    if not config.from_run:
        phases.append(Phase("tl", config.tl_epochs, config.lr_tl, None))
    if config.ft_epochs > 0:
        phases.append(Phase("ft", config.ft_epochs, config.lr_ft, cutoff_index))
    return phases


# ---------------------------------------------------------------- preparation (no run dir yet)

def prepare(config: RunConfig, runs_dir: Path) -> Prepared:
    from poc.data.scan import scan_dataset
    from poc.data.split import split_dataset
    from poc.models import build, get_spec, resolve_image_size
    from poc.models.cutoffs import freeze_backbone, resolve_cutoff

    config.validate()
    spec = get_spec(config.model)
    source = None
    if config.from_run:
        source, split, class_names, size, data_root = _reuse_run(config, runs_dir)
    else:
        report = scan_dataset(config.data)
        if not report.usable:
            raise UserError(f"dataset {config.data} is not usable:\n  " + "\n  ".join(report.problems))
        split = split_dataset(report, val=config.val, test=config.test, seed=config.seed)
        class_names = report.class_names
        size = resolve_image_size(spec, config.image_size)
        data_root = str(Path(config.data).resolve())
    model = build(config.model, len(class_names), size, config.weights, dropout=config.dropout)
    cutoff_index = resolve_cutoff(model.get_layer("backbone"), config.fine_tune_at, spec)
    freeze_backbone(model)
    cutoff_value = config.fine_tune_at if config.fine_tune_at is not None else spec.default_cutoff
    return Prepared(config, spec, size, split, class_names, model, cutoff_index, cutoff_value, source, data_root)


def source_run(ref: str, model: str, runs_dir: Path) -> tuple[RunDir, dict]:
    """The run `--from-run` names, checked: it exists, trained `model`, and kept its phase-1 weights."""
    source = artifacts.find_run(ref, runs_dir)
    info = artifacts.read_json(source.run_json) if source else None
    if not info:
        raise UserError(f"--from-run {ref}: no such run in {runs_dir}")
    if info.get("model") != model:
        raise UserError(f"--from-run {source.id} trained {info.get('model')!r}, not {model!r}; "
                        f"use --model {info.get('model')}")
    if not source.stage_weights("tl").exists():
        raise UserError(f"--from-run {source.id} has no phase-1 weights (status {info.get('status')!r})")
    return source, info


def _reuse_run(config: RunConfig, runs_dir: Path):
    source, info = source_run(config.from_run, config.model, runs_dir)
    split = artifacts.read_split(source)
    if split is None:
        raise UserError(f"--from-run {source.id}: split.csv missing or unreadable")
    size = int(info["config"].get("image_size") or info.get("image_size"))
    if config.image_size and config.image_size != size:
        raise UserError(f"--image-size {config.image_size} differs from run {source.id}'s {size} px")
    if config.weights != "none" and config.weights != info.get("weights"):
        log.warning("--weights is ignored with --from-run: phase-1 weights come from %s", source.id)
    config.image_size = size
    return source, split, list(info["class_names"]), size, info.get("dataset", {}).get("path", config.data)


# ---------------------------------------------------------------- the run

def train(config: RunConfig, runs_dir: Path | str | None = None, run_id: str | None = None) -> RunDir:
    """Prepare, then train and evaluate into a new run directory; returns it. UserError before any write."""
    runs_dir = Path(runs_dir) if runs_dir else artifacts.default_runs_dir()
    run_id_given = run_id is not None
    run_id = run_id or artifacts.new_run_id(config.model)
    rd = artifacts.run_dir(runs_dir, run_id)
    if run_id_given:
        # Launched by the dashboard: the run is visible (queued) at once, and a bad input is recorded in it.
        rd.create()
        rd.write_run({"id": rd.id, "name": config.name or rd.id, "status": "queued",
                      "created": artifacts.utc_now(), "config": config.to_dict(), "model": config.model,
                      "weights": config.weights, "pid": os.getpid(), "error": None})
    try:
        from poc.device import configure

        speedups = configure(config.mixed_precision, config.jit_compile)
        prepared = prepare(config, runs_dir)
    except Exception as exc:
        if run_id_given:
            rd.update_run(status="failed", error=str(exc), finished=artifacts.utc_now())
        raise
    rd.path.mkdir(parents=True, exist_ok=True)
    info = _initial_run_info(prepared, rd, speedups)
    if run_id_given:
        info["created"] = (artifacts.read_json(rd.run_json) or {}).get("created", info["created"])
    rd.write_run(info)
    artifacts.write_csv(rd.split_csv, prepared.split)
    handler = _attach_log(rd)
    try:
        with _device_slot(runs_dir, rd), _cancel_on_sigterm():
            rd.update_run(status="running", started=artifacts.utc_now(), pid=os.getpid())
            _run_phases(prepared, rd, speedups)
        rd.update_run(status="completed", finished=artifacts.utc_now())
        log.info("run %s completed", rd.id)
    except (Cancelled, KeyboardInterrupt):
        rd.update_run(status="cancelled", finished=artifacts.utc_now(), error="cancelled by the user")
        log.warning("run %s cancelled", rd.id)
        raise Cancelled(rd.id) from None
    except BaseException as exc:
        rd.update_run(status="failed", finished=artifacts.utc_now(), error=f"{type(exc).__name__}: {exc}")
        log.exception("run %s failed", rd.id)
        raise
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    return rd


def _initial_run_info(p: Prepared, rd: RunDir, speedups: dict) -> dict:
    from poc.data.split import split_fingerprint
    from poc.device import describe_device, versions
    from poc.models.cutoffs import trainable_count, unfreeze_from, freeze_backbone

    model = p.model
    total = int(model.count_params())
    trainable_tl = trainable_count(model)
    unfreeze_from(model, p.cutoff_index)
    trainable_ft = trainable_count(model)
    freeze_backbone(model)
    counts = p.split["split"].value_counts().to_dict()
    return {
        "id": rd.id,
        "name": p.config.name or rd.id,
        "status": "queued",
        "created": artifacts.utc_now(),
        "started": None,
        "finished": None,
        "config": {**p.config.to_dict(), "image_size": p.image_size},
        "dataset": {"path": p.data_root, "split_fingerprint": split_fingerprint(p.split),
                    "counts": {s: int(counts.get(s, 0)) for s in ("train", "val", "test")},
                    "num_classes": len(p.class_names)},
        "class_names": p.class_names,
        "model": p.config.model,
        "family": p.spec.family,
        "explanation": p.spec.explanation,
        "image_size": p.image_size,
        "weights": p.config.weights if not p.source_run else f"run:{p.source_run.id}",
        "from_run": p.source_run.id if p.source_run else None,
        "params": {"total": total, "trainable_tl": trainable_tl, "trainable_ft": trainable_ft},
        "fine_tune_at": p.cutoff_value,
        "fine_tune_at_index": p.cutoff_index,
        "device": describe_device(),
        "speedups": speedups,
        "versions": versions(),
        "seed": p.config.seed,
        "timing": {},
        "best_epoch": {},
        "error": None,
        "pid": os.getpid(),
    }


def _run_phases(p: Prepared, rd: RunDir, speedups: dict) -> None:
    import keras

    from poc.data.pipeline import make_dataset
    from poc.models.cutoffs import freeze_backbone, unfreeze_from

    cfg = p.config
    keras.utils.set_random_seed(cfg.seed)
    frames = {s: p.split[p.split["split"] == s].reset_index(drop=True) for s in ("train", "val", "test")}
    train_ds = make_dataset(frames["train"], p.class_names, p.image_size, cfg.batch_size, training=True,
                            augment=cfg.augment, seed=cfg.seed)
    val_ds = make_dataset(frames["val"], p.class_names, p.image_size, cfg.batch_size)
    test_ds = make_dataset(frames["test"], p.class_names, p.image_size, cfg.batch_size)
    steps = int(np.ceil(len(frames["train"]) / cfg.batch_size))

    history: list[dict] = []
    if p.source_run:
        p.model.load_weights(p.source_run.stage_weights("tl"))
        _evaluate_stage(p, rd, "tl", test_ds, frames["test"])
    for phase in plan_phases(cfg, p.cutoff_index):
        if phase.cutoff_index is None:
            freeze_backbone(p.model)
        else:
            unfreeze_from(p.model, phase.cutoff_index)
        p.model.compile(optimizer=keras.optimizers.Adam(phase.learning_rate), loss="categorical_crossentropy",
                        metrics=["accuracy"], jit_compile=speedups["jit_compile"])
        start = time.monotonic()
        first_epoch = len(history)
        callbacks = [
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience, restore_best_weights=True),
            RunWriter(rd, phase, history, steps),
            keras.callbacks.TensorBoard(log_dir=str(rd.logs_dir / phase.stage), write_graph=False),
        ]
        log.info("phase %s: %d epochs max, lr %g, %d trainable parameters", phase.stage, phase.epochs,
                 phase.learning_rate, sum(int(np.prod(w.shape)) for w in p.model.trainable_weights))
        p.model.fit(train_ds, validation_data=val_ds, epochs=first_epoch + phase.epochs,
                    initial_epoch=first_epoch, callbacks=callbacks, shuffle=False, verbose=2 if not sys.stdout.isatty() else 1)
        phase_rows = [r for r in history if r["phase"] == phase.stage]
        best = min(phase_rows, key=lambda r: r["val_loss"])["epoch"] if phase_rows else None
        info = artifacts.read_json(rd.run_json)
        rd.update_run(timing={**info.get("timing", {}), phase.stage: round(time.monotonic() - start, 2)},
                      best_epoch={**info.get("best_epoch", {}), phase.stage: best})
        tmp = artifacts.atomic_target(rd.stage_weights(phase.stage))
        p.model.save_weights(tmp)
        artifacts.commit(tmp, rd.stage_weights(phase.stage))
        _evaluate_stage(p, rd, phase.stage, test_ds, frames["test"])
    tmp = artifacts.atomic_target(rd.weights)
    p.model.save_weights(tmp)
    artifacts.commit(tmp, rd.weights)


def _evaluate_stage(p: Prepared, rd: RunDir, stage: str, test_ds, test_frame: pd.DataFrame) -> None:
    from poc.evaluation import evaluate_probabilities
    from poc.explain import explain_images

    rd.write_progress({"phase": f"eval_{stage}", "epoch": None, "epochs": None, "step": 0, "steps": None,
                       "metrics": {}, "eta_seconds": None})
    probs = p.model.predict(test_ds, verbose=0)
    result = evaluate_probabilities(test_frame, probs, p.class_names, seed=p.config.seed)
    rd.write_eval(stage, **result)
    log.info("stage %s: test accuracy %.4f (95%% CI %.3f-%.3f), macro-F1 %.4f", stage,
             result["metrics"]["accuracy"], *result["metrics"]["accuracy_ci95"], result["metrics"]["macro_f1"])
    explained = explain_images(p.model, p.spec, test_ds)
    if explained is not None:
        rd.write_explanations(stage, *explained)


def evaluate_run(rd: RunDir) -> list[str]:
    """Recompute every stage's eval files of a finished run from its saved stage weights."""
    from poc.data.pipeline import make_dataset
    from poc.models import build

    info = artifacts.read_json(rd.run_json)
    if not info:
        raise UserError(f"{rd.path}: run.json missing or unreadable")
    split = artifacts.read_split(rd)
    if split is None:
        raise UserError(f"{rd.path}: split.csv missing or unreadable")
    cfg = RunConfig.from_dict(info["config"])
    spec_size = int(info["image_size"])
    model = build(info["model"], len(info["class_names"]), spec_size, "none", dropout=cfg.dropout)
    test = split[split["split"] == "test"].reset_index(drop=True)
    test_ds = make_dataset(test, info["class_names"], spec_size, cfg.batch_size)
    from poc.models import get_spec

    p = Prepared(cfg, get_spec(info["model"]), spec_size, split, info["class_names"], model, 0, "", None,
                 info["dataset"]["path"])
    done = []
    for stage in artifacts.STAGES:
        if rd.stage_weights(stage).exists():
            model.load_weights(rd.stage_weights(stage))
            _evaluate_stage(p, rd, stage, test_ds, test)
            done.append(stage)
    if not done:
        raise UserError(f"run {rd.id} has no saved stage weights to evaluate")
    return done


# ---------------------------------------------------------------- callbacks and process plumbing

def _keras_callback_base():
    import keras

    return keras.callbacks.Callback


class RunWriter(_keras_callback_base()):
    """Appends history.csv rows per epoch and keeps progress.json fresh (throttled) with an ETA."""

    def __init__(self, rd: RunDir, phase: Phase, history: list[dict], steps: int, every_s: float = 0.5):
        super().__init__()
        self.rd, self.phase, self.history, self.steps, self.every_s = rd, phase, history, steps, every_s
        self._last_write = 0.0

    def on_train_begin(self, logs=None):
        self._phase_start = time.monotonic()
        self._steps_done = 0
        self._phase_first_epoch = len(self.history)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._epoch_start = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        self._steps_done += 1
        now = time.monotonic()
        if now - self._last_write >= self.every_s:
            self._write_progress(batch + 1, logs)
            self._last_write = now

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        lr = self.model.optimizer.learning_rate
        self.history.append({
            "epoch": epoch + 1,
            "phase": self.phase.stage,
            "loss": float(logs.get("loss", np.nan)),
            "accuracy": float(logs.get("accuracy", np.nan)),
            "val_loss": float(logs.get("val_loss", np.nan)),
            "val_accuracy": float(logs.get("val_accuracy", np.nan)),
            "lr": float(np.asarray(lr.numpy() if hasattr(lr, "numpy") else lr)),
            "seconds": round(time.monotonic() - self._epoch_start, 3),
        })
        self.rd.write_history(self.history)
        self._write_progress(self.steps, logs)

    def _write_progress(self, step: int, logs) -> None:
        elapsed = time.monotonic() - self._phase_start
        remaining_steps = self.phase.epochs * self.steps - self._steps_done
        eta = elapsed / self._steps_done * remaining_steps if self._steps_done else None
        self.rd.write_progress({
            "phase": self.phase.stage,
            "epoch": self._epoch + 1 - self._phase_first_epoch,
            "epochs": self.phase.epochs,
            "global_epoch": self._epoch + 1,
            "step": step,
            "steps": self.steps,
            "metrics": {k: float(v) for k, v in (logs or {}).items() if np.isscalar(v)},
            "eta_seconds": round(eta, 1) if eta is not None else None,
        })


@contextlib.contextmanager
def _cancel_on_sigterm():
    """The launcher's Cancel sends SIGTERM to our process group: turn it into Cancelled, so status is written."""
    def handler(signum, frame):
        raise Cancelled()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _device_slot(runs_dir: Path, rd: RunDir):
    """One training at a time per machine (one GPU, or 2 CPU cores): a file lock; the run waits 'queued'."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    with open(runs_dir / ".device.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another training holds the device; run %s is queued", rd.id)
            rd.write_progress({"phase": "queued", "epoch": None, "epochs": None, "step": 0, "steps": None,
                               "metrics": {}, "eta_seconds": None})
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _attach_log(rd: RunDir) -> logging.Handler:
    handler = logging.FileHandler(rd.train_log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler
