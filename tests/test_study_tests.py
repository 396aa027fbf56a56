"""Tests within a study (issue 18, item 7): each row of a study against its best row on the same test images,
Holm-adjusted over the study's tests (poc.analysis.study_results.study_tests).

The runs are written by hand: every run scores the same 40 test images, and the images each run gets right are
chosen so that the discordant counts against the best row are known. The expected p-values come from scipy's
binomial test and the adjusted ones from statsmodels' `multipletests(method="holm")`, not from the code tested.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests

from poc.analysis.evaluation import evaluate_probabilities
from poc.analysis.study_results import TEST_COLUMNS, study_summary, study_tests
from poc.runs import store
from poc.runs.store import RunDir
from poc.runs.study import HEAD_ONLY

N = 40
BEST = set(range(30))  # the best row's run gets images 0..29 right


def write_run(root: Path, run_id: str, study: dict, right: set[int], *, val_acc: float, n: int = N,
              prefix: str = "/img") -> RunDir:
    """A completed study run whose stage (tl for a phase-1 run, else ft) gets exactly the images `right` right."""
    rd = RunDir(root / run_id)
    rd.path.mkdir(parents=True)
    stage = "tl" if study.get("role") == "phase1" else "ft"
    labels = np.arange(n) % 2
    preds = np.where(np.isin(np.arange(n), sorted(right)), labels, 1 - labels)
    test = pd.DataFrame({"path": [f"{prefix}/{i}.png" for i in range(n)], "label": np.array(["a", "b"])[labels]})
    result = evaluate_probabilities(test, np.eye(2)[preds] * 0.9 + 0.05, ["a", "b"])
    result["metrics"].update(val_accuracy=val_acc, val_loss=1.0 - val_acc)
    rd.write_eval(stage, **result)
    rd.write_run({"id": run_id, "name": run_id, "status": "completed", "model": "mobilenet_v2", "family": "cnn",
                  "class_names": ["a", "b"], "final_stage": stage,
                  "dataset": {"split_fingerprint": "fp-1", "counts": {"train": 80, "val": 20, "test": n}},
                  "study": {"split_seed": 0, "train_fraction": 1.0, "trainable_params": 1000, **study}})
    return rd


def sweep_run(root: Path, study_id: str, index: int, cutoff: str | None, right: set[int], val_acc: float,
              seed: int = 0, **kwargs) -> RunDir:
    role = "phase1" if cutoff is None else "phase2"
    return write_run(root, f"{study_id}-r{index}", {"kind": "sweep", "id": study_id, "role": role,
                                                    "cutoff": cutoff, "seed": seed}, right, val_acc=val_acc,
                     **kwargs)


def right_vs_best(only_row: int, only_best: int) -> set[int]:
    """Images right for a run that alone gets `only_row` images right the best row misses (30, 31, ...) and
    misses `only_best` images the best row gets right (29, 28, ...)."""
    return (BEST - set(range(30 - only_best, 30))) | set(range(30, 30 + only_row))


def within_studies(root: Path) -> pd.DataFrame:
    runs = store.list_runs(root)
    return study_tests(runs, study_summary(runs))


@pytest.fixture
def sweep(tmp_path) -> Path:
    """One sweep: the best row (by validation) and three others with known discordant counts against it."""
    sweep_run(tmp_path, "s1", 0, None, right_vs_best(1, 5), val_acc=0.6)  # head only: 1 vs 5
    sweep_run(tmp_path, "s1", 1, "Conv_1", BEST, val_acc=0.9)  # the best row
    sweep_run(tmp_path, "s1", 2, "block_16_expand", right_vs_best(0, 6), val_acc=0.8)  # 0 vs 6
    sweep_run(tmp_path, "s1", 3, "0", right_vs_best(2, 2), val_acc=0.7)  # 2 vs 2
    return tmp_path


def test_each_non_best_row_is_compared_with_the_best_row_once(sweep):
    tests = within_studies(sweep)
    assert list(tests.columns) == TEST_COLUMNS
    assert sorted(tests["value"]) == sorted([HEAD_ONLY, "block_16_expand", "0"])
    assert set(tests["vs"]) == {"Conv_1"} and set(tests["vs_run"]) == {"s1-r1"}
    assert tests["reason"].isna().all() and (tests["n"] == N).all()


def test_the_difference_is_the_row_minus_the_best_row_from_the_discordant_images(sweep):
    tests = within_studies(sweep).set_index("value")
    for value, (only_row, only_best) in {HEAD_ONLY: (1, 5), "block_16_expand": (0, 6), "0": (2, 2)}.items():
        assert tests.loc[value, "diff"] == pytest.approx((only_row - only_best) / N)
        assert tests.loc[value, "discordant"] == only_row + only_best


def test_the_raw_p_value_is_the_exact_mcnemar_test_of_that_comparison(sweep):
    tests = within_studies(sweep).set_index("value")
    for value, (only_row, only_best) in {HEAD_ONLY: (1, 5), "block_16_expand": (0, 6), "0": (2, 2)}.items():
        expected = scipy_stats.binomtest(only_row, only_row + only_best, 0.5).pvalue
        assert tests.loc[value, "p_value"] == pytest.approx(expected)


def test_the_adjusted_p_values_are_holms_over_the_tests_of_the_study(sweep):
    tests = within_studies(sweep)
    _, expected, _, _ = multipletests(tests["p_value"].to_numpy(), method="holm")
    np.testing.assert_allclose(tests["p_holm"].to_numpy(), expected)


def test_an_interval_excluding_zero_can_sit_beside_an_adjusted_p_above_five_percent(sweep):
    row = within_studies(sweep).set_index("value").loc["block_16_expand"]  # 0 vs 6 discordant: p = 1/32
    assert row["high"] < 0 and row["p_value"] == pytest.approx(1 / 32)
    assert row["p_holm"] == pytest.approx(3 / 32) and row["p_holm"] > 0.05  # the smallest of 3 p-values, x 3


def test_the_family_is_per_study(sweep):
    sweep_run(sweep, "s2", 0, "Conv_1", BEST, val_acc=0.9)
    sweep_run(sweep, "s2", 1, "0", right_vs_best(0, 6), val_acc=0.5)  # alone in its study: not adjusted
    tests = within_studies(sweep)
    other = tests[tests["study"] == "s2"].iloc[0]
    assert other["p_holm"] == pytest.approx(other["p_value"]) == pytest.approx(1 / 32)
    first = tests[tests["study"] == "s1"]
    np.testing.assert_allclose(first["p_holm"], multipletests(first["p_value"].to_numpy(), method="holm")[1])


def test_rows_of_several_seeds_pair_the_runs_of_their_lowest_common_seed(tmp_path):
    def size_run(run_id, fraction, seed, right, val_acc):
        write_run(tmp_path, run_id, {"kind": "data_size", "id": "size", "role": "run", "seed": seed,
                                     "train_fraction": fraction}, right, val_acc=val_acc)

    size_run("best-1", 1.0, 1, BEST, 0.9)
    size_run("best-2", 1.0, 2, BEST, 0.9)
    size_run("half-0", 0.5, 0, right_vs_best(0, 10), 0.5)  # seed 0: the best row has no such run
    size_run("half-1", 0.5, 1, right_vs_best(1, 3), 0.5)
    row = within_studies(tmp_path).iloc[0]
    assert row["seed"] == 1 and (row["run"], row["vs_run"]) == ("half-1", "best-1")
    assert row["diff"] == pytest.approx(-2 / N) and row["discordant"] == 4


def test_a_row_with_no_seed_in_common_gets_a_reason_and_leaves_the_family(sweep):
    sweep_run(sweep, "s1", 4, "block_15_expand", right_vs_best(0, 8), val_acc=0.5, seed=3)
    tests = within_studies(sweep).set_index("value")
    assert "no seed in common" in tests.loc["block_15_expand", "reason"]
    assert np.isnan(tests.loc["block_15_expand", "p_holm"])
    tested = tests[tests["reason"].isna()]
    assert len(tested) == 3
    np.testing.assert_allclose(tested["p_holm"], multipletests(tested["p_value"].to_numpy(), method="holm")[1])


def test_a_row_tested_on_other_images_gets_a_reason_not_an_exception(sweep):
    sweep_run(sweep, "s1", 4, "block_15_expand", BEST, val_acc=0.5, prefix="/elsewhere")
    row = within_studies(sweep).set_index("value").loc["block_15_expand"]
    assert "different images" in row["reason"] and np.isnan(row["p_value"])


def test_a_row_whose_predictions_are_gone_gets_a_reason(sweep):
    RunDir(sweep / "s1-r2").eval_file("ft", "predictions").unlink()  # metrics.json still counts it in the summary
    row = within_studies(sweep).set_index("value").loc["block_16_expand"]
    assert "predictions.csv" in row["reason"] and np.isnan(row["p_holm"])


def test_a_study_of_one_row_has_no_test(tmp_path):
    for seed in (0, 1, 2):
        write_run(tmp_path, f"rep-{seed}", {"kind": "seeds", "id": "rep", "role": "run", "seed": seed}, BEST,
                  val_acc=0.9)
    tests = within_studies(tmp_path)
    assert tests.empty and list(tests.columns) == TEST_COLUMNS


def test_a_study_without_a_best_row_gives_each_row_a_reason(sweep):
    runs = store.list_runs(sweep)
    table = study_summary(runs).assign(best=False)
    tests = study_tests(runs, table)
    assert len(tests) == 4 and tests["reason"].str.contains("no best row").all()
