"""Metrics from the evaluation module against scikit-learn and hand-worked examples."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, log_loss, top_k_accuracy_score

from poc.evaluation import bootstrap_accuracy_ci, confusion_matrix, evaluate_probabilities, per_class_report


def random_case(seed=0, n=200, classes=7):
    rng = np.random.default_rng(seed)
    names = [f"c{i}" for i in range(classes)]
    y = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes)) + 2.0 * np.eye(classes)[y] * rng.random((n, 1))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    frame = pd.DataFrame({"path": [f"img{i}.png" for i in range(n)], "label": [names[i] for i in y]})
    return frame, probs, names, y


def test_hand_worked_confusion_matrix_and_report():
    cm = confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 2, 0]), 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    report = per_class_report(cm, ["a", "b", "c"])
    np.testing.assert_allclose(report["precision"], [0.5, 0.5, 1.0])
    np.testing.assert_allclose(report["recall"], [0.5, 1.0, 2 / 3])
    np.testing.assert_allclose(report["f1"], [0.5, 2 / 3, 0.8])


def test_metrics_equal_scikit_learn():
    frame, probs, names, y = random_case()
    metrics = evaluate_probabilities(frame, probs, names)["metrics"]
    pred = probs.argmax(1)
    assert metrics["accuracy"] == accuracy_score(y, pred)
    assert np.isclose(metrics["macro_f1"], f1_score(y, pred, average="macro"))
    assert np.isclose(metrics["weighted_f1"], f1_score(y, pred, average="weighted"))
    assert np.isclose(metrics["top5_accuracy"], top_k_accuracy_score(y, probs, k=5))
    assert np.isclose(metrics["loss"], log_loss(y, probs), rtol=1e-6)
    assert metrics["n"] == 200


def test_perfect_class_share_counts_classes_with_f1_one():
    frame = pd.DataFrame({"path": list("abcdef"), "label": ["x", "x", "y", "y", "z", "z"]})
    probs = np.eye(3)[[0, 0, 1, 2, 2, 2]]  # x perfect; y and z have one mistake between them
    metrics = evaluate_probabilities(frame, probs, ["x", "y", "z"])["metrics"]
    assert metrics["perfect_class_share"] == 1 / 3
    assert "top5_accuracy" not in metrics  # only above five classes


def test_bootstrap_interval_brackets_the_accuracy_and_narrows_with_n():
    rng = np.random.default_rng(1)
    small, large = rng.random(50) < 0.7, rng.random(5000) < 0.7
    lo_s, hi_s = bootstrap_accuracy_ci(small)
    lo_l, hi_l = bootstrap_accuracy_ci(large)
    assert lo_s <= small.mean() <= hi_s and lo_l <= large.mean() <= hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 5
    # the normal approximation sqrt(p(1-p)/n) * 1.96 is an independent yardstick for the width
    assert np.isclose(hi_l - lo_l, 2 * 1.96 * np.sqrt(0.7 * 0.3 / 5000), rtol=0.15)


def test_predictions_frame_keeps_the_order_and_a_column_per_class():
    frame, probs, names, _ = random_case(n=20, classes=4)
    predictions = evaluate_probabilities(frame, probs, names)["predictions"]
    assert predictions["path"].tolist() == frame["path"].tolist()
    assert [c for c in predictions.columns if c.startswith("prob_")] == [f"prob_{n}" for n in names]
