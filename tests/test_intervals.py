"""Intervals for a difference of accuracies, Holm's adjustment and temperature scaling on logits, against
statsmodels (computed independently), scipy, exact enumeration and hand-worked cases."""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest
from scipy import special
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint

from poc.analysis import stats


# ---------------------------------------------------------------- paired: agreement with exact McNemar

@cache
def _all_splits(n: int) -> list[tuple[int, int, stats.PairedDifference]]:
    return [(a, b, stats.paired_difference(a, b, n)) for a in range(n + 1) for b in range(n + 1 - a)]


def _statsmodels_p(only_a: int, only_b: int, n: int) -> float:
    table = [[n - only_a - only_b, only_a], [only_b, 0]]  # mcnemar reads the off-diagonal cells
    return float(mcnemar(table, exact=True).pvalue)


@pytest.mark.parametrize("n", [40, 100])
def test_interval_includes_zero_exactly_when_exact_mcnemar_does_not_reject(n):
    for only_a, only_b, result in _all_splits(n):
        p = _statsmodels_p(only_a, only_b, n)
        assert result.p_value == pytest.approx(p, abs=1e-12), (only_a, only_b)
        assert (result.low <= 0 <= result.high) == (p >= 0.05), (only_a, only_b, result)


@pytest.mark.parametrize("n", [40, 100])
def test_mcnemar_decision_is_whether_clopper_pearson_for_the_share_a_wins_contains_one_half(n):
    for only_a, only_b, result in _all_splits(n):
        if only_a + only_b == 0:
            continue  # no discordant image: no share to estimate (its own test below)
        low, high = proportion_confint(only_a, only_a + only_b, alpha=0.05, method="beta")
        assert (low <= 0.5 <= high) == (result.low <= 0 <= result.high), (only_a, only_b)


# two-sided exact p = 2 * P(X <= min) for X ~ Binomial(discordant, 1/2), worked by hand
@pytest.mark.parametrize("only_a,only_b,p,includes_zero", [
    (4, 0, 2 / 16, True),                  # the case: the bootstrap said [+2.5, +20.0] points
    (5, 0, 2 / 32, True),
    (6, 0, 2 / 64, False),
    (8, 0, 2 / 256, False),
    (7, 1, 2 * (1 + 8) / 256, True),       # 0.0703
    (8, 1, 2 * (1 + 9) / 512, False),      # 0.0391
])
def test_hand_worked_verdicts_on_40_images(only_a, only_b, p, includes_zero):
    result = stats.paired_difference(only_a, only_b, 40)
    assert result.p_value == pytest.approx(p, abs=1e-12)
    assert (result.low <= 0 <= result.high) is includes_zero
    assert result.low < result.diff < result.high


def test_four_against_none_of_forty_matches_the_corners_of_the_two_clopper_pearson_intervals():
    share_low, share_high = proportion_confint(4, 40, alpha=0.05, method="beta")
    theta_low, theta_high = proportion_confint(4, 4, alpha=0.05, method="beta")
    result = stats.paired_difference(4, 0, 40)
    assert result.low == pytest.approx(share_high * (2 * theta_low - 1), abs=1e-9)  # 2 theta_low - 1 < 0
    assert result.high == pytest.approx(share_high * (2 * theta_high - 1), abs=1e-9)
    assert (result.diff, result.discordant, result.n) == (0.1, 4, 40)


def test_swapping_the_models_negates_the_difference_and_mirrors_the_interval():
    for only_a, only_b, result in _all_splits(40):
        swapped = stats.paired_difference(only_b, only_a, 40)
        assert (swapped.diff, swapped.low, swapped.high) == pytest.approx((-result.diff, -result.high, -result.low),
                                                                         abs=1e-12)
        assert swapped.p_value == pytest.approx(result.p_value, abs=1e-12)


def test_no_discordant_image_gives_a_finite_interval_around_zero_and_p_one():
    result = stats.paired_difference(0, 0, 40)
    share_high = proportion_confint(0, 40, alpha=0.05, method="beta")[1]  # 1 - 0.025 ** (1 / 40) = 0.0881
    assert (result.diff, result.p_value, result.discordant) == (0.0, 1.0, 0)
    assert (result.low, result.high) == pytest.approx((-share_high, share_high), abs=1e-9)
    assert math.isfinite(result.low) and result.low < 0 < result.high


