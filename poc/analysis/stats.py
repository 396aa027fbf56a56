"""Statistics of a test-set evaluation: accuracy intervals, paired comparisons, calibration.

One home for them so that every number the CLI and the dashboard show comes from the same code, and that
code leans on scipy wherever scipy already computes the statistic. Everything here is pure: arrays in,
numbers, dicts or DataFrames out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

CI_METHODS = {"wilson": "wilson", "exact": "exact", "clopper-pearson": "exact"}
ECE_BINS = 15
_EPS = 1e-7  # probabilities are clipped here before a log, as Keras does for cross-entropy


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


# ---------------------------------------------------------------- two accuracies

def _as_bool(values) -> np.ndarray:
    return np.asarray(values, dtype=bool).ravel()


def _percentile_interval(samples: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(samples, [2.5, 97.5])
    return float(low), float(high)


def paired_bootstrap_diff(correct_a, correct_b, n_boot: int = 2000, seed: int = 0) -> dict:
    """Accuracy of a minus b on the SAME test images, percentile 95% interval from resampling images (each
    resample draws one set of images for both models, so their agreement narrows the interval).
    {diff, low, high}; NaNs when there are no images."""
    a, b = _as_bool(correct_a), _as_bool(correct_b)
    if len(a) != len(b):
        raise ValueError(f"paired comparison needs one outcome per image for both models ({len(a)} vs {len(b)})")
    n = len(a)
    if n == 0:
        return {"diff": float("nan"), "low": float("nan"), "high": float("nan")}
    per_image = a.astype(int) - b.astype(int)  # -1, 0 or +1
    # Resampling n images with replacement only changes how many -1, 0 and +1 are drawn: a multinomial draw
    # over their shares has exactly that distribution, in O(n_boot) memory instead of O(n_boot * n).
    shares = np.array([(per_image == v).mean() for v in (-1, 0, 1)])
    counts = np.random.default_rng(seed).multinomial(n, shares / shares.sum(), size=n_boot)  # (n_boot, 3)
    low, high = _percentile_interval((counts[:, 2] - counts[:, 0]) / n)
    return {"diff": float(a.mean() - b.mean()), "low": low, "high": high}


def unpaired_bootstrap_diff(correct_a, correct_b, n_boot: int = 2000, seed: int = 0) -> dict:
    """Accuracy of a minus b on two DIFFERENT test sets, each resampled on its own; percentile 95% interval.
    {diff, low, high}; NaNs when either set is empty."""
    a, b = _as_bool(correct_a), _as_bool(correct_b)
    if len(a) == 0 or len(b) == 0:
        return {"diff": float("nan"), "low": float("nan"), "high": float("nan")}
    rng = np.random.default_rng(seed)
    # The number right in a resample of n outcomes is Binomial(n, observed accuracy): same distribution as
    # drawing the images themselves.
    samples = rng.binomial(len(a), a.mean(), n_boot) / len(a) - rng.binomial(len(b), b.mean(), n_boot) / len(b)
    low, high = _percentile_interval(samples)
    return {"diff": float(a.mean() - b.mean()), "low": low, "high": high}


def agreement_table(correct_a, correct_b) -> dict:
    """The 2x2 counts of two models on the same images: both_right, only_a, only_b, both_wrong."""
    a, b = _as_bool(correct_a), _as_bool(correct_b)
    if len(a) != len(b):
        raise ValueError(f"agreement needs one outcome per image for both models ({len(a)} vs {len(b)})")
    return {"both_right": int((a & b).sum()), "only_a": int((a & ~b).sum()), "only_b": int((~a & b).sum()),
            "both_wrong": int((~a & ~b).sum())}


def mcnemar_exact(correct_a, correct_b) -> dict:
    """Exact McNemar test: under "equally accurate", each discordant image is equally likely to favour either
    model, so only_a ~ Binomial(only_a + only_b, 1/2). The 2x2 counts plus the two-sided `p_value` (1.0 when
    no image is discordant)."""
    table = agreement_table(correct_a, correct_b)
    discordant = table["only_a"] + table["only_b"]
    p = stats.binomtest(table["only_a"], discordant, 0.5).pvalue if discordant else 1.0
    return {**table, "p_value": float(p)}


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


def apply_temperature(probs, temperature: float) -> np.ndarray:
    """softmax(log(p) / T): T > 1 softens over-confident probabilities, T < 1 sharpens; argmax unchanged."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    logits = np.log(np.clip(np.asarray(probs, dtype=float), _EPS, 1.0))
    return special.softmax(logits / temperature, axis=1)


def _nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    return float(-special.log_softmax(logits / temperature, axis=1)[np.arange(len(y)), y].mean())


def fit_temperature(probs_val, y_val) -> float:
    """The temperature T > 0 (searched over [0.05, 20]) minimising the NLL of softmax(log(p) / T).

    Contract: fit it on VALIDATION predictions only, then apply it to the test predictions; fitting on the
    test split would make the test calibration numbers meaningless."""
    probs, y = np.asarray(probs_val, dtype=float), np.asarray(y_val, dtype=int)
    if len(probs) == 0:
        raise ValueError("fit_temperature needs at least one validation prediction")
    logits = np.log(np.clip(probs, _EPS, 1.0))
    # search log T: the NLL is far better conditioned there than in T itself
    found = optimize.minimize_scalar(lambda log_t: _nll(logits, y, float(np.exp(log_t))),
                                     bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(found.x))
