"""poc.analysis.stats against closed forms, scipy computed independently here, direct resampling and hand-worked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from poc.analysis import stats


# ---------------------------------------------------------------- intervals

def _wilson(k: int, n: int) -> tuple[float, float]:
    """The Wilson score interval written from its formula (Wilson 1927), no continuity correction."""
    z = sps.norm.ppf(0.975)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("k,n", [(40, 40), (0, 40), (19, 40), (7, 10), (1, 3), (512, 1000)])
def test_wilson_interval_follows_its_formula(k, n):
    assert stats.accuracy_interval(k, n) == pytest.approx(_wilson(k, n), abs=1e-9)


def test_a_perfect_score_on_40_images_is_not_a_certainty():
    low, high = stats.accuracy_interval(40, 40)
    assert low == pytest.approx(0.912, abs=5e-4) and high == pytest.approx(1.0)


@pytest.mark.parametrize("k,n", [(40, 40), (0, 40), (19, 40), (7, 10), (1, 3)])
def test_clopper_pearson_equals_the_beta_quantiles(k, n):
    low = 0.0 if k == 0 else sps.beta.ppf(0.025, k, n - k + 1)
    high = 1.0 if k == n else sps.beta.ppf(0.975, k + 1, n - k)
    assert stats.accuracy_interval(k, n, method="exact") == pytest.approx((low, high), abs=1e-9)


def test_exact_interval_is_wider_than_wilson():
    wilson, exact = stats.accuracy_interval(19, 40), stats.accuracy_interval(19, 40, method="exact")
    assert exact[0] < wilson[0] and exact[1] > wilson[1]


@pytest.mark.parametrize("method", ["wilson", "exact"])
def test_no_images_give_no_interval(method):
    assert all(math.isnan(v) for v in stats.accuracy_interval(0, 0, method=method))


def test_an_unknown_interval_method_is_named():
    with pytest.raises(ValueError, match="'bootstrap'"):
        stats.accuracy_interval(3, 4, method="bootstrap")


# ---------------------------------------------------------------- calibration

# Hand-worked: two bins of width 0.5. High bin: confidences 0.9 (right), 0.8 (wrong): accuracy 0.5, mean
# confidence 0.85. Low bin: 0.4 (right), 0.45 (wrong): accuracy 0.5, confidence 0.425.
# ECE = 2/4 * |0.5 - 0.85| + 2/4 * |0.5 - 0.425| = 0.175 + 0.0375.
HAND_PROBS = np.array([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.4, 0.3, 0.3], [0.2, 0.45, 0.35]])
HAND_Y = np.array([0, 1, 0, 0])


def test_ece_hand_worked_in_two_bins():
    assert stats.expected_calibration_error(HAND_PROBS, HAND_Y, bins=2) == pytest.approx(0.2125)


def test_reliability_table_hand_worked_in_two_bins():
    table = stats.reliability_table(HAND_PROBS, HAND_Y, bins=2)
    assert table["bin_low"].tolist() == [0.0, 0.5] and table["bin_high"].tolist() == [0.5, 1.0]
    assert table["count"].tolist() == [2, 2]
    assert table["accuracy"].tolist() == pytest.approx([0.5, 0.5])
    assert table["confidence"].tolist() == pytest.approx([0.425, 0.85])


def test_default_fifteen_bins_leave_empty_bins_empty():
    table = stats.reliability_table(HAND_PROBS, HAND_Y)
    assert len(table) == 15 and table["count"].sum() == 4
    assert table.loc[table["count"] == 0, "accuracy"].isna().all()
    # 0.9 falls in [13/15, 14/15): its bin holds it alone, right, at confidence 0.9
    row = table[(table["bin_low"] <= 0.9) & (table["bin_high"] > 0.9)].iloc[0]
    assert (row["count"], row["accuracy"], row["confidence"]) == (1, 1.0, pytest.approx(0.9))


def test_ece_of_no_predictions_is_nan():
    assert math.isnan(stats.expected_calibration_error(np.zeros((0, 3)), np.zeros(0, int)))