def test_the_method_names_the_exact_construction():
    assert stats.paired_difference(3, 1, 40).method.startswith("exact:")
    assert "McNemar" in stats.paired_difference(3, 1, 40).method


def test_no_images_give_no_interval():
    result = stats.paired_difference(0, 0, 0)
    assert math.isnan(result.diff) and math.isnan(result.low) and math.isnan(result.high)


def test_more_discordant_images_than_images_are_refused_with_the_counts():
    with pytest.raises(ValueError, match="45 exceeds the 40 images"):
        stats.paired_difference(30, 15, 40)
    with pytest.raises(ValueError, match="only_b"):
        stats.paired_difference(3, -1, 40)


# ---------------------------------------------------------------- paired: coverage by exact enumeration

def _coverage(n: int, delta: float, theta: float) -> float:
    """P(interval contains p_a - p_b) summed over every trinomial outcome (only_a, only_b, rest)."""
    splits = _all_splits(n)
    counts = np.array([(a, b, n - a - b) for a, b, _ in splits])  # (splits, 3)
    p_a, p_b = delta * theta, delta * (1 - theta)
    prob = sps.multinomial.pmf(counts, n, [p_a, p_b, 1 - p_a - p_b])
    d = p_a - p_b
    covered = np.array([r.low - 1e-12 <= d <= r.high + 1e-12 for _, _, r in splits])
    return float(prob[covered].sum())


@pytest.mark.parametrize("delta", [0.05, 0.2, 0.5])
@pytest.mark.parametrize("theta", [0.5, 0.75, 1.0])
def test_interval_covers_the_true_difference_at_least_95_percent_of_the_time(delta, theta):
    assert _coverage(40, delta, theta) >= 0.95


# ---------------------------------------------------------------- unpaired: Newcombe

def test_two_perfect_scores_on_40_images_differ_by_up_to_8_76_points_either_way():
    result = stats.unpaired_difference(40, 40, 40, 40)
    assert result.diff == 0.0
    assert (result.low, result.high) == pytest.approx((-0.0876, 0.0876), abs=1e-4)


@pytest.mark.parametrize("correct_a,n_a,correct_b,n_b", [
    (30, 40, 25, 40), (0, 40, 3, 50), (40, 40, 35, 40), (17, 23, 5, 31), (512, 1000, 480, 990)])
def test_newcombe_equals_statsmodels(correct_a, n_a, correct_b, n_b):
    low, high = confint_proportions_2indep(correct_a, n_a, correct_b, n_b, method="newcomb", compare="diff")
    result = stats.unpaired_difference(correct_a, n_a, correct_b, n_b)
    assert result.diff == pytest.approx(correct_a / n_a - correct_b / n_b, abs=1e-12)
    assert (result.low, result.high) == pytest.approx((low, high), abs=1e-9)


def test_the_unpaired_method_says_unpaired_and_carries_no_mcnemar_p_value():
    result = stats.unpaired_difference(30, 40, 25, 40)
    assert result.method.startswith("unpaired:")
    assert not hasattr(result, "p_value")


def test_unpaired_with_an_empty_set_gives_no_interval():
    assert math.isnan(stats.unpaired_difference(3, 4, 0, 0).low)


def test_unpaired_refuses_more_right_answers_than_images():
    with pytest.raises(ValueError, match="41/40"):
        stats.unpaired_difference(41, 40, 3, 40)


# ---------------------------------------------------------------- Holm

@pytest.mark.parametrize("p", [
    [0.01, 0.04, 0.03, 0.5],
    [0.2, 0.2, 0.01, 0.2],        # ties
    [0.04, 0.03, 0.9, 0.6],       # capped at 1
    [0.003],
    np.random.default_rng(0).random(12) ** 3,
])
def test_holm_equals_statsmodels(p):
    expected = multipletests(p, method="holm")[1]
    assert stats.holm(p) == pytest.approx(expected, abs=1e-12)


def test_holm_of_nothing_is_nothing():
    assert stats.holm([]).shape == (0,)


