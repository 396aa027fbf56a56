"""The phases of a run, each followed by its stage's evaluation: one loop over `Phase` values, resumable.

Phase 1 (transfer learning) trains the new head on a frozen backbone (on cached features by default); phase 2
(fine-tuning) unfreezes the backbone above the cutoff at a low learning rate. Each phase early-stops on
val_loss with the best weights restored; the final model is the stage with the lower validation loss. The test
split is only evaluated, never used for a choice.
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
import time

import numpy as np

from poc.runs import store
from poc.train import cached_phase
from poc.runs.store import RunDir
from poc.runs.writer import (Checkpoint, ResumableEarlyStopping, RunWriter, checkpoint_dir, load_checkpoint_arrays,
                             raise_if_cancelled, read_checkpoint, save_model_weights)
from poc.config import RunConfig
from poc.errors import UserError
from poc.train.plan import Phase, Prepared, plan_phases

log = logging.getLogger("poc.train.training")


def run_phases(p: Prepared, rd: RunDir, speedups: dict, resume: bool = False) -> None:
    """Every phase, each followed by its stage's evaluation, then the final stage's weights as the model.
    With `resume`, phases whose weights and evaluation exist are skipped and the phase in progress continues
    from its last checkpoint; history.csv keeps exactly the epochs that checkpoint covers."""
    from poc.data.pipeline import make_dataset
    from poc.inference import compile_logits
    from poc.train.distribute import replicas

    cfg = p.config
    batch = cfg.batch_size * replicas(p.strategy)  # --batch-size is per replica
    frames = {s: p.split[p.split["split"] == s].reset_index(drop=True) for s in ("train", "val", "test")}
    sets = {s: (make_dataset(frames[s], p.class_names, p.image_size, batch), frames[s])
            for s in ("val", "test")}
    logits = compile_logits(p.model, p.image_size)  # traced once: it reads the variables each stage sets
    history = _history_rows(rd) if resume else []
    checkpoint = read_checkpoint(rd) if resume else None
    val_losses: dict[str, float] = {}  # stage -> validation loss of its (restored best) weights
    if p.source_run:
        _load_weights(p.model, p.source_run.stage_weights("tl"))
        val_losses["tl"] = _stage_done(rd, "tl") if resume else None
        if val_losses["tl"] is None:
            val_losses["tl"] = _evaluate_stage(p, rd, "tl", sets, logits)
    for phase in plan_phases(cfg, p.cutoff_index):
        raise_if_cancelled()
        if resume and rd.stage_weights(phase.stage).exists():  # the phase finished before the interruption
            _load_weights(p.model, rd.stage_weights(phase.stage))  # its rows stay, and so do a later phase's
            val_losses[phase.stage] = _stage_done(rd, phase.stage)
            if val_losses[phase.stage] is None:  # killed during its evaluation
                val_losses[phase.stage] = _evaluate_stage(p, rd, phase.stage, sets, logits)
            continue
        state = checkpoint if checkpoint and checkpoint["stage"] == phase.stage else None
        history = [r for r in history if _phase_order(r["phase"]) < _phase_order(phase.stage)
                   or (state and r["phase"] == phase.stage and r["epoch"] <= state["epoch"])]
        _fit_phase(p, rd, phase, history, frames, sets["val"][0], speedups, state)
        save_model_weights(p.model, rd.stage_weights(phase.stage))
        val_losses[phase.stage] = _evaluate_stage(p, rd, phase.stage, sets, logits)
    final = choose_final_stage(val_losses)
    if final != list(val_losses)[-1]:
        log.info("stage %s has the lower validation loss (%s): it is the final model", final,
                 ", ".join(f"{s} {v:.4f}" for s, v in val_losses.items()))
    # The final stage's file is the model's file: copied, not serialised from the model a second time.
    store.copy_file(p.source_run.stage_weights(final) if p.source_run and final == "tl" else rd.stage_weights(final),
                    rd.weights)
    rd.update_run(final_stage=final)
    shutil.rmtree(checkpoint_dir(rd), ignore_errors=True)  # a completed run needs no resume point


def compile_for_fit(model, learning_rate: float, jit_compile: bool) -> None:
    """Adam on categorical cross-entropy with an accuracy metric, every variable created here. Created inside
    fit's first step instead (Keras builds string metrics and the optimizer lazily), they make TensorFlow trace
    that step twice: 2.3 s of a 14 s phase 2 of a 32 px MobileNetV2 on two CPU cores. A resumed
    phase needs the optimizer built anyway, to load the checkpoint's moments."""
    import keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="categorical_crossentropy",
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")], jit_compile=jit_compile)
    model.optimizer.build(model.trainable_variables)


