"""Two-phase training as data: a list of phases (stage, epochs, learning rate, cutoff) run by one loop.

Phase 1 (transfer learning) trains the new head on a frozen backbone; phase 2 (fine-tuning) unfreezes the
backbone above the cutoff at a low learning rate. Each phase early-stops on val_loss with the best weights
restored and is followed by an evaluation of its stage on the test split, which is never used for a choice.
"""

from __future__ import annotations

import logging
import math
import os
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
    pretraining: str  # imagenet | demo | none | checkpoint: what the backbone started from


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
    from poc.models import build, get_spec, pretraining_kind, resolve_image_size
    from poc.models.cutoffs import cutoff_text, freeze_backbone, resolve_cutoff

    config.validate()
    spec = get_spec(config.model)
    _seed_everything(config.seed)  # before anything random: the head's and a random backbone's initial weights
    source = None
    if config.from_run:
        source, split, class_names, size, data_root, pretraining = _reuse_run(config, runs_dir)
    else:
        pretraining = pretraining_kind(config.weights)
        report = scan_dataset(config.data)
        if not report.usable:
            raise UserError(f"dataset {config.data} is not usable:\n  " + "\n  ".join(report.problems))
        split = split_dataset(report, val=config.val, test=config.test, seed=config.seed)
        class_names = report.class_names
        size = resolve_image_size(spec, config.image_size)
        data_root = str(Path(config.data).resolve())
    if config.frozen_random:
        log.warning("warning: --weights none freezes a randomly initialised backbone in phase 1: its features "
                    "are nearly constant, so expect near-chance accuracy until phase 2. Use --weights imagenet "
                    "(download) or demo (offline) for transfer learning")
    model = build(config.model, len(class_names), size, config.weights, dropout=config.dropout)
    cutoff_index = resolve_cutoff(model.get_layer("backbone"), config.fine_tune_at, spec)
    freeze_backbone(model)
    cutoff_value = cutoff_text(config.fine_tune_at, spec)
    return Prepared(config, spec, size, split, class_names, model, cutoff_index, cutoff_value, source, data_root,
                    pretraining)


def _seed_everything(seed: int) -> None:
    import keras

    keras.utils.set_random_seed(seed)  # Python, NumPy and the backend's global generators


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
    if config.weights not in ("none", RunConfig(data="").weights) and config.weights != info.get("weights"):
        log.warning("--weights is ignored with --from-run: phase-1 weights come from %s", source.id)
    config.image_size = size
    from poc.models import pretraining_kind

    pretraining = info.get("pretraining") or pretraining_kind(str(info.get("weights", "none")))
    return source, split, list(info["class_names"]), size, info.get("dataset", {}).get("path", config.data), \
        pretraining


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
    from poc.runwriter import attach_log, cancel_on_sigterm, device_slot

    handler = attach_log(rd)
    try:
        with device_slot(runs_dir, rd), cancel_on_sigterm():
            rd.update_run(status="running", started=artifacts.utc_now(), pid=os.getpid())
            _run_phases(prepared, rd, speedups)
        rd.update_run(status="completed", finished=artifacts.utc_now())
        log.info("run %s completed", rd.id)
    except (Cancelled, KeyboardInterrupt):
        rd.update_run(status="cancelled", finished=artifacts.utc_now(), error="cancelled by the user")
        log.warning("run %s cancelled", rd.id)
        raise Cancelled(rd.id) from None
    except BaseException as exc:
        reason = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        rd.update_run(status="failed", finished=artifacts.utc_now(), error=reason)
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
    from poc.runwriter import parameter_megabytes

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
                    "num_classes": len(p.class_names), "carved": dict(p.split.attrs.get("carved") or {})},
        "class_names": p.class_names,
        "model": p.config.model,
        "family": p.spec.family,
        "explanation": p.spec.explanation,
        "image_size": p.image_size,
        "weights": p.config.weights if not p.source_run else f"run:{p.source_run.id}",
        "pretraining": p.pretraining,
        "frozen_random": p.config.frozen_random,
        "from_run": p.source_run.id if p.source_run else None,
        "params": {"total": total, "trainable_tl": trainable_tl, "trainable_ft": trainable_ft,
                   "size_mb": parameter_megabytes(model)},
        "final_stage": None,
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
    from poc.models.cutoffs import freeze_backbone, frozen_view, unfreeze_from
    from poc.runwriter import RunWriter, save_model_weights

    cfg = p.config
    frames = {s: p.split[p.split["split"] == s].reset_index(drop=True) for s in ("train", "val", "test")}
    train_ds = make_dataset(frames["train"], p.class_names, p.image_size, cfg.batch_size, training=True,
                            augment=cfg.augment, seed=cfg.seed)
    sets = {s: (make_dataset(frames[s], p.class_names, p.image_size, cfg.batch_size), frames[s])
            for s in ("val", "test")}
    steps = int(np.ceil(len(frames["train"]) / cfg.batch_size))

    history: list[dict] = []
    val_losses: dict[str, float] = {}  # stage -> validation loss of its (restored best) weights
    if p.source_run:
        p.model.load_weights(p.source_run.stage_weights("tl"))
        val_losses["tl"] = _evaluate_stage(p, rd, "tl", sets)
    for phase in plan_phases(cfg, p.cutoff_index):
        if phase.cutoff_index is None:
            freeze_backbone(p.model)
            fit_model = frozen_view(p.model)  # same weights; the frozen backbone runs in inference mode
        else:
            unfreeze_from(p.model, phase.cutoff_index)
            fit_model = p.model
        fit_model.compile(optimizer=keras.optimizers.Adam(phase.learning_rate), loss="categorical_crossentropy",
                          metrics=["accuracy"], jit_compile=speedups["jit_compile"])
        start = time.monotonic()
        first_epoch = len(history)
        flag = "--lr-tl" if phase.stage == "tl" else "--lr-ft"
        callbacks = [
            RunWriter(rd, phase.stage, phase.epochs, history, steps,
                      hint=f"Lower the learning rate ({flag} {phase.learning_rate:g} -> {phase.learning_rate / 10:g})."),
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience, restore_best_weights=True),
            keras.callbacks.TensorBoard(log_dir=str(rd.logs_dir / phase.stage), write_graph=False),
        ]
        log.info("phase %s: %d epochs max, lr %g, %d trainable parameters", phase.stage, phase.epochs,
                 phase.learning_rate, sum(int(np.prod(w.shape)) for w in p.model.trainable_weights))
        fit_model.fit(train_ds, validation_data=sets["val"][0], epochs=first_epoch + phase.epochs,
                      initial_epoch=first_epoch, callbacks=callbacks, shuffle=False,
                      verbose=2 if not sys.stdout.isatty() else 1)
        phase_rows = [r for r in history if r["phase"] == phase.stage]
        best = min(phase_rows, key=lambda r: r["val_loss"])["epoch"] if phase_rows else None
        info = artifacts.read_json(rd.run_json)
        rd.update_run(timing={**info.get("timing", {}), phase.stage: round(time.monotonic() - start, 2)},
                      best_epoch={**info.get("best_epoch", {}), phase.stage: best})
        save_model_weights(p.model, rd.stage_weights(phase.stage))
        val_losses[phase.stage] = _evaluate_stage(p, rd, phase.stage, sets)
    final = choose_final_stage(val_losses)
    if final != list(val_losses)[-1]:
        log.info("stage %s has the lower validation loss (%s): it is the final model", final,
                 ", ".join(f"{s} {v:.4f}" for s, v in val_losses.items()))
        p.model.load_weights(p.source_run.stage_weights(final) if p.source_run and final == "tl"
                             else rd.stage_weights(final))
    save_model_weights(p.model, rd.weights)
    rd.update_run(final_stage=final)


