"""A finished run as a predictor: rebuilt from run.json in code, given its saved weights (never unpickled)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from poc import artifacts
from poc.artifacts import RunDir
from poc.errors import UserError


@dataclass
class LoadedRun:
    rd: RunDir
    info: dict
    model: object
    spec: object
    image_size: int
    class_names: list[str]


def load_model(rd: RunDir, stage: str | None = None) -> LoadedRun:
    """The run's classifier with its final weights, or a stage's (`tl` / `ft`) when given."""
    from poc.models import build, get_spec

    info = artifacts.read_json(rd.run_json)
    if not info or "class_names" not in info:
        raise UserError(f"run {rd.id}: run.json missing, unreadable or incomplete")
    weights = rd.stage_weights(stage) if stage else rd.weights
    if not weights.exists():
        raise UserError(f"run {rd.id} has no saved weights{' for stage ' + stage if stage else ''} "
                        f"(status {info.get('status')!r})")
    size = int(info["image_size"])
    dropout = float(info.get("config", {}).get("dropout", 0.2))
    model = build(info["model"], len(info["class_names"]), size, "none", dropout=dropout)
    model.load_weights(weights)
    return LoadedRun(rd, info, model, get_spec(info["model"]), size, list(info["class_names"]))


def predict_arrays(run: LoadedRun, pixels: np.ndarray) -> tuple[np.ndarray, float]:
    """(probabilities (N, C), seconds per image) for raw pixels (N, S, S, 3)."""
    start = time.perf_counter()
    probs = np.asarray(run.model(pixels.astype(np.float32), training=False))
    return probs, (time.perf_counter() - start) / max(len(pixels), 1)


def top_k(probs: np.ndarray, class_names: list[str], k: int = 5) -> list[list[tuple[str, float]]]:
    order = np.argsort(-probs, axis=1)[:, :k]
    return [[(class_names[i], float(row[i])) for i in idx] for row, idx in zip(probs, order)]
