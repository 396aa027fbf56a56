"""The verdict's gap, poc.analysis.leaderboard.accuracy_gap: the Compare page's numbers (compare_stages), with an
exact paired interval checked against statsmodels' McNemar test and Clopper-Pearson interval."""

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
    for rd in (rd_a, rd_b):
        rd.write_run({"id": rd.id, "status": "completed", "class_names": ["cat", "dog"]})
    _write(rd_a, "ft", a, paths)
    _write(rd_b, "tl", b, paths)
    return rd_a, rd_b, a, b


def test_the_gap_is_the_comparison_of_compare_stages(runs):
    from poc.analysis.compare import compare_stages

    rd_a, rd_b, a, b = runs
    gap, full = accuracy_gap(rd_a, "ft", rd_b, "tl"), compare_stages(rd_a, "ft", rd_b, "tl")
    assert gap["diff"] == pytest.approx(a.mean() - b.mean(), abs=1e-12)
    assert gap["n"] == N and gap["acc_a"] == pytest.approx(a.mean()) and gap["acc_b"] == pytest.approx(b.mean())
    assert (gap["low"], gap["high"], gap["p_value"]) == (full["difference"]["low"], full["difference"]["high"],
                                                         full["mcnemar"]["p_value"])


def test_the_gap_interval_excludes_zero_exactly_when_mcnemar_rejects(runs):
    from statsmodels.stats.contingency_tables import mcnemar
    from statsmodels.stats.proportion import proportion_confint

    rd_a, rd_b, a, b = runs
    gap = accuracy_gap(rd_a, "ft", rd_b, "tl")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    p = mcnemar([[int((a & b).sum()), only_a], [only_b, int((~a & ~b).sum())]], exact=True).pvalue
    low, high = proportion_confint(only_a, only_a + only_b, alpha=0.05, method="beta")
    assert gap["discordant"] == only_a + only_b and gap["p_value"] == pytest.approx(p)
    assert (gap["low"] > 0 or gap["high"] < 0) == (p < 0.05) == (not low <= 0.5 <= high)


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