def choose_final_stage(val_losses: dict[str, float]) -> str:
    """The stage whose weights have the lowest validation loss; on a tie (or no number) the later stage.
    The test split never takes part in this choice."""
    finite = {s: v for s, v in val_losses.items() if v is not None and math.isfinite(v)}
    if not finite:
        return list(val_losses)[-1]
    best = min(finite.values())
    return [s for s, v in finite.items() if v == best][-1]


def _evaluate_stage(p: Prepared, rd: RunDir, stage: str, sets: dict) -> float:
    """Writes eval/<stage>/ (test split) with the stage's validation loss and accuracy in metrics.json;
    returns that validation loss (what chooses the final stage)."""
    from poc.evaluation import evaluate_probabilities
    from poc.explain import explain_images

    rd.write_progress({"phase": f"eval_{stage}", "epoch": None, "epochs": None, "step": 0, "steps": None,
                       "metrics": {}, "eta_seconds": None})
    (val_ds, val_frame), (test_ds, test_frame) = sets["val"], sets["test"]
    val_loss, val_accuracy = _loss_and_accuracy(p.model.predict(val_ds, verbose=0), val_frame, p.class_names)
    probs = p.model.predict(test_ds, verbose=0)
    result = evaluate_probabilities(test_frame, probs, p.class_names, seed=p.config.seed)
    result["metrics"].update(val_loss=val_loss, val_accuracy=val_accuracy)
    rd.write_eval(stage, **result)
    log.info("stage %s: validation loss %.4f, accuracy %.4f; test accuracy %.4f (95%% CI %.3f-%.3f), "
             "macro-F1 %.4f", stage, val_loss, val_accuracy, result["metrics"]["accuracy"],
             *result["metrics"]["accuracy_ci95"], result["metrics"]["macro_f1"])
    explained = explain_images(p.model, p.spec, test_ds)
    if explained is not None:
        rd.write_explanations(stage, *explained)
    return val_loss


def _loss_and_accuracy(probs: np.ndarray, frame: pd.DataFrame, class_names: list[str]) -> tuple[float, float]:
    """Categorical cross-entropy (as Keras computes it, probabilities clipped at 1e-7) and accuracy."""
    index = {name: i for i, name in enumerate(class_names)}
    y = np.array([index[label] for label in frame["label"]])
    if not len(y):
        return float("nan"), float("nan")
    picked = np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0)
    return float(-np.log(picked).mean()), float((probs.argmax(axis=1) == y).mean())


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
    frames = {s: split[split["split"] == s].reset_index(drop=True) for s in ("val", "test")}
    sets = {s: (make_dataset(f, info["class_names"], spec_size, cfg.batch_size), f) for s, f in frames.items()}
    from poc.models import get_spec

    p = Prepared(cfg, get_spec(info["model"]), spec_size, split, info["class_names"], model, 0, "", None,
                 info["dataset"]["path"], info.get("pretraining", "none"))
    done = []
    for stage in artifacts.STAGES:
        if rd.stage_weights(stage).exists():
            model.load_weights(rd.stage_weights(stage))
            _evaluate_stage(p, rd, stage, sets)
            done.append(stage)
    if not done:
        raise UserError(f"run {rd.id} has no saved stage weights to evaluate")
    return done
