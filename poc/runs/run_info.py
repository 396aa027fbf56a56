"""What run.json says: the one builder of a new run's run.json, and the rules that read one back.

    new_run_info    a new run's run.json (a trained run and a baseline alike; each adds its own keys)
    run_label       how a run is named on the pages and in the report
    best_epochs     each phase's best epoch: the recorded one, else the epoch with the lowest val_loss
    rebuild_model   the classifier a run.json describes, with random weights (the caller loads the saved ones)
    recorded_image_size  the input size a run trained at
    executor_record the executor block (local queue or a Ray cluster) of the process writing run.json

TensorFlow-free at import (the dashboard reads labels and best epochs); only `rebuild_model` builds a model.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping

import pandas as pd

from poc.config import RunConfig
from poc.data.split import held_out_fingerprint, split_fingerprint
from poc.runs.store import RunDir, read_split, utc_now


def new_run_info(rd: RunDir, *, model: str, family: str, config: dict, split: pd.DataFrame, class_names: list[str],
                 data_path: str, image_size: int, weights: str, pretraining: str, params: dict, seed: int,
                 device: str, versions: dict, name: str | None = None, status: str = "queued",
                 started: bool = False, explanation: str | None = None, frozen_random: bool = False,
                 from_run: str | None = None, carved: dict | None = None, fine_tune_at: str | None = None,
                 final_stage: str | None = None, timing: dict | None = None, **extra) -> dict:
    """run.json of a run about to start, created now (and `started` now when asked): the keys docs/artifacts.md
    lists, `dataset` computed from the `split` it trains on (its `attrs` keep the fingerprint of a subsampled
    split's full split and the sentences of carved splits, unless `carved` is given), then `extra` keys."""
    created = utc_now()
    counts = split["split"].value_counts().to_dict()
    return {
        "id": rd.id,
        "name": name or rd.id,
        "status": status,
        "created": created,
        "started": created if started else None,
        "finished": None,
        "config": config,
        "dataset": {"path": data_path,
                    "split_fingerprint": split.attrs.get("split_fingerprint") or split_fingerprint(split),
                    "test_fingerprint": held_out_fingerprint(split),
                    "counts": {s: int(counts.get(s, 0)) for s in ("train", "val", "test")},
                    "num_classes": len(class_names),
                    "carved": dict(split.attrs.get("carved") or {}) if carved is None else dict(carved)},
        "class_names": list(class_names),
        "model": model,
        "family": family,
        "explanation": explanation,
        "image_size": image_size,
        "weights": weights,
        "pretraining": pretraining,
        "frozen_random": frozen_random,
        "from_run": from_run,
        "params": params,
        "final_stage": final_stage,
        "fine_tune_at": fine_tune_at,
        "device": device,
        "versions": versions,
        "seed": seed,
        "timing": dict(timing or {}),
        "best_epoch": {},
        "error": None,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "executor": executor_record(),
        **extra,
    }


def executor_record() -> dict:
    """run.json's `executor` block: {kind, address, job_id} from VITRINE_EXECUTOR, which the launcher sets for
    the process it starts (poc.launch.executors); a run started by hand is {"kind": "local", ...}."""
    try:
        record = json.loads(os.environ.get("VITRINE_EXECUTOR") or "{}")
    except ValueError:
        record = {}
    record = record if isinstance(record, dict) else {}
    return {"kind": record.get("kind") or "local", "address": record.get("address"), "job_id": record.get("job_id")}


def recorded_split(rd: RunDir, info: Mapping) -> pd.DataFrame | None:
    """A run's split.csv with the fingerprint and carved notes its run.json recorded (None when unreadable): what
    a run built on it (--from-run, a sweep's phase 2, a baseline) records as its own split. A --train-fraction
    run's split.csv holds its share of the training rows while its fingerprint names the full split, so the
    fingerprint cannot be recomputed from the file."""
    split = read_split(rd)
    if split is None:
        return None
    dataset = info.get("dataset") if isinstance(info.get("dataset"), Mapping) else {}
    split.attrs.update({key: dataset[key] for key in ("split_fingerprint", "carved") if dataset.get(key)})
    return split


def run_label(info: Mapping, run_id: str) -> str:
    """'<model> · <name>', or just the name when it already names the model; the name defaults to the id.
    `info`: run.json, or a leaderboard row (its `model` and `name`)."""
    model, name = info.get("model"), info.get("name")
    name = name if isinstance(name, str) and name else run_id
    if not isinstance(model, str) or not model or model in str(name):
        return str(name)
    return f"{model} · {name}"


def best_epochs(history: pd.DataFrame, recorded) -> dict[str, int]:
    """{phase: best epoch} of history.csv: run.json's `best_epoch` (`recorded`) where it names an epoch of the
    phase, else the epoch with the lowest val_loss of the phase; a phase without any val_loss has none."""
    recorded = recorded if isinstance(recorded, dict) else {}
    best = {}
    for phase, rows in history.groupby("phase", sort=False):
        epoch = recorded.get(phase)
        if not isinstance(epoch, (int, float)) or epoch not in set(rows["epoch"]):
            losses = rows["val_loss"]
            epoch = rows.loc[losses.idxmin(), "epoch"] if losses.notna().any() else None
        if epoch is not None:
            best[phase] = int(epoch)
    return best


def rebuild_model(info: dict):
    """The classifier `info` (a run's run.json) describes: its model, class count, image size and dropout, with
    random weights and no download; the caller loads the run's saved weights. Assumes `model`, `class_names` and
    an image size (`image_size`, else `config.image_size`) are there: callers check with their own message."""
    from poc.models import build

    config = info.get("config") if isinstance(info.get("config"), dict) else {}
    dropout = config.get("dropout")
    return build(info["model"], len(info["class_names"]), recorded_image_size(info), "none",
                 dropout=RunConfig.dropout if dropout is None else float(dropout))


def recorded_image_size(info: dict) -> int | None:
    """The input size a run trained at: run.json's `image_size`, else its config's; None when neither is a
    whole number."""
    config = info.get("config") if isinstance(info.get("config"), dict) else {}
    size = info.get("image_size") or config.get("image_size")
    return size if isinstance(size, int) and not isinstance(size, bool) else None
