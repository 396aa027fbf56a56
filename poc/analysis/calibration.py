"""Reliability of one stage's test predictions, before and after the temperature fitted on validation logits.

The temperature is fitted on the validation split's pre-softmax outputs (eval/<stage>/logits.npz) and applied
to the test split's: never to probabilities read back from predictions.csv, whose rounding near 0 and 1 loses
the margins that decide T (arXiv 1706.04599).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from poc.analysis import stats
from poc.runs import store
from poc.runs.store import RunDir

MISSING_LOGITS = ("no logits.npz for this stage (trained before ViTrine kept pre-softmax outputs): "
                  "`python -m poc evaluate {run}` writes it and the temperature")


def temperature_metrics(val_logits: np.ndarray, y_val: np.ndarray, test_logits: np.ndarray,
                        y_test: np.ndarray) -> dict:
    """{"temperature", "ece_calibrated"}: T fitted on the validation logits only, the test ECE after it; {}
    without a validation or test image."""
    if not len(y_val) or not len(y_test):
        return {}
    temperature = stats.fit_temperature_logits(val_logits, np.asarray(y_val, dtype=int))
    calibrated = stats.softmax_with_temperature(test_logits, temperature)
    return {"temperature": float(temperature),
            "ece_calibrated": float(stats.expected_calibration_error(calibrated, np.asarray(y_test, dtype=int)))}


def _test_labels(frame: pd.DataFrame, classes: list) -> pd.Series:
    return frame["label"].map({str(c): i for i, c in enumerate(classes)})


def calibration(rd: RunDir, stage: str) -> dict | None:
    """Reliability of one stage's test predictions (ECE_BINS equal-width confidence bins): {"table", "ece",
    "temperature", "calibrated" (the table after T, or None), "ece_calibrated", "bins", "n", "missing"
    (why there is no calibrated curve, or None)}. With logits.npz every number comes from the logits; without
    it, the uncalibrated curve comes from predictions.csv and `missing` says how to add the file. None when the
    predictions are missing."""
    frame = store.read_predictions(rd, stage)
    classes = (store.read_json(rd.run_json) or {}).get("class_names")
    if frame is None or frame.empty or not isinstance(classes, list):
        return None
    y = _test_labels(frame, classes)
    logits = store.read_logits(rd, stage)
    if logits is not None and len(logits["test"]) == len(frame) and logits["test"].shape[1] == len(classes):
        keep = y.notna().to_numpy()
        test, y_test = logits["test"][keep], y[keep].to_numpy(int)
        probs = stats.softmax_with_temperature(test, 1.0)
        fitted = temperature_metrics(logits["val"], logits["val_labels"], test, y_test)
        temperature = fitted.get("temperature")
        scaled = stats.softmax_with_temperature(test, temperature) if temperature else None
        missing = None
    else:
        columns = [f"prob_{c}" for c in classes]
        if not set(columns) <= set(frame.columns):
            return None
        probs = frame[columns].apply(pd.to_numeric, errors="coerce").to_numpy(float)  # (N, C)
        keep = np.isfinite(probs).all(axis=1) & y.notna().to_numpy()
        probs, y_test = probs[keep], y[keep].to_numpy(int)
        temperature, scaled, missing = None, None, MISSING_LOGITS.format(run=rd.id)
    return {"table": stats.reliability_table(probs, y_test), "ece": stats.expected_calibration_error(probs, y_test),
            "temperature": temperature,
            "calibrated": None if scaled is None else stats.reliability_table(scaled, y_test),
            "ece_calibrated": None if scaled is None else stats.expected_calibration_error(scaled, y_test),
            "bins": stats.ECE_BINS, "n": int(len(y_test)), "missing": missing}