def _fit_phase(p: Prepared, rd: RunDir, phase: Phase, history: list[dict], frames: dict, val_ds,
               speedups: dict, state: dict | None) -> None:
    """One phase's `fit` with early stopping on val_loss (best weights restored), from `state` when resuming."""
    import keras

    from poc.data.pipeline import make_dataset
    from poc.train.distribute import fit, replicas, scope
    from poc.models.cutoffs import freeze_backbone, frozen_view, unfreeze_from

    cfg = p.config
    batch = cfg.batch_size * replicas(p.strategy)  # --batch-size is per replica
    start = time.monotonic()
    fit_data = make_dataset(frames["train"], p.class_names, p.image_size, batch, training=True,
                            augment=cfg.augment, seed=cfg.seed)
    val_data = val_ds
    cached = phase.cutoff_index is None and cfg.feature_cache  # the frozen backbone runs once per image and view
    if cached:  # outside the strategy's scope: a plain forward pass, not a replicated step
        freeze_backbone(p.model)
        fit_data, val_data, width = _cached_phase_inputs(p, rd, frames, batch)
    with scope(p.strategy):  # a Keras model takes its strategy when built: views, head and optimizer inside
        if cached:
            fit_model = cached_phase.head_model(p.model, width)
        elif phase.cutoff_index is None:
            freeze_backbone(p.model)
            fit_model = frozen_view(p.model)  # same weights; the frozen backbone runs in inference mode
        else:
            unfreeze_from(p.model, phase.cutoff_index)
            fit_model = p.model
        compile_for_fit(fit_model, phase.learning_rate, speedups["jit_compile"])
    first_epoch = sum(1 for r in history if r["phase"] != phase.stage)  # global index of the phase's epoch 1
    initial_epoch, best_weights = first_epoch, None
    if state:
        if state.get("best_file"):
            best_weights = _checkpoint_weights(fit_model, checkpoint_dir(rd) / state["best_file"])
        _restore_checkpoint(fit_model, checkpoint_dir(rd) / state["last_file"])
        initial_epoch = state["epoch"]
        log.info("phase %s resumes after epoch %d (global) from its checkpoint", phase.stage, initial_epoch)
    early = ResumableEarlyStopping(cfg.patience, state["early"] if state else None, best_weights)
    flag = "--lr-tl" if phase.stage == "tl" else "--lr-ft"
    hint = f"Lower the learning rate ({flag} {phase.learning_rate:g} -> {phase.learning_rate / 10:g})."
    steps = int(np.ceil(len(frames["train"]) / batch))
    callbacks = [RunWriter(rd, phase.stage, phase.epochs, history, steps, first_epoch, hint=hint), early,
                 Checkpoint(rd, phase.stage, early),
                 keras.callbacks.TensorBoard(log_dir=str(rd.logs_dir / phase.stage), write_graph=False)]
    finished = state and (state["epoch"] >= first_epoch + phase.epochs or state["early"]["wait"] >= cfg.patience)
    log.info("phase %s: %d epochs max, lr %g, %d trainable parameters", phase.stage, phase.epochs,
             phase.learning_rate, sum(int(np.prod(w.shape)) for w in p.model.trainable_weights))
    if finished:  # killed between its last epoch and saving its weights: only the best weights are missing
        if best_weights is not None:
            fit_model.set_weights(best_weights)
    else:
        fit(fit_model, p.strategy, fit_data, validation_data=val_data, epochs=first_epoch + phase.epochs,
            initial_epoch=initial_epoch, callbacks=callbacks, verbose=2 if not sys.stdout.isatty() else 1)
    shutil.rmtree(rd.path / "feature_cache", ignore_errors=True)  # a memmap for large sets: not an artifact
    phase_rows = [r for r in history if r["phase"] == phase.stage]
    best = min(phase_rows, key=lambda r: r["val_loss"])["epoch"] if phase_rows else None
    info = store.read_json(rd.run_json)
    timing = info.get("timing", {})
    rd.update_run(timing={**timing, phase.stage: round(timing.get(phase.stage, 0) if state else 0, 2)
                          + round(time.monotonic() - start, 2)},
                  best_epoch={**info.get("best_epoch", {}), phase.stage: best})


