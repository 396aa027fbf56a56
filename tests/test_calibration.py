"""poc.analysis.calibration: the temperature comes from the stored logits (never from probabilities read back
from predictions.csv), and a run without logits.npz says how to add them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import log_softmax, softmax

from poc.analysis.calibration import calibration
from poc.analysis.evaluation import evaluate_probabilities
from poc.runs import store

CLASSES = ["a", "b", "c"]


def _run(tmp_path, margin: float, with_logits: bool = True) -> tuple[store.RunDir, np.ndarray, np.ndarray]:
    """A confident model (logit margins of `margin`) that is right on 70% of the images."""
    rng = np.random.default_rng(0)
    rd = store.RunDir(tmp_path / "run").create()
    rd.write_run({"id": "run", "status": "completed", "class_names": CLASSES})

    def logits(n):
        y = rng.integers(0, 3, n)
        pred = np.where(rng.random(n) < 0.7, y, (y + 1) % 3)
        z = rng.normal(0, 1, (n, 3))
        z[np.arange(n), pred] += margin
        return z, y

    (val, y_val), (test, y_test) = logits(300), logits(200)
    frame = pd.DataFrame({"path": [f"/t/{i}.png" for i in range(200)], "label": np.array(CLASSES)[y_test]})
    rd.write_eval("tl", **evaluate_probabilities(frame, softmax(test, axis=1), CLASSES))
    if with_logits:
        rd.write_logits("tl", val, y_val, test)
    return rd, val, y_val


def test_the_temperature_of_confident_logits_is_their_validation_nll_minimum(tmp_path):
    rd, val, y_val = _run(tmp_path, margin=25.0)  # probabilities below 1e-7: clipping would bias T
    result = calibration(rd, "tl")
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 4001))
    nll = [-log_softmax(val / t, axis=1)[np.arange(len(y_val)), y_val].mean() for t in grid]
    at_t = -log_softmax(val / result["temperature"], axis=1)[np.arange(len(y_val)), y_val].mean()
    assert at_t <= min(nll) + 1e-3 and result["temperature"] > 8  # clipping at 1e-7 biased T low here
    assert result["missing"] is None and result["calibrated"] is not None


def test_a_run_without_logits_says_how_to_add_them_instead_of_a_calibrated_curve(tmp_path):
    rd, _, _ = _run(tmp_path, margin=3.0, with_logits=False)
    result = calibration(rd, "tl")
    assert result["temperature"] is None and result["calibrated"] is None and result["n"] == 200
    assert "python -m poc evaluate run" in result["missing"]


def test_damaged_logits_are_treated_as_missing(tmp_path):
    rd, _, _ = _run(tmp_path, margin=3.0)
    rd.eval_file("tl", "logits").write_bytes(b"not a zip")
    assert calibration(rd, "tl")["missing"] is not None
    assert store.read_logits(rd, "tl") is None


@pytest.mark.parametrize("shape", [(200, 2), (150, 3)])
def test_logits_that_do_not_match_the_predictions_are_not_used(tmp_path, shape):
    rd, val, y_val = _run(tmp_path, margin=3.0)
    rd.write_logits("tl", val[:, :shape[1]], y_val, np.zeros(shape))
    assert calibration(rd, "tl")["missing"] is not None
