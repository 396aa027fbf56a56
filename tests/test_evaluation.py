"""Metrics from the evaluation module against scikit-learn and hand-worked examples."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from sklearn.metrics import accuracy_score, f1_score, log_loss, top_k_accuracy_score

from poc.analysis.evaluation import confusion_matrix, evaluate_probabilities, per_class_report


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


def test_accuracy_interval_is_wilson_and_says_so():
    frame, probs, names, y = random_case(n=40)
    metrics = evaluate_probabilities(frame, probs, names)["metrics"]
    k = int((probs.argmax(1) == y).sum())
    expected = sps.binomtest(k, 40).proportion_ci(method="wilson")
    assert metrics["accuracy_ci95"] == pytest.approx([expected.low, expected.high], abs=1e-12)
    assert metrics["accuracy_ci_method"] == "wilson"


def test_a_perfect_test_score_still_has_an_interval_below_one():
    frame = pd.DataFrame({"path": [f"{i}.png" for i in range(40)], "label": ["x", "y"] * 20})
    metrics = evaluate_probabilities(frame, np.eye(2)[[0, 1] * 20], ["x", "y"])["metrics"]
    assert metrics["accuracy"] == 1.0
    assert metrics["accuracy_ci95"][0] == pytest.approx(0.912, abs=5e-4) and metrics["accuracy_ci95"][1] == 1.0


def test_macro_f1_averages_only_the_classes_in_the_test_split():
    frame, probs, names, y = random_case(n=120, classes=6)
    keep = y != 4  # class c4 has no test image, yet the model may still predict it
    frame, probs, y = frame[keep].reset_index(drop=True), probs[keep], y[keep]
    metrics = evaluate_probabilities(frame, probs, names)["metrics"]
    present = sorted(set(y))
    assert 4 in set(probs.argmax(1)) and len(present) == 5
    assert metrics["macro_f1"] == pytest.approx(f1_score(y, probs.argmax(1), labels=present, average="macro"))
    assert metrics["macro_f1_classes"] == 5


def test_ece_in_metrics_hand_worked():
    # confidences 0.9 (right), 0.78 (wrong), 0.3 (right), 0.3 (wrong) over 15 bins: 0.9 alone in
    # [13/15, 14/15) (|1 - 0.9|), 0.78 alone in [11/15, 12/15) (|0 - 0.78|), both 0.3 in [4/15, 5/15)
    # (|0.5 - 0.3|, weight 2): ECE = (0.1 + 0.78 + 2 * 0.2) / 4
    frame = pd.DataFrame({"path": list("abcd"), "label": ["x", "x", "y", "y"]})
    rest = 0.7 / 4  # the 0.3 rows share the rest among the other four classes
    probs = np.array([[0.9, 0.1, 0, 0, 0, 0], [0.22, 0.78, 0, 0, 0, 0], [rest, 0.3, rest, rest, rest, 0],
                      [0.3, 0.29, 0.41 / 4, 0.41 / 4, 0.41 / 4, 0.41 / 4]])
    metrics = evaluate_probabilities(frame, probs, ["x", "y", "z", "u", "v", "w"])["metrics"]
    assert metrics["ece"] == pytest.approx((0.1 + 0.78 + 2 * 0.2) / 4)
    assert metrics["ece_bins"] == 15


def test_metrics_are_json_without_numpy_types():
    frame, probs, names, _ = random_case(n=30)
    metrics = evaluate_probabilities(frame, probs, names)["metrics"]
    assert json.loads(json.dumps(metrics, allow_nan=False)) == metrics


def test_predictions_frame_keeps_the_order_and_a_column_per_class():
    frame, probs, names, _ = random_case(n=20, classes=4)
    predictions = evaluate_probabilities(frame, probs, names)["predictions"]
    assert predictions["path"].tolist() == frame["path"].tolist()
    assert [c for c in predictions.columns if c.startswith("prob_")] == [f"prob_{n}" for n in names]


def _sure_case():
    """Two right answers; the first with a float32 softmax output just above 1 (1.0000001 -> 1.00000012)."""
    frame = pd.DataFrame({"path": ["a.png", "b.png"], "label": ["x", "y"]})
    probs = np.array([[1.0000001, 0.0], [0.4, 0.6]], dtype=np.float32)
    assert probs[0, 0] > 1.0  # the case: float32 cannot hold 1.0000001 as 1
    return frame, probs


def test_a_probability_above_one_is_written_as_at_most_one(tmp_path):
    from poc.runs import store
    from poc.runs.store import RunDir

    frame, probs = _sure_case()
    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    rd.write_eval("ft", **evaluate_probabilities(frame, probs, ["x", "y"]))
    written = store.read_predictions(rd, "ft")
    assert written["confidence"].iloc[0] == 1.0 and f"{written['confidence'].iloc[0]:.1%}" == "100.0%"
    assert written["confidence"].iloc[1] == pytest.approx(0.6)
    assert (written[["prob_x", "prob_y"]] <= 1.0).all().all() and written["prob_x"].iloc[0] == 1.0
    assert written["pred"].tolist() == ["x", "y"]  # clipping moves no prediction


def test_a_probability_above_one_still_counts_in_the_calibration_error():
    frame, probs = _sure_case()
    metrics = evaluate_probabilities(frame, probs, ["x", "y"])["metrics"]
    assert metrics["ece"] == pytest.approx((0.0 + 0.4) / 2)  # both images: |1 - 1| and |1 - 0.6|, half each


def test_top_k_shows_a_probability_above_one_as_one():
    from poc.inference import top_k

    _, probs = _sure_case()
    ranked = top_k(probs, ["x", "y"], k=2)
    assert ranked[0] == [("x", 1.0), ("y", 0.0)] and ranked[1][0] == ("y", pytest.approx(0.6))
