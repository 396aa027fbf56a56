"""One run from config to finished run directory: prepare (every user input resolved first), train, resume.

Phase 1 (transfer learning) trains the new head on a frozen backbone; phase 2 (fine-tuning) unfreezes the
backbone above the cutoff at a low learning rate. Each phase early-stops on val_loss with the best weights
restored and is followed by an evaluation of its stage on the test split, which is never used for a choice.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from pathlib import Path

import numpy as np
import pandas as pd

from poc.runs import store
from poc.runs.run_info import executor_record, recorded_split
from poc.runs.store import RunDir
from poc.config import RunConfig
from poc.errors import Cancelled, UserError
from poc.train.plan import Checked, Prepared, validate

log = logging.getLogger("poc.train.training")


# ---------------------------------------------------------------- preparation (no run dir yet)

def prepare(checked: Checked, strategy=None, split_seed: int | None = None) -> Prepared:
    """The run's split and classifier from its validated settings (`validate(config, runs_dir, probe=False)`: the
    cutoff is resolved on the model built here). `split_seed` seeds the split and the --train-fraction share
    (default: config.seed); a seed study passes one split seed to runs of different config.seed, so they train
    and test on the same images."""
    from poc.data.split import scan_and_split
    from poc.models import pretraining_kind

    config = checked.config
    _seed_everything(config.seed)  # before anything random: the head's and a random backbone's initial weights
    if checked.source:
        split, class_names, data_root, pretraining = _reuse_run(checked)
        split_seed = None
    else:
        split_seed = config.seed if split_seed is None else int(split_seed)
        pretraining = pretraining_kind(config.weights)
        split = scan_and_split(config.data, val=config.val, test=config.test, seed=split_seed)
        class_names = split.attrs["class_names"]
        split = subsample_train(split, config.train_fraction, split_seed)
        data_root = str(Path(config.data).resolve())
    if config.frozen_random:
        log.warning("warning: --weights none freezes a randomly initialised backbone in phase 1: its features "
                    "are nearly constant, so expect near-chance accuracy until phase 2. Use --weights imagenet "
                    "(download) or demo (offline) for transfer learning")
    from poc.train.distribute import check_even_batches

    check_even_batches(split["split"].value_counts().to_dict(), config.batch_size, strategy)
    model, cutoff_index, cutoff_value = _classifier(checked, len(class_names), strategy)
    return Prepared(config, checked.spec, checked.image_size, split, class_names, model, cutoff_index, cutoff_value,
                    checked.source, data_root, pretraining, strategy, split_seed)


def _classifier(checked: Checked, num_classes: int, strategy) -> tuple[object, int, str]:
    """(the run's classifier in its phase-1 state, its cutoff index, the cutoff as text). With --from-run every
    weight comes from the source run's phase-1 file: nothing to download here."""
    from poc.models import build
    from poc.models.cutoffs import cutoff_text, freeze_backbone, resolve_cutoff
    from poc.train.distribute import scope

    config, spec = checked.config, checked.spec
    with scope(strategy):  # mirrored variables when distributed
        model = build(config.model, num_classes, checked.image_size, "none" if checked.source else config.weights,
                      dropout=config.dropout)
    cutoff_index = resolve_cutoff(model.get_layer("backbone"), config.fine_tune_at, spec)
    freeze_backbone(model)
    return model, cutoff_index, cutoff_text(config.fine_tune_at, spec)


def subsample_train(split: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """Keep `fraction` of each class's training rows (at least one), seeded; validation and test unchanged, and
    `attrs["split_fingerprint"]` keeps the full split's fingerprint, so runs of a data-size study stay paired.
    Each class's rows are taken in one seeded order, so with one seed a smaller share is a subset of a larger."""
    from poc.data.split import split_fingerprint

    if fraction >= 1:
        return split
    rng = np.random.default_rng([seed, 7919])
    keep = []
    for _, rows in split[split["split"] == "train"].groupby("label"):
        count = max(1, int(round(len(rows) * fraction)))
        keep.extend(rng.permutation(rows.index.to_numpy())[:count])
    out = split[(split["split"] != "train") | split.index.isin(keep)].reset_index(drop=True)
    out.attrs = {**split.attrs, "split_fingerprint": split_fingerprint(split), "train_fraction": fraction}
    return out


def _seed_everything(seed: int) -> None:
    import keras

    keras.utils.set_random_seed(seed)  # Python, NumPy and the backend's global generators


def _reuse_run(checked: Checked):
    """(split, class names, dataset path, pretraining) of the --from-run source that `validate` checked."""
    from poc.models import pretraining_kind

    config, source, info = checked.config, checked.source, checked.source_info
    split = recorded_split(source, info)
    if split is None:
        raise UserError(f"--from-run {source.id}: split.csv missing or unreadable")
    if config.weights not in ("none", RunConfig(data="").weights) and config.weights != info.get("weights"):
        log.warning("--weights is ignored with --from-run: phase-1 weights come from %s", source.id)
    pretraining = info.get("pretraining") or pretraining_kind(str(info.get("weights", "none")))
    return split, list(info["class_names"]), (info.get("dataset") or {}).get("path", config.data), pretraining


# ---------------------------------------------------------------- the run

def train(config: RunConfig, runs_dir: Path | str | None = None, run_id: str | None = None,
          study: dict | None = None, split_seed: int | None = None) -> RunDir:
    """Prepare, then train and evaluate into a new run directory; returns it. UserError before any write.
    `study`: the run.json `study` block of a run planned by poc.train.studies; `split_seed`: see prepare()."""
    runs_dir = Path(runs_dir) if runs_dir else store.default_runs_dir()
    run_id_given = run_id is not None
    run_id = run_id or store.new_run_id(config.model)
    rd = store.run_dir(runs_dir, run_id)
    if run_id_given:
        # Launched by the dashboard: the run is visible (queued) at once, and a bad input is recorded in it.
        rd.create()
        rd.write_run({"id": rd.id, "name": config.name or rd.id, "status": "queued",
                      "created": store.utc_now(), "config": config.to_dict(), "model": config.model,
                      "weights": config.weights, "pid": os.getpid(), "error": None})
    try:
        from poc.data.scan import check_dataset_folder
        from poc.device import configure
        from poc.train.distribute import make_strategy, split_cpu_from_env

        checked = validate(config, runs_dir, probe=False)  # settings and folder before TensorFlow's import
        if not checked.source:
            check_dataset_folder(config.data)
        split_cpu_from_env()
        speedups = configure(config.mixed_precision, config.jit_compile)
        prepared = prepare(checked, make_strategy(config.distribute), split_seed=split_seed)
    except Exception as exc:
        if run_id_given:
            rd.update_run(status="failed", error=str(exc), finished=store.utc_now())
        raise
    rd.path.mkdir(parents=True, exist_ok=True)
    info = _initial_run_info(prepared, rd, speedups)
    if study is not None:  # the parameters this run's final phase trains: what a sweep plots
        info["study"] = {**study, "trainable_params": info["params"]["trainable_ft" if config.ft_epochs > 0
                                                                      else "trainable_tl"]}
    if run_id_given:
        info["created"] = (store.read_json(rd.run_json) or {}).get("created", info["created"])
    rd.write_run(info)
    store.write_split(rd.split_csv, prepared.split)
    return _execute(prepared, rd, runs_dir, speedups, resume=False)


def resume(ref: str, runs_dir: Path | str | None = None, executor_alive: bool | None = None) -> RunDir:
    """Continue an interrupted (killed, failed or cancelled) run from its last completed epoch, in its own
    directory: finished phases are kept, the phase in progress restarts from its checkpoint."""
    from poc.device import configure
    from poc.runs.status import effective_status

    runs_dir = Path(runs_dir) if runs_dir else store.default_runs_dir()
    rd = store.find_run(ref, runs_dir)
    info = store.read_json(rd.run_json) if rd else None
    if not info or not isinstance(info.get("config"), dict):
        raise UserError(f"--resume {ref}: no such run in {runs_dir} (or its run.json is unreadable)")
    status = effective_status(store.load_run(rd.path), executor_alive)  # a remote run: its executor's word
    if status == "completed":
        raise UserError(f"run {rd.id} already completed; there is nothing to resume")
    if status in ("running", "queued"):
        raise UserError(f"run {rd.id} is still {status} (process {info.get('pid')}); cancel it or wait")
    if store.read_split(rd) is None or "class_names" not in info:
        raise UserError(f"run {rd.id} stopped before its split was written; start a new run instead")
    config = RunConfig.from_dict(info["config"])
    if config.distribute == "multiworker":
        raise UserError(f"run {rd.id} trained on several machines (--distribute multiworker), whose workers "
                        "cannot be resumed from one run directory; start the run again (same flags)")
    from poc.train.distribute import make_strategy, split_cpu_from_env

    split_cpu_from_env()
    speedups = configure(config.mixed_precision, config.jit_compile)
    prepared = _prepare_resume(config, rd, info, runs_dir, make_strategy(config.distribute))
    rd.update_run(resumed=[*info.get("resumed", []), store.utc_now()], error=None, finished=None)
    log.info("resuming run %s (was %s)", rd.id, status)
    return _execute(prepared, rd, runs_dir, speedups, resume=True)


def _prepare_resume(config: RunConfig, rd: RunDir, info: dict, runs_dir: Path, strategy=None) -> Prepared:
    checked = validate(config, runs_dir, probe=False)
    _seed_everything(config.seed)
    class_names = list(info["class_names"])
    model, cutoff_index, cutoff_value = _classifier(checked, len(class_names), strategy)
    return Prepared(checked.config, checked.spec, checked.image_size, store.read_split(rd), class_names, model,
                    cutoff_index, cutoff_value, checked.source, info.get("dataset", {}).get("path", config.data),
                    info.get("pretraining", "none"), strategy)


def _execute(prepared: Prepared, rd: RunDir, runs_dir: Path, speedups: dict, resume: bool) -> RunDir:
    """The run's life once its directory exists: the device lock, the phases, and a final status always written."""
    from poc.train.phases import run_phases
    from poc.runs.writer import attach_log, cancel_on_sigterm, cancel_requested, device_slot

    handler = attach_log(rd)
    try:
        with device_slot(runs_dir, rd), cancel_on_sigterm():
            # pid, host and executor: who trains it now (a resume may run elsewhere, poc.runs.status reads them)
            rd.update_run(status="running", pid=os.getpid(), host=socket.gethostname(), executor=executor_record(),
                          **({} if resume else {"started": store.utc_now()}))
            rd.write_progress({"phase": "resuming" if resume else "starting", "epoch": None, "epochs": None,
                               "step": 0, "steps": None, "metrics": {}, "eta_seconds": None})
            run_phases(prepared, rd, speedups, resume=resume)
        rd.update_run(status="completed", finished=store.utc_now())
        log.info("run %s completed", rd.id)
    except BaseException as exc:
        if not (isinstance(exc, (Cancelled, KeyboardInterrupt)) or cancel_requested()):
            _fail(exc, rd)
        rd.update_run(status="cancelled", finished=store.utc_now(), error="cancelled by the user")
        log.warning("run %s cancelled", rd.id)
        raise Cancelled(rd.id) from None
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    return rd


def _fail(exc: BaseException, rd: RunDir) -> None:
    """Records why the run failed and raises: a storage error as a UserError with the resume command, anything
    else as itself (its traceback goes to train.log)."""
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRORS:
        message = storage_message(exc, rd)
        _record_failure(rd, message)
        raise UserError(message) from None
    if isinstance(exc, OSError):
        _record_failure(rd, f"{type(exc).__name__}: {exc}")
    else:
        _record_failure(rd, str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}",
                        trace=True)
    raise exc


# Writes that fail for a reason the user can fix: no space, quota, read-only file system, permission.
STORAGE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def storage_message(exc: OSError, rd: RunDir) -> str:
    where = exc.filename or rd.path
    return (f"could not write the run's files ({os.strerror(exc.errno)}: {where}). Files written before are "
            f"intact (every write is a temp file then a rename). Free space or fix permissions on "
            f"{rd.path.parent}, then continue with: python -m poc train --resume {rd.id}")


def _record_failure(rd: RunDir, reason: str, trace: bool = False) -> None:
    """Status `failed` with the reason, when the disk still takes it (it may be the disk that failed)."""
    try:
        rd.update_run(status="failed", finished=store.utc_now(), error=reason)
    except OSError:
        log.error("could not record the failure in %s either", rd.run_json)
    log.error("run %s failed: %s", rd.id, reason, exc_info=trace)  # the traceback goes to train.log only


def _initial_run_info(p: Prepared, rd: RunDir, speedups: dict) -> dict:
    from poc.device import describe_device, versions
    from poc.train.distribute import describe
    from poc.models.cutoffs import trainable_count, unfreeze_from, freeze_backbone
    from poc.runs.run_info import new_run_info
    from poc.runs.writer import parameter_megabytes

    model = p.model
    total = int(model.count_params())
    trainable_tl = trainable_count(model)
    unfreeze_from(model, p.cutoff_index)
    trainable_ft = trainable_count(model)
    freeze_backbone(model)
    return new_run_info(
        rd, name=p.config.name, model=p.config.model, family=p.spec.family, explanation=p.spec.explanation,
        config={**p.config.to_dict(), "image_size": p.image_size}, split=p.split, class_names=p.class_names,
        data_path=p.data_root, image_size=p.image_size,
        weights=p.config.weights if not p.source_run else f"run:{p.source_run.id}", pretraining=p.pretraining,
        frozen_random=p.config.frozen_random, from_run=p.source_run.id if p.source_run else None,
        params={"total": total, "trainable_tl": trainable_tl, "trainable_ft": trainable_ft,
                "size_mb": parameter_megabytes(model)},
        fine_tune_at=p.cutoff_value, seed=p.config.seed, device=describe_device(), versions=versions(),
        fine_tune_at_index=p.cutoff_index, speedups=speedups, distribute=describe(p.strategy),
        split_seed=p.split_seed)
