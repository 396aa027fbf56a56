"""`python -m poc compare` on hand-made runs of 40 shared test images: the interval agrees with the exact McNemar
test (statsmodels, an independent implementation), unpaired comparisons use Newcombe's interval, and pairing
follows the test images, not the whole split."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from cli import call_cli
from poc.data.split import split_fingerprint, held_out_fingerprint
from poc.runs import store

N = 40
CLASSES = ["cat", "dog"]


def _split(val_share: int = 4) -> pd.DataFrame:
    """40 test images, 8 train/val images: `val_share` of them validation (another train/val part)."""
    rows = [(f"/data/{CLASSES[i % 2]}/{i:03d}.png", CLASSES[i % 2], "test" if i < N else
             ("val" if i < N + val_share else "train"), f"{i:064x}") for i in range(N + 8)]
    return pd.DataFrame(rows, columns=["path", "label", "split", "sha256"])


def _run(root, run_id: str, correct: np.ndarray, split: pd.DataFrame | None = None) -> store.RunDir:
    split = _split() if split is None else split
    rd = store.RunDir(root / run_id).create()
    rd.write_run({"id": run_id, "name": run_id, "model": "m", "status": "completed", "class_names": CLASSES,
                  "final_stage": "ft", "dataset": {"path": "/data", "split_fingerprint": split_fingerprint(split),
                                                   "test_fingerprint": held_out_fingerprint(split)}})
    store.write_split(rd.split_csv, split)
    test = split[split["split"] == "test"].reset_index(drop=True)
    wrong = test["label"].map({"cat": "dog", "dog": "cat"})
    store.write_csv(rd.eval_file("ft", "predictions"), pd.DataFrame({
        "path": test["path"], "label": test["label"], "pred": np.where(correct, test["label"], wrong),
        "confidence": 0.9}))
    return rd


def _pair(root, only_a: int, only_b: int, both_right: int = 20):
    a = np.zeros(N, bool)
    b = np.zeros(N, bool)
    a[:both_right] = b[:both_right] = True
    a[both_right:both_right + only_a] = True
    b[both_right + only_a:both_right + only_a + only_b] = True
    return _run(root, "a", a), _run(root, "b", b)


@pytest.mark.parametrize("only_a, only_b", [(4, 0), (5, 0), (6, 0), (8, 0), (7, 1), (8, 1)])
def test_the_interval_includes_zero_exactly_when_the_exact_mcnemar_p_is_at_least_five_percent(
        tmp_path, capsys, monkeypatch, only_a, only_b):
    _pair(tmp_path, only_a, only_b)
    out = call_cli(capsys, monkeypatch, "compare", "a", "b", "--json", runs_dir=tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    both_right, both_wrong = 20, N - 20 - only_a - only_b
    p = mcnemar([[both_right, only_a], [only_b, both_wrong]], exact=True).pvalue
    low, high = proportion_confint(only_a, only_a + only_b, alpha=0.05, method="beta")  # theta's CP interval
    diff = result["difference"]
    assert result["mcnemar"]["p_value"] == pytest.approx(p)
    assert {k: result["mcnemar"][k] for k in ("both_right", "only_a", "only_b", "both_wrong")} == \
        {"both_right": both_right, "only_a": only_a, "only_b": only_b, "both_wrong": both_wrong}
    assert set(diff) >= {"diff", "low", "high", "method"} and diff["method"].startswith("exact")
    assert (diff["low"] <= 0 <= diff["high"]) == (p >= 0.05) == (low <= 0.5 <= high)
    assert diff["diff"] == pytest.approx((only_a - only_b) / N)


def test_four_against_none_is_not_established_though_a_bootstrap_said_so(tmp_path, capsys, monkeypatch):
    _pair(tmp_path, 4, 0)
    result = json.loads(call_cli(capsys, monkeypatch, "compare", "a", "b", "--json", runs_dir=tmp_path).stdout)
    assert result["mcnemar"]["p_value"] == pytest.approx(0.125) and result["difference"]["low"] < 0


def test_unpaired_perfect_runs_get_newcombe_plus_minus_8_76_points(tmp_path, capsys, monkeypatch):
    _run(tmp_path, "a", np.ones(N, bool))
    other = _split().assign(sha256=[f"{i + 1000:064x}" for i in range(N + 8)],
                            path=[f"/other/{i:03d}.png" for i in range(N + 8)])
    _run(tmp_path, "b", np.ones(N, bool), split=other)
    out = call_cli(capsys, monkeypatch, "compare", "a", "b", "--unpaired", "--json", runs_dir=tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert not result["paired"] and result["mcnemar"] is None and "unpaired" in result["difference"]["method"]
    assert result["difference"]["low"] == pytest.approx(-0.0876, abs=1e-4)
    assert result["difference"]["high"] == pytest.approx(0.0876, abs=1e-4)
    text = call_cli(capsys, monkeypatch, "compare", "a", "b", "--unpaired", runs_dir=tmp_path).stdout
    assert "unpaired" in text and "McNemar exact p" not in text


def test_the_same_test_images_with_another_train_val_part_are_paired_from_the_cli(tmp_path, capsys, monkeypatch):
    _run(tmp_path, "a", np.arange(N) % 3 > 0)
    _run(tmp_path, "b", np.arange(N) % 4 > 0, split=_split(val_share=6))
    assert json.loads(store.RunDir(tmp_path / "a").run_json.read_text())["dataset"]["split_fingerprint"] != \
        json.loads(store.RunDir(tmp_path / "b").run_json.read_text())["dataset"]["split_fingerprint"]
    out = call_cli(capsys, monkeypatch, "compare", "a", "b", "--json", runs_dir=tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["paired"] and result["mcnemar"]["p_value"] is not None and result["n"] == N


def test_a_pair_that_no_image_separates_says_so_with_a_finite_interval(tmp_path, capsys, monkeypatch):
    _pair(tmp_path, 0, 0)
    out = call_cli(capsys, monkeypatch, "compare", "a", "b", runs_dir=tmp_path)
    assert out.returncode == 0 and "no image separates the two runs" in out.stdout
    result = json.loads(call_cli(capsys, monkeypatch, "compare", "a", "b", "--json", runs_dir=tmp_path).stdout)
    low, high = result["difference"]["low"], result["difference"]["high"]
    assert np.isfinite([low, high]).all() and low < 0 < high and result["mcnemar"]["p_value"] == 1.0
