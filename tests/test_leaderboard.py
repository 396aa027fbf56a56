"""poc.analysis.leaderboard: one row per run with checked fields, and the verdict's rule: one split, best on validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from poc.runs import store
from poc.analysis.leaderboard import COLUMNS, best_by_validation, comparison_groups, leaderboard, verdict


def _run(root, run_id: str, stages: dict[str, dict] | None = None, **info) -> store.RunDir:
    rd = store.RunDir(root / run_id).create()
    rd.write_run({"id": run_id, "status": "completed", **info})
    for stage, metrics in (stages or {}).items():
        store.write_json(rd.eval_file(stage, "metrics"), metrics)
    return rd


def _board(root) -> pd.DataFrame:
    return leaderboard(store.list_runs(root)).set_index("id")


def test_the_final_stage_is_the_recorded_one_and_gives_the_validation_columns(tmp_path):
    stages = {"tl": {"accuracy": 0.6, "val_accuracy": 0.7, "val_loss": 0.9, "macro_f1": 0.5},
              "ft": {"accuracy": 0.65, "val_accuracy": 0.68, "val_loss": 1.0, "macro_f1": 0.55}}
    _run(tmp_path, "kept-tl", stages, final_stage="tl")
    _run(tmp_path, "older", stages)  # before run.json recorded final_stage: the last evaluated stage
    board = _board(tmp_path)
    assert board.loc["kept-tl", ["final_stage", "val_acc", "val_loss", "macro_f1"]].tolist() == ["tl", 0.7, 0.9, 0.5]
    assert board.loc["older", ["final_stage", "val_acc", "macro_f1"]].tolist() == ["ft", 0.68, 0.55]


def test_model_size_comes_from_the_parameters_not_the_weights_file(tmp_path):
    rd = _run(tmp_path, "r", params={"total": 1000, "size_mb": 0.004})
    rd.weights.write_bytes(b"\0" * 3_000_000)  # a file that also held Adam's two moments
    assert _board(tmp_path).loc["r", "size_mb"] == 0.004
    _run(tmp_path, "old", params={"total": 1000})
    assert np.isnan(_board(tmp_path).loc["old", "size_mb"])


@pytest.mark.parametrize("info, expected", [
    ({"pretraining": "demo", "weights": "none"}, "demo"),
    ({"weights": "imagenet"}, "imagenet"),
    ({"weights": "demo"}, "demo"),
    ({"weights": "none"}, "none"),
    ({"weights": "/ckpt/ViT-B_16.npz"}, "checkpoint"),
    ({"weights": "run:20250101-000000-vit-ti16-abcd"}, "run"),
])
def test_pretraining_is_recorded_or_derived_from_the_weights(tmp_path, info, expected):
    _run(tmp_path, "r", **info)
    assert _board(tmp_path).loc["r", "pretraining"] == expected


def test_text_where_a_number_belongs_is_missing_and_named(tmp_path):
    _run(tmp_path, "r", {"ft": {"accuracy": "high", "val_accuracy": 0.5}}, params={"trainable_tl": "many"},
         image_size=[64])
    row = _board(tmp_path).loc["r"]
    assert np.isnan(row["trainable_tl"]) and np.isnan(row["acc_ft"]) and np.isnan(row["image_size"])
    for note in ("trainable_tl is not a number", "eval/ft/metrics.json: accuracy is not a number",
                 "image_size is not a number"):
        assert note in row["problems"]
    assert list(_board(tmp_path).reset_index().columns) == COLUMNS


# ---------------------------------------------------------------- selection

def _rows(*runs) -> pd.DataFrame:
    return pd.DataFrame([{"id": i, "val_acc": va, "val_loss": vl, "acc": ta} for i, va, vl, ta in runs])


def test_best_is_the_highest_validation_accuracy_whatever_the_test_says():
    best, left_out = best_by_validation(_rows(("a", 0.70, 0.9, 0.90), ("b", 0.80, 1.2, 0.60), ("c", None, None, 0.99)))
    assert best["id"] == "b"  # lowest test accuracy of the three, highest validation accuracy
    assert left_out["id"].tolist() == ["c"]  # no validation metrics: not comparable, never chosen


def test_a_validation_tie_goes_to_the_lower_validation_loss():
    best, _ = best_by_validation(_rows(("a", 0.8, 0.9, 0.5), ("b", 0.8, 0.7, 0.4), ("c", 0.8, None, 0.9)))
    assert best["id"] == "b"


def test_without_validation_metrics_there_is_no_best():
    best, left_out = best_by_validation(_rows(("a", None, None, 0.9)))
    assert best is None and left_out["id"].tolist() == ["a"]


def test_choosing_on_validation_reports_an_unbiased_test_accuracy():
    """Five runs of one true accuracy, 50%, 40 validation and 40 test images each: the run with the best test
    accuracy reads about 59% (the expected maximum of five binomials); chosen on validation, its test
    accuracy is an unbiased 50%."""
    rng = np.random.default_rng(0)
    by_validation, by_test = [], []
    for _ in range(1000):
        val, test = rng.binomial(40, 0.5, 5) / 40, rng.binomial(40, 0.5, 5) / 40
        best, _ = best_by_validation(_rows(*[(str(i), val[i], 1 - val[i], test[i]) for i in range(5)]))
        by_validation.append(best["acc"])
        by_test.append(test.max())
    k = np.arange(1, 41)
    expected_max = (1 - binom.cdf(k - 1, 40, 0.5) ** 5).sum() / 40  # E[max] = sum over k of P(max >= k)
    assert expected_max == pytest.approx(0.59, abs=0.005)
    assert np.mean(by_test) == pytest.approx(expected_max, abs=0.01)  # sd of the mean ~0.002
    assert np.mean(by_validation) == pytest.approx(0.5, abs=0.01)  # sd of the mean ~0.0025


def test_groups_are_test_sets_and_the_latest_completed_run_comes_first(tmp_path):
    _run(tmp_path, "a", dataset={"path": "/d/cats", "split_fingerprint": "s1", "test_fingerprint": "f1"},
         finished="2025-01-02T00:00:00+00:00")
    _run(tmp_path, "b", dataset={"path": "/d/cats", "split_fingerprint": "s2", "test_fingerprint": "f1"},
         finished="2025-01-01T00:00:00+00:00")  # another train/val part, the same test images: one group
    _run(tmp_path, "c", dataset={"path": "/d/dogs", "split_fingerprint": "s3", "test_fingerprint": "f2"},
         finished="2025-01-03T00:00:00+00:00")
    _run(tmp_path, "d", dataset={"path": "/d/dogs", "split_fingerprint": "s4", "test_fingerprint": "f3"},
         status="running")
    groups = comparison_groups(leaderboard(store.list_runs(tmp_path)))
    assert groups["test_fingerprint"].tolist() == ["f2", "f1"]  # f3 has no completed run
    assert groups["runs"].tolist() == [1, 2] and groups["dataset"].tolist() == ["/d/dogs", "/d/cats"]


def test_the_verdict_keeps_families_and_splits_apart(tmp_path):
    def run(run_id, family, split, val, pretraining="imagenet"):
        _run(tmp_path, run_id, {"tl": {"accuracy": 0.5, "val_accuracy": val, "val_loss": 1.0}}, family=family,
             dataset={"path": "/d", "test_fingerprint": split}, pretraining=pretraining)

    run("cnn-1", "cnn", "f1", 0.6)
    run("cnn-other-split", "cnn", "f2", 0.99)
    run("vit-1", "vit", "f1", 0.7, pretraining="demo")
    run("base-1", "baseline", "f1", 0.9)
    _run(tmp_path, "vit-old", {"tl": {"accuracy": 0.95}}, family="vit",
         dataset={"path": "/d", "test_fingerprint": "f1"})  # an older run: no validation metrics
    v = verdict(leaderboard(store.list_runs(tmp_path)), "f1")
    assert {f: r["id"] for f, r in v.best.items()} == {"cnn": "cnn-1", "vit": "vit-1", "baseline": "base-1"}
    assert v.not_comparable["id"].tolist() == ["vit-old"]
    assert v.pretraining_differs and v.dataset == "/d"
    assert v.candidates == {"cnn": 1, "vit": 1, "baseline": 1}  # vit-old has no validation metrics
    assert v.baseline_leads  # the baseline's 0.9 beats 0.6 and 0.7 on validation


def test_the_verdict_counts_the_runs_each_best_was_chosen_from_and_its_seed_repeats(tmp_path):
    def run(run_id, family, val, acc, study=None):
        _run(tmp_path, run_id, {"tl": {"accuracy": acc, "val_accuracy": val, "val_loss": 1.0}}, family=family,
             dataset={"path": "/d", "test_fingerprint": "f1"}, **({"study": study} if study else {}))

    for i, val in enumerate((0.5, 0.6, 0.7, 0.65)):
        run(f"cnn-{i}", "cnn", val, 0.6)
    seeds = {"kind": "seeds", "id": "seeds-vit", "role": "run"}
    for i, (val, acc) in enumerate(((0.8, 0.70), (0.75, 0.74), (0.7, 0.66))):
        run(f"vit-{i}", "vit", val, acc, study={**seeds, "seed": i})
    v = verdict(leaderboard(store.list_runs(tmp_path)), "f1")
    assert v.candidates["cnn"] == 4 and v.candidates["vit"] == 3
    assert v.repeats["cnn"] == [] and sorted(v.repeats["vit"]) == [0.66, 0.70, 0.74]
    assert not v.baseline_leads  # no baseline at all