def _load_weights(model, path) -> None:
    """Model weights saved without optimizer state (`save_model_weights`) into a compiled model: Keras warns
    that the optimizer's variables were not in the file, which is the point; only that warning is silenced."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(path)


def _checkpoint_weights(fit_model, path) -> list:
    """A resume file's model weights; a `.weights.h5` one (written before checkpoints were arrays) goes through
    the model."""
    if path.suffix == ".h5":
        _load_weights(fit_model, path)
        return fit_model.get_weights()
    return load_checkpoint_arrays(path)[0]


def _restore_checkpoint(fit_model, path) -> None:
    """The fitted model's weights and its (built) optimizer's variables from a resume file."""
    if path.suffix == ".h5":  # written before checkpoints were arrays: Keras's file holds both
        fit_model.load_weights(path)
        return
    weights, optimizer_values = load_checkpoint_arrays(path)
    variables = fit_model.optimizer.variables
    if len(weights) != len(fit_model.weights) or len(optimizer_values) != len(variables):
        raise UserError(f"the checkpoint {path} does not match this run's model ({len(weights)} weights and "
                        f"{len(optimizer_values)} optimizer variables, expected {len(fit_model.weights)} and "
                        f"{len(variables)}); start the run again")
    fit_model.set_weights(weights)
    for variable, value in zip(variables, optimizer_values):
        variable.assign(value)


def _phase_order(stage: str) -> int:
    return store.STAGES.index(stage)


def _history_rows(rd: RunDir) -> list[dict]:
    frame = store.read_history(rd)
    return [] if frame is None else frame.to_dict("records")


def _stage_done(rd: RunDir, stage: str) -> float | None:
    """The validation loss recorded by a finished stage evaluation, or None when it has to be (re)done."""
    metrics = store.read_json(rd.eval_file(stage, "metrics")) or {}
    value = metrics.get("val_loss")
    return float(value) if isinstance(value, (int, float)) else None


def _cached_phase_inputs(p: Prepared, rd: RunDir, frames: dict, batch: int):
    """(training data, validation data, feature width) for phase 1 on cached features; the pass over the images is
    a progress step of its own (phase "features_tl") with an ETA."""
    cfg = p.config
    clock = {"start": time.monotonic(), "last": 0.0}

    def progress(done: int, total: int) -> None:
        raise_if_cancelled()  # called after each batch of the feature pass
        now = time.monotonic()
        if now - clock["last"] < 0.5 and done < total:
            return
        clock["last"] = now
        elapsed = now - clock["start"]
        rd.write_progress({"phase": "features_tl", "epoch": None, "epochs": None, "step": done, "steps": total,
                           "metrics": {}, "eta_seconds": round(elapsed / done * (total - done), 1) if done else None})

    cache = cached_phase.build_cache(p.model, frames, p.class_names, p.image_size, batch, cfg.augment,
                                     cfg.tl_views, cfg.seed, progress=progress, cache_dir=rd.path / "feature_cache")
    info = store.read_json(rd.run_json) or {}
    rd.update_run(timing={**info.get("timing", {}), "features_tl": round(cache.seconds, 2)},
                  feature_cache={"views": cache.views, "train_images": int(cache.train.shape[1]),
                                 "features": int(cache.train.shape[-1])})
    classes = len(p.class_names)
    return (cached_phase.training_dataset(cache, classes, batch, cfg.seed),
            cached_phase.validation_dataset(cache, classes, batch), int(cache.train.shape[-1]))


def choose_final_stage(val_losses: dict[str, float]) -> str:
    """The stage whose weights have the lowest validation loss; on a tie (or no number) the later stage.
    The test split never takes part in this choice."""
    finite = {s: v for s, v in val_losses.items() if v is not None and math.isfinite(v)}
    if not finite:
        return list(val_losses)[-1]
    best = min(finite.values())
    return [s for s, v in finite.items() if v == best][-1]


def _evaluate_stage(p: Prepared, rd: RunDir, stage: str, sets: dict, logits) -> float:
    """Writes eval/<stage>/ (test split) with the stage's validation loss and accuracy in metrics.json and the
    pre-softmax outputs of both splits (logits.npz, what the temperature is fitted on); returns that validation
    loss (what chooses the final stage). `logits`: poc.inference.compile_logits of p.model, compiled once per run
    (each trace of a backbone costs seconds; every stage's weights load into the same variables)."""
    from scipy.special import softmax

    from poc.analysis.calibration import temperature_metrics
    from poc.analysis.evaluation import evaluate_probabilities, loss_and_accuracy
    from poc.explain.maps import explain_images

    rd.write_progress({"phase": f"eval_{stage}", "epoch": None, "epochs": None, "step": 0, "steps": None,
                       "metrics": {}, "eta_seconds": None})
    (val_ds, val_frame), (test_ds, test_frame) = sets["val"], sets["test"]
    index = {name: i for i, name in enumerate(p.class_names)}
    y_val, y_test = (np.array([index[c] for c in frame["label"]], dtype=int) for frame in (val_frame, test_frame))
    val_logits = _predict_dataset(logits, val_ds, len(p.class_names))  # (N_val, C)
    test_logits = _predict_dataset(logits, test_ds, len(p.class_names))  # (N_test, C), predictions.csv order
    val_probs, probs = softmax(val_logits, axis=1), softmax(test_logits, axis=1)
    val_loss, val_accuracy = loss_and_accuracy(val_probs, y_val)
    result = evaluate_probabilities(test_frame, probs, p.class_names, seed=p.config.seed)
    latency = _latency_ms(logits, test_ds)  # predict's and Live predict's compiled forward pass, less the softmax
    result["metrics"].update(val_loss=val_loss, val_accuracy=val_accuracy, latency_ms=latency,
                             **temperature_metrics(val_logits, y_val, test_logits, y_test))
    explained = explain_images(p.model, p.spec, test_ds)
    if explained is not None:
        rd.write_explanations(stage, *explained)
    rd.write_logits(stage, val_logits, y_val, test_logits)
    rd.write_eval(stage, **result)  # metrics.json last: a resume redoes a stage until it exists (_stage_done)
    log.info("stage %s: validation loss %.4f, accuracy %.4f; test accuracy %.4f (95%% CI %.3f-%.3f), "
             "macro-F1 %.4f", stage, val_loss, val_accuracy, result["metrics"]["accuracy"],
             *result["metrics"]["accuracy_ci95"], result["metrics"]["macro_f1"])
    return val_loss


def _predict_dataset(call, dataset, classes: int) -> np.ndarray:
    """Outputs (N, C) of a compiled call over a (pixels, labels) dataset, in dataset order, as float64."""
    import tensorflow as tf

    out = []
    for pixels, _ in dataset:
        raise_if_cancelled()
        out.append(np.asarray(call(tf.cast(pixels, tf.float32)), np.float64))
    return np.concatenate(out) if out else np.zeros((0, classes))


LATENCY_CALLS = 5


def _latency_ms(forward, dataset) -> float | None:
    """Median milliseconds of one single-image compiled forward pass on this run's device (after one warm-up
    call): the model cost the Compare page shows. None without a test image."""
    import tensorflow as tf

    for pixels, _ in dataset.take(1):
        one = tf.cast(pixels[:1], tf.float32)
        np.asarray(forward(one))  # warm-up (the batch dimension is free: traced once already)
        times = []
        for _ in range(LATENCY_CALLS):
            start = time.perf_counter()
            np.asarray(forward(one))
            times.append(time.perf_counter() - start)
        return round(float(np.median(times)) * 1000, 3)
    return None


def evaluate_run(rd: RunDir) -> list[str]:
    """Recompute every stage's eval files of a finished run from its saved stage weights."""
    from poc.data.pipeline import make_dataset
    from poc.runs.run_info import rebuild_model

    info = store.read_json(rd.run_json)
    if not info:
        raise UserError(f"{rd.path}: run.json missing or unreadable")
    if info.get("family") == "baseline":
        raise UserError(f"run {rd.id} is a baseline (logistic regression): it has no network to re-evaluate; "
                        "run python -m poc baseline again instead")
    split = store.read_split(rd)
    if split is None:
        raise UserError(f"{rd.path}: split.csv missing or unreadable")
    cfg = RunConfig.from_dict(info["config"])
    spec_size = int(info["image_size"])
    model = rebuild_model(info)
    frames = {s: split[split["split"] == s].reset_index(drop=True) for s in ("val", "test")}
    sets = {s: (make_dataset(f, info["class_names"], spec_size, cfg.batch_size), f) for s, f in frames.items()}
    from poc.inference import compile_logits
    from poc.models import get_spec

    p = Prepared(cfg, get_spec(info["model"]), spec_size, split, info["class_names"], model, 0, "", None,
                 info["dataset"]["path"], info.get("pretraining", "none"))
    logits, done = compile_logits(model, spec_size), []
    for stage in store.STAGES:
        if rd.stage_weights(stage).exists():
            _load_weights(model, rd.stage_weights(stage))
            _evaluate_stage(p, rd, stage, sets, logits)
            done.append(stage)
    if not done:
        raise UserError(f"run {rd.id} has no saved stage weights to evaluate")
    return done
