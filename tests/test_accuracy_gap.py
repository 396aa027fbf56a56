"""The verdict's gap, poc.analysis.leaderboard.accuracy_gap, against a direct paired bootstrap written out here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from poc.runs import store
from poc.analysis.leaderboard import accuracy_gap

N = 150


def _correctness(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two models that mostly agree (as two models on one test set do): a right on ~70%, b on ~60%."""
    rng = np.random.default_rng(seed)
    shared = rng.random(N)
    a = shared < 0.7
    b = (shared < 0.6) ^ (rng.random(N) < 0.05)
    return a, b


def _write(rd: store.RunDir, stage: str, correct: np.ndarray, paths: list[str]) -> None:
    labels = np.array(["cat", "dog"])[np.arange(len(correct)) % 2]
    wrong = np.where(labels == "cat", "dog", "cat")
    frame = pd.DataFrame({"path": paths, "label": labels, "pred": np.where(correct, labels, wrong),
                          "confidence": 0.8})
    store.write_csv(rd.eval_file(stage, "predictions"), frame)


@pytest.fixture
def runs(tmp_path):
    a, b = _correctness()
    paths = [f"/data/test/{i:03d}.png" for i in range(N)]
    rd_a, rd_b = store.RunDir(tmp_path / "vit").create(), store.RunDir(tmp_path / "cnn").create()
    _write(rd_a, "ft", a, paths)
    _write(rd_b, "tl", b, paths)
    return rd_a, rd_b, a, b


def _direct_interval(a: np.ndarray, b: np.ndarray, paired: bool, n_boot: int = 20_000) -> tuple[float, float]:
    rng = np.random.default_rng(123)
    i = rng.integers(0, N, (n_boot, N))
    j = i if paired else rng.integers(0, N, (n_boot, N))
    diffs = a[i].mean(axis=1) - b[j].mean(axis=1)
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(low), float(high)


def test_the_gap_and_its_interval_match_a_direct_paired_bootstrap(runs):
    rd_a, rd_b, a, b = runs
    gap = accuracy_gap(rd_a, "ft", rd_b, "tl")
    assert gap["diff"] == pytest.approx(a.mean() - b.mean(), abs=1e-12)
    assert gap["n"] == N and gap["acc_a"] == pytest.approx(a.mean()) and gap["acc_b"] == pytest.approx(b.mean())
    low, high = _direct_interval(a, b, paired=True)
    assert gap["low"] == pytest.approx(low, abs=0.015) and gap["high"] == pytest.approx(high, abs=0.015)


def test_pairing_narrows_the_interval_of_models_that_agree(runs):
    rd_a, rd_b, a, b = runs
    gap = accuracy_gap(rd_a, "ft", rd_b, "tl")
    low, high = _direct_interval(a, b, paired=False)
    assert gap["high"] - gap["low"] < 0.6 * (high - low)


def test_images_are_paired_by_path_not_by_row(runs):
    rd_a, rd_b, _, _ = runs
    before = accuracy_gap(rd_a, "ft", rd_b, "tl")
    shuffled = pd.read_csv(rd_b.eval_file("tl", "predictions")).sample(frac=1.0, random_state=1)
    store.write_csv(rd_b.eval_file("tl", "predictions"), shuffled)
    assert accuracy_gap(rd_a, "ft", rd_b, "tl") == before


def test_no_gap_without_the_same_test_images(runs, tmp_path):
    rd_a, _, a, _ = runs
    other = store.RunDir(tmp_path / "other").create()
    _write(other, "ft", a, [f"/elsewhere/{i:03d}.png" for i in range(N)])
    assert accuracy_gap(rd_a, "ft", other, "ft") is None
    assert accuracy_gap(rd_a, "ft", other, "tl") is None  # no predictions for that stage
