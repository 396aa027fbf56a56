"""Statistics of a test-set evaluation: accuracy intervals, paired comparisons, calibration.

One home for them so that every number the CLI and the dashboard show comes from the same code, and that
code leans on scipy wherever scipy already computes the statistic. Everything here is pure: arrays in,
numbers, dicts, dataclasses or DataFrames out. The intervals for a difference of accuracies and their
coverage are explained in docs/statistics.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

CI_METHODS = {"wilson": "wilson", "exact": "exact", "clopper-pearson": "exact"}
ECE_BINS = 15


# ---------------------------------------------------------------- one accuracy

def accuracy_interval(k: int, n: int, method: str = "wilson") -> tuple[float, float]:
    """95% interval of a proportion of k successes in n trials: Wilson score (default; good coverage even at
    0/n and n/n, where a bootstrap collapses to a point) or Clopper-Pearson ("exact", conservative).
    (nan, nan) when n == 0."""
    if method not in CI_METHODS:
        raise ValueError(f"unknown interval method {method!r}; use one of {sorted(CI_METHODS)}")
    if n == 0:
        return (float("nan"), float("nan"))
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=0.95, method=CI_METHODS[method])
    return float(ci.low), float(ci.high)


# ---------------------------------------------------------------- two accuracies, exact and score intervals

LEVEL = 0.95  # every interval and test in this section is at 95%
PAIRED_METHOD = ("exact: Clopper-Pearson 95% for the share of discordant images that A wins (decides the sign, "
                 "agrees with exact McNemar) x Clopper-Pearson 95% for the discordant share of all images")
UNPAIRED_METHOD = ("unpaired: Newcombe's hybrid score interval (Wilson 95% for each accuracy, combined); "
                   "different test images, so no McNemar test")


@dataclass(frozen=True)
class PairedDifference:
    """Accuracy of A minus B on the same n images, as fractions, with its 95% interval [low, high] and the
    exact McNemar p-value; the interval excludes 0 exactly when p_value < 0.05."""
    diff: float
    low: float
    high: float
    method: str
    p_value: float
    discordant: int  # images exactly one of the two models gets right
    n: int


@dataclass(frozen=True)
class UnpairedDifference:
    """Accuracy of A (on n_a images) minus B (on n_b other images), as fractions, with its 95% interval."""
    diff: float
    low: float
    high: float
    method: str
    n_a: int
    n_b: int


def _clopper_pearson(k, n, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Clopper-Pearson interval of k successes in n trials, from beta quantiles (vectorised; [0, 1] when
    n == 0, where there is nothing to learn from)."""
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    tail = (1 - level) / 2
    with np.errstate(invalid="ignore", divide="ignore"):  # the branches np.where discards
        low = np.where(k > 0, stats.beta.ppf(tail, k, n - k + 1), 0.0)
        high = np.where(k < n, stats.beta.ppf(1 - tail, k + 1, n - k), 1.0)
    return low, high


def _check_counts(**counts) -> None:
    for name, value in counts.items():
        if int(value) != value or value < 0:
            raise ValueError(f"{name} must be a count of images (an integer >= 0), got {value!r}")


def paired_difference(only_a: int, only_b: int, n: int) -> PairedDifference:
    """Accuracy of A minus B on the SAME n images from the 2x2 table's discordant counts: only_a images only A
    gets right, only_b only B. The verdict agrees with the exact McNemar test and the interval covers the true
    difference at least 95% of the time (exact enumeration, docs/statistics.md).

    Why this construction: the difference is d = delta * (2 theta - 1), delta the share of discordant images,
    theta the share of them that A wins. The Clopper-Pearson 95% interval for theta excludes 1/2 exactly when
    the exact McNemar p < 0.05 (both are the binomial tails at 1/2), so it alone sets the sign; the
    Clopper-Pearson 95% interval for delta scales it, and [low, high] is the range of delta * (2 theta - 1)
    over the two intervals. No discordant image: theta is unknown ([0, 1]) and the interval is
    [-delta_high, +delta_high]. NaNs (p_value 1.0) when n == 0."""
    _check_counts(only_a=only_a, only_b=only_b, n=n)
    only_a, only_b, n = int(only_a), int(only_b), int(n)
    discordant = only_a + only_b
    if discordant > n:
        raise ValueError(f"only_a + only_b = {discordant} exceeds the {n} images; the counts must come from the "
                         "same test images")
    # exact McNemar: only_a ~ Binomial(discordant, 1/2) under "equally accurate"; two-sided = twice the smaller tail
    p_value = min(1.0, 2 * float(stats.binom.cdf(min(only_a, only_b), discordant, 0.5))) if discordant else 1.0
    if n == 0:
        return PairedDifference(float("nan"), float("nan"), float("nan"), PAIRED_METHOD, p_value, 0, 0)
    share_low, share_high = _clopper_pearson(discordant, n)
    theta_low, theta_high = _clopper_pearson(only_a, discordant)
    sign_low, sign_high = 2 * theta_low - 1, 2 * theta_high - 1  # interval for 2 theta - 1
    # d is linear in each of delta >= 0 and (2 theta - 1): its range over the box sits at the corners
    low = min(share_low * sign_low, share_high * sign_low)
    high = max(share_low * sign_high, share_high * sign_high)
    return PairedDifference((only_a - only_b) / n, float(low), float(high), PAIRED_METHOD, p_value, discordant, n)