def test_holm_refuses_a_value_that_is_not_a_p_value():
    with pytest.raises(ValueError, match="1.5"):
        stats.holm([0.2, 1.5])


# ---------------------------------------------------------------- temperature on logits

T_GRID = np.exp(np.linspace(np.log(0.05), np.log(20.0), 4001))  # steps of 0.15% in T


def _nll(logits: np.ndarray, y: np.ndarray, temperature) -> np.ndarray:
    """Mean negative log-likelihood of softmax(logits / T), as logsumexp minus the true logit, for each T."""
    scaled = logits / np.reshape(temperature, (-1, 1, 1))  # (temperatures, N, classes)
    return (special.logsumexp(scaled, axis=2) - scaled[:, np.arange(len(y)), y]).mean(axis=1)


def _grid_minimum(logits: np.ndarray, y: np.ndarray) -> float:
    return float(_nll(logits, y, T_GRID).min())


def _margin_25(n: int = 200, classes: int = 4, accuracy: float = 0.75) -> tuple[np.ndarray, np.ndarray]:
    """Every prediction 25 logits above the rest, right for the first `accuracy` share: far over-confident."""
    logits, y = np.zeros((n, classes)), np.zeros(n, int)
    right = np.arange(n) < accuracy * n
    logits[right, 0], logits[~right, 1] = 25.0, 25.0
    return logits, y


def test_margins_of_25_are_fitted_to_the_minimum_of_the_unclipped_nll():
    logits, y = _margin_25()
    temperature = stats.fit_temperature_logits(logits, y)
    assert _nll(logits, y, temperature)[0] <= _grid_minimum(logits, y) + 1e-3
    # closed form: the NLL is 3/4 log(1 + 3 e^(-25/T)) + 1/4 log(e^(25/T) + 3), least at T ~ 11.37
    assert temperature == pytest.approx(11.37, abs=0.05)


# labels drawn from softmax(truth); the model reports sharpen * truth, so the right T is about `sharpen`
@pytest.mark.parametrize("sharpen,seed,lowest,highest", [(3.0, 0, 2.0, 5.0), (0.4, 1, 0.2, 0.7), (1.0, 2, 0.8, 1.25)])
def test_temperature_reaches_the_nll_minimum_of_random_logits(sharpen, seed, lowest, highest):
    rng = np.random.default_rng(seed)
    truth = rng.normal(scale=1.5, size=(300, 5))
    y = np.array([rng.choice(5, p=p) for p in special.softmax(truth, axis=1)])
    logits = sharpen * truth
    temperature = stats.fit_temperature_logits(logits, y)
    assert _nll(logits, y, temperature)[0] <= _grid_minimum(logits, y) + 1e-3
    assert lowest < temperature < highest


def test_separable_logits_are_sharpened():
    logits, y = _margin_25(accuracy=1.0)  # the NLL falls towards 0 as T does (below 1e-10 from T ~ 1)
    temperature = stats.fit_temperature_logits(logits, y)
    assert temperature < 1.0
    assert _nll(logits, y, temperature)[0] <= _grid_minimum(logits, y) + 1e-3


def test_softmax_with_temperature_is_scipy_softmax_of_scaled_logits_and_keeps_the_prediction():
    logits = np.array([[1000.0, 990.0, -5.0], [0.1, 0.3, 0.2]])
    probs = stats.softmax_with_temperature(logits, 7.0)
    assert probs == pytest.approx(special.softmax(logits / 7.0, axis=1), abs=1e-15)
    assert np.isfinite(probs).all() and probs.sum(axis=1) == pytest.approx(1.0)
    assert (probs.argmax(axis=1) == logits.argmax(axis=1)).all()


def test_softmax_with_temperature_refuses_a_temperature_that_is_not_positive():
    with pytest.raises(ValueError, match="> 0"):
        stats.softmax_with_temperature(np.zeros((1, 2)), 0.0)


def test_temperature_fit_refuses_labels_that_do_not_fit_the_logits():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        stats.fit_temperature_logits(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="shape"):
        stats.fit_temperature_logits(np.zeros(4), np.zeros(4, int))
