"""Reliability of one stage's test predictions, before and after the temperature fitted on validation."""

from __future__ import annotations

import numpy as np
import pandas as pd

from poc.analysis import stats
from poc.runs import store
from poc.runs.store import RunDir, as_number


def calibration(rd: RunDir, stage: str) -> dict | None:
    """Reliability of one stage's test predictions (poc.analysis.stats, ECE_BINS equal-width confidence bins):
    {"table": reliability_table, "ece", "temperature" (fitted on the validation split by training, from
    metrics.json; None when not recorded), "calibrated" (the table after that temperature, or None),
    "ece_calibrated", "bins", "n"}. None when the predictions or their probability columns are missing."""
    frame = store.read_predictions(rd, stage)
    classes = (store.read_json(rd.run_json) or {}).get("class_names")
    if frame is None or frame.empty or not isinstance(classes, list):
        return None
    columns = [f"prob_{c}" for c in classes]
    if not set(columns) <= set(frame.columns):
        return None
    probs = frame[columns].apply(pd.to_numeric, errors="coerce").to_numpy(float)  # (N, C)
    y = frame["label"].map({str(c): i for i, c in enumerate(classes)})
    keep = np.isfinite(probs).all(axis=1) & y.notna().to_numpy()
    probs, y = probs[keep], y[keep].to_numpy(int)
    metrics = store.read_metrics(rd, stage)[0] or {}
    temperature = as_number(metrics.get("temperature"))
    scaled = stats.apply_temperature(probs, temperature) if temperature and len(probs) else None
    return {"table": stats.reliability_table(probs, y), "ece": stats.expected_calibration_error(probs, y),
            "temperature": temperature, "calibrated": None if scaled is None else stats.reliability_table(scaled, y),
            "ece_calibrated": None if scaled is None else stats.expected_calibration_error(scaled, y),
            "bins": stats.ECE_BINS, "n": int(len(y))}
