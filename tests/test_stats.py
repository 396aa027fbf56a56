"""poc.analysis.stats against closed forms, scipy computed independently here, direct resampling and hand-worked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special
from scipy import stats as sps
from sklearn.metrics import log_loss

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


# ---------------------------------------------------------------- McNemar

def test_mcnemar_hand_worked():
    # 3 images only a gets right, 1 only b: P(X<=1 or X>=3 | Bin(4, 1/2)) = (1 + 4 + 4 + 1) / 16
    a = np.array([1, 1, 1, 0, 1, 0, 1], bool)
    b = np.array([0, 0, 0, 1, 1, 0, 1], bool)
    result = stats.mcnemar_exact(a, b)
    assert {k: result[k] for k in ("both_right", "only_a", "only_b", "both_wrong")} == \
        {"both_right": 2, "only_a": 3, "only_b": 1, "both_wrong": 1}
    assert result["p_value"] == pytest.approx(10 / 16)
    # five discordant images all favouring a: two-sided p = 2 / 2**5
    assert stats.mcnemar_exact(np.ones(5, bool), np.zeros(5, bool))["p_value"] == pytest.approx(2 / 32)


def test_mcnemar_without_discordant_images_has_p_one():
    same = np.array([1, 0, 1, 1], bool)
    assert stats.mcnemar_exact(same, same)["p_value"] == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_mcnemar_equals_scipy_binomtest_on_random_predictions(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.random(80) < 0.7, rng.random(80) < 0.55
    crosstab = np.histogram2d(a.astype(int), b.astype(int), bins=2)[0]  # rows a wrong/right, cols b wrong/right
    result = stats.mcnemar_exact(a, b)
    assert [result["both_wrong"], result["only_b"], result["only_a"], result["both_right"]] == \
        crosstab.ravel().astype(int).tolist()
    only_a, only_b = int(crosstab[1, 0]), int(crosstab[0, 1])
    assert result["p_value"] == pytest.approx(sps.binomtest(only_a, only_a + only_b, 0.5).pvalue, abs=1e-12)


# ---------------------------------------------------------------- bootstrap differences

def _models_that_agree(n: int = 150, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shared = rng.random(n)
    return shared < 0.7, (shared < 0.6) ^ (rng.random(n) < 0.05)


def _direct(a: np.ndarray, b: np.ndarray, paired: bool, n_boot: int = 40_000) -> tuple[float, float]:
    """Resample image indices themselves (one draw for both models when paired)."""
    rng = np.random.default_rng(123)
    i = rng.integers(0, len(a), (n_boot, len(a)))
    j = i if paired else rng.integers(0, len(b), (n_boot, len(b)))
    return tuple(np.percentile(a[i].mean(1) - b[j].mean(1), [2.5, 97.5]))


def test_paired_bootstrap_matches_direct_resampling_of_images():
    a, b = _models_that_agree()
    result = stats.paired_bootstrap_diff(a, b, n_boot=40_000, seed=7)
    assert result["diff"] == pytest.approx(a.mean() - b.mean(), abs=1e-12)
    low, high = _direct(a, b, paired=True)
    assert result["low"] == pytest.approx(low, abs=0.01) and result["high"] == pytest.approx(high, abs=0.01)


def test_paired_bootstrap_matches_scipy_bootstrap():
    a, b = _models_that_agree(seed=3)
    ref = sps.bootstrap((a.astype(float), b.astype(float)), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis),
                        paired=True, method="percentile", n_resamples=20_000, random_state=1).confidence_interval
    result = stats.paired_bootstrap_diff(a, b, n_boot=20_000, seed=2)
    assert (result["low"], result["high"]) == pytest.approx((ref.low, ref.high), abs=0.01)


def test_unpaired_bootstrap_matches_direct_independent_resampling():
    a, b = _models_that_agree()
    result = stats.unpaired_bootstrap_diff(a, b[:100], n_boot=40_000, seed=7)
    assert result["diff"] == pytest.approx(a.mean() - b[:100].mean(), abs=1e-12)
    low, high = _direct(a, b[:100], paired=False)
    assert result["low"] == pytest.approx(low, abs=0.01) and result["high"] == pytest.approx(high, abs=0.01)


def test_pairing_narrows_the_interval_of_models_that_agree():
    a, b = _models_that_agree()
    paired, unpaired = stats.paired_bootstrap_diff(a, b), stats.unpaired_bootstrap_diff(a, b)
    assert paired["high"] - paired["low"] < 0.6 * (unpaired["high"] - unpaired["low"])


def test_paired_bootstrap_refuses_outcome_lists_of_different_lengths():
    with pytest.raises(ValueError, match="10 vs 9"):
        stats.paired_bootstrap_diff(np.ones(10), np.ones(9))


def test_bootstrap_of_nothing_is_nan():
    assert math.isnan(stats.paired_bootstrap_diff([], [])["low"])
    assert math.isnan(stats.unpaired_bootstrap_diff([], [True])["diff"])


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


def _overconfident(n: int = 600, classes: int = 5, sharpen: float = 3.0, seed: int = 0):
    """Labels drawn from softmax(logits); the model reports softmax(sharpen * logits): over-confident."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=1.5, size=(n, classes))
    truth = special.softmax(logits, axis=1)
    y = np.array([rng.choice(classes, p=p) for p in truth])
    return special.softmax(sharpen * logits, axis=1), y


def test_temperature_softens_overconfident_probabilities_and_lowers_validation_nll():
    probs, y = _overconfident()
    temperature = stats.fit_temperature(probs, y)
    assert temperature > 1.5  # the true softening factor is 3
    calibrated = stats.apply_temperature(probs, temperature)
    assert log_loss(y, calibrated, labels=range(5)) < log_loss(y, probs, labels=range(5)) - 0.1
    assert (calibrated.argmax(1) == probs.argmax(1)).all()  # a temperature never changes a prediction
    assert stats.expected_calibration_error(calibrated, y) < stats.expected_calibration_error(probs, y)


def test_temperature_is_the_minimum_of_the_validation_nll():
    probs, y = _overconfident(sharpen=2.0, seed=1)
    temperature = stats.fit_temperature(probs, y)
    grid = np.linspace(0.5, 5.0, 451)
    nll = [log_loss(y, stats.apply_temperature(probs, t), labels=range(5)) for t in grid]
    assert temperature == pytest.approx(grid[int(np.argmin(nll))], abs=0.02)


def test_temperature_sharpens_underconfident_probabilities():
    probs, y = _overconfident(sharpen=0.4, seed=2)
    assert stats.fit_temperature(probs, y) < 1.0


def test_temperature_must_be_positive():
    with pytest.raises(ValueError, match="> 0"):
        stats.apply_temperature(HAND_PROBS, 0.0)
