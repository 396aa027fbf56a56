"""Test-split evaluation as pure functions of labels and probabilities; the caller writes the artifacts.

Metrics are computed here from the confusion matrix (tests check them against scikit-learn independently);
intervals and calibration come from poc.analysis.stats.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from poc.analysis import stats


def as_probabilities(probs: np.ndarray) -> np.ndarray:
    """`probs` clipped to [0, 1] as float64: a float32 softmax can return 1.0000001 for a sure prediction, which
    would print as a confidence above 100% and fall outside the last [0, 1] calibration bin. The argmax (the
    prediction) does not change: at most one probability of a row can exceed 1/2."""
    return np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts, rows = true class, columns = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def per_class_report(cm: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """Precision, recall, F1 and support per class; 0 where undefined (no predictions / no support)."""
    tp = np.diag(cm).astype(float)
    predicted = cm.sum(axis=0).astype(float)
    support = cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return pd.DataFrame({"class": class_names, "precision": precision, "recall": recall, "f1": f1,
                         "support": support})


def stage_metrics(y_true: np.ndarray, probs: np.ndarray, report: pd.DataFrame, seed: int = 0) -> dict:
    """metrics.json: accuracy with its Wilson 95% interval, macro F1 over the classes present in the test
    split, weighted F1, ECE, top-5, loss, perfect-class share. `seed` is kept for callers; nothing here is
    random any more (the interval is exact, not bootstrapped)."""
    y_true, probs = np.asarray(y_true), as_probabilities(probs)
    y_pred = probs.argmax(axis=1)
    correct = y_pred == y_true
    support = report["support"].to_numpy(dtype=float)
    present = report[report["support"] > 0]  # a class absent from the test split has no F1, not an F1 of 0
    eps = 1e-7
    metrics = {
        "accuracy": float(correct.mean()) if len(correct) else float("nan"),
        "accuracy_ci95": list(stats.accuracy_interval(int(correct.sum()), len(correct), method="wilson")),
        "accuracy_ci_method": "wilson",
        "macro_f1": float(present["f1"].mean()) if len(present) else float("nan"),
        "macro_f1_classes": int(len(present)),
        "weighted_f1": float((report["f1"] * support).sum() / support.sum()) if support.sum() else 0.0,
        "loss": float(-np.log(np.clip(probs[np.arange(len(y_true)), y_true], eps, 1.0)).mean()),
        "ece": stats.expected_calibration_error(probs, y_true, bins=stats.ECE_BINS),
        "ece_bins": stats.ECE_BINS,
        "n": int(len(y_true)),
        "perfect_class_share": float((present["f1"] >= 1.0 - 1e-12).mean()),
    }
    if probs.shape[1] > 5:
        top5 = np.argsort(-probs, axis=1)[:, :5]
        metrics["top5_accuracy"] = float((top5 == y_true[:, None]).any(axis=1).mean())
    return metrics


def predictions_frame(frame: pd.DataFrame, probs: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """predictions.csv: path, label, pred, confidence, prob_<class>..., in the test split's order; confidence and
    probabilities clipped to [0, 1] (as_probabilities)."""
    probs = as_probabilities(probs)
    pred = probs.argmax(axis=1)
    out = pd.DataFrame({
        "path": frame["path"].to_numpy(),
        "label": frame["label"].to_numpy(),
        "pred": [class_names[i] for i in pred],
        "confidence": probs.max(axis=1),
    })
    for i, name in enumerate(class_names):
        out[f"prob_{name}"] = probs[:, i]
    return out


def evaluate_probabilities(frame: pd.DataFrame, probs: np.ndarray, class_names: list[str],
                           seed: int = 0) -> dict:
    """Everything a stage writes, from the test frame and the model's probabilities."""
    index = {name: i for i, name in enumerate(class_names)}
    y_true = np.array([index[label] for label in frame["label"]])
    cm = confusion_matrix(y_true, probs.argmax(axis=1), len(class_names))
    report = per_class_report(cm, class_names)
    return {
        "predictions": predictions_frame(frame, probs, class_names),
        "confusion": pd.DataFrame(cm, index=pd.Index(class_names, name="true"), columns=class_names),
        "report": report,
        "metrics": stage_metrics(y_true, probs, report, seed=seed),
    }


def loss_and_accuracy(probs: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Cross-entropy as Keras computes it (probabilities clipped at 1e-7) and accuracy: the validation figures
    that choose a run's final stage and a baseline's regularisation. (nan, nan) without labels."""
    if not len(y):
        return float("nan"), float("nan")
    picked = np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0)
    return float(-np.log(picked).mean()), float((probs.argmax(axis=1) == y).mean())