def unpaired_difference(correct_a: int, n_a: int, correct_b: int, n_b: int) -> UnpairedDifference:
    """Accuracy of A minus B measured on two DIFFERENT test sets: Newcombe's hybrid score interval (1998,
    method 10), the Wilson 95% intervals of the two accuracies combined. Unlike a bootstrap it keeps a width
    at 0% and 100% (40/40 vs 40/40: +-8.76 points). NaNs when either set is empty."""
    _check_counts(correct_a=correct_a, n_a=n_a, correct_b=correct_b, n_b=n_b)
    if correct_a > n_a or correct_b > n_b:
        raise ValueError(f"more right answers than images: {correct_a}/{n_a} and {correct_b}/{n_b}")
    if n_a == 0 or n_b == 0:
        nan = float("nan")
        return UnpairedDifference(nan, nan, nan, UNPAIRED_METHOD, int(n_a), int(n_b))
    p_a, p_b = correct_a / n_a, correct_b / n_b
    low_a, high_a = accuracy_interval(correct_a, n_a, "wilson")
    low_b, high_b = accuracy_interval(correct_b, n_b, "wilson")
    diff = p_a - p_b
    low = diff - float(np.hypot(p_a - low_a, high_b - p_b))
    high = diff + float(np.hypot(high_a - p_a, p_b - low_b))
    return UnpairedDifference(diff, low, high, UNPAIRED_METHOD, int(n_a), int(n_b))


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (1979), in the input's order: the i-th smallest p times (m - i + 1),
    made non-decreasing and capped at 1. Rejecting adjusted p < 0.05 keeps the chance of any false claim
    among the m comparisons under 5%, with no assumption about how they depend on each other."""
    p = np.asarray(p_values, dtype=float).ravel()
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"p-values must lie in [0, 1], got {p.tolist()!r}")
    order = np.argsort(p, kind="stable")
    scaled = np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(scaled, 1.0)
    return adjusted


# ---------------------------------------------------------------- calibration

def reliability_table(probs, y_true, bins: int = ECE_BINS) -> pd.DataFrame:
    """Confidence (max probability) in `bins` equal-width bins over [0, 1] (scipy's convention: [low, high),
    the last bin closed): bin_low, bin_high, count, accuracy, confidence (NaN for an empty bin). The rows of
    a reliability diagram."""
    probs, y_true = np.asarray(probs, dtype=float), np.asarray(y_true)
    confidence = probs.max(axis=1) if len(probs) else np.zeros(0)
    correct = (probs.argmax(axis=1) == y_true).astype(float) if len(probs) else np.zeros(0)
    edges = np.linspace(0.0, 1.0, bins + 1)
    count = np.histogram(confidence, bins=edges)[0]
    if len(probs):
        accuracy = stats.binned_statistic(confidence, correct, "mean", bins=edges).statistic
        mean_conf = stats.binned_statistic(confidence, confidence, "mean", bins=edges).statistic
    else:
        accuracy = mean_conf = np.full(bins, np.nan)
    return pd.DataFrame({"bin_low": edges[:-1], "bin_high": edges[1:], "count": count.astype(int),
                         "accuracy": accuracy, "confidence": mean_conf})


def expected_calibration_error(probs, y_true, bins: int = ECE_BINS) -> float:
    """ECE (Guo et al. 2017, arXiv 1706.04599): sum over bins of (n_bin / N) * |accuracy_bin - confidence_bin|,
    confidence = max probability, equal-width bins over [0, 1]. NaN for no predictions."""
    table = reliability_table(probs, y_true, bins)
    total = table["count"].sum()
    if total == 0:
        return float("nan")
    filled = table[table["count"] > 0]
    return float((filled["count"] / total * (filled["accuracy"] - filled["confidence"]).abs()).sum())


T_BOUNDS = (0.05, 20.0)  # the temperatures fit_temperature_logits searches


def _nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    return float(-special.log_softmax(logits / temperature, axis=1)[np.arange(len(y)), y].mean())


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")


def softmax_with_temperature(logits, temperature: float) -> np.ndarray:
    """softmax(logits / T), rows (N, K): T > 1 softens over-confident predictions, T < 1 sharpens; argmax
    unchanged. Logits keep margins that probabilities rounded or clipped near 0 and 1 have lost."""
    _check_temperature(temperature)
    return special.softmax(np.asarray(logits, dtype=float) / temperature, axis=1)


def fit_temperature_logits(logits_val, y_val) -> float:
    """The temperature T in [0.05, 20] minimising the validation NLL of softmax(logits / T) (Guo et al. 2017,
    arXiv 1706.04599), with no clipping: log-softmax is computed as logits / T - logsumexp.

    The NLL is convex in 1/T (a log-sum-exp of functions linear in 1/T, minus one), so it has one minimum
    along log T and a bounded Brent search finds it. Contract: fit it on VALIDATION logits only, then
    apply it to the test logits; fitting on the test split would make the test calibration numbers meaningless."""
    logits, y = np.asarray(logits_val, dtype=float), np.asarray(y_val)
    if logits.ndim != 2 or len(logits) == 0:
        raise ValueError(f"fit_temperature_logits needs validation logits of shape (N >= 1, classes), got "
                         f"{logits.shape}")
    if y.shape != (len(logits),) or not np.issubdtype(y.dtype, np.integer) or (y < 0).any() or \
            (y >= logits.shape[1]).any():
        raise ValueError(f"fit_temperature_logits needs one integer label in [0, {logits.shape[1]}) per row of "
                         f"logits ({len(logits)} rows)")
    found = optimize.minimize_scalar(lambda log_t: _nll(logits, y, float(np.exp(log_t))),
                                     bounds=np.log(T_BOUNDS), method="bounded", options={"xatol": 1e-6})
    return float(np.exp(found.x))
