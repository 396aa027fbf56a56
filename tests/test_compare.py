"""poc.analysis.compare on run directories built by hand with poc.runs.store, against scipy and scikit-learn computed here."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from sklearn.metrics import f1_score

from poc.runs import store
from poc.analysis.compare import compare_runs, comparison_json, format_comparison, stage_change
from poc.data.split import split_fingerprint, held_out_fingerprint
from poc.errors import UserError
from poc.analysis.evaluation import evaluate_probabilities

CLASSES = ["cat", "dog", "owl"]
N_TEST = 60


def _split(root: str = "/data", seed: int = 0) -> pd.DataFrame:
    """12 train + 60 test images; `seed` changes which images are test (another split, another fingerprint)."""
    rng = np.random.default_rng(seed)
    n = 72
    test = set(rng.choice(n, N_TEST, replace=False).tolist())
    labels = [CLASSES[i % 3] for i in range(n)]
    return pd.DataFrame({"path": [f"{root}/{labels[i]}/{i:03d}.png" for i in range(n)], "label": labels,
                         "split": ["test" if i in test else "train" for i in range(n)],
                         "sha256": [f"{i:064x}" for i in range(n)]})


def _probs(labels: list[str], right: np.ndarray, seed: int) -> np.ndarray:
    """Probabilities whose argmax is the label where `right`, another class elsewhere."""
    rng = np.random.default_rng(seed)
    y = np.array([CLASSES.index(label) for label in labels])
    pred = np.where(right, y, (y + rng.integers(1, 3, len(y))) % 3)
    probs = rng.random((len(y), 3)) * 0.3
    probs[np.arange(len(y)), pred] += 1.0
    return probs / probs.sum(1, keepdims=True)


def _run(tmp_path, name: str, split: pd.DataFrame, stages: dict[str, np.ndarray], final_stage=None,
         seed: int = 0) -> store.RunDir:
    """A run directory as training writes it: run.json, split.csv and eval/<stage>/ for each stage given as
    per-test-image correctness."""
    rd = store.RunDir(tmp_path / name).create()
    info = {"id": name, "name": f"{name} run", "model": f"model_{name}", "class_names": CLASSES,
            "status": "completed", "dataset": {"path": "/data", "split_fingerprint": split_fingerprint(split)}}
    if final_stage:
        info["final_stage"] = final_stage
    rd.write_run(info)
    store.write_csv(rd.split_csv, split)
    test = split[split["split"] == "test"].reset_index(drop=True)
    for i, (stage, right) in enumerate(stages.items()):
        rd.write_eval(stage, **evaluate_probabilities(test, _probs(test["label"].tolist(), right, seed + i),
                                                     CLASSES))
    return rd


def _agreeing(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shared = rng.random(N_TEST)
    return shared < 0.75, (shared < 0.5) ^ (rng.random(N_TEST) < 0.1)


@pytest.fixture
def pair(tmp_path):
    a, b = _agreeing()
    split = _split()
    return (_run(tmp_path, "a", split, {"tl": b, "ft": a}, final_stage="ft", seed=1),
            _run(tmp_path, "b", split, {"tl": b}, final_stage="tl", seed=2), a, b)


def _independent(rd_a, stage_a, rd_b, stage_b):
    """Correctness of both runs read back from predictions.csv with pandas, paired by path."""
    pa = pd.read_csv(rd_a.eval_file(stage_a, "predictions"))
    pb = pd.read_csv(rd_b.eval_file(stage_b, "predictions")).set_index("path").loc[pa["path"]].reset_index()
    return pa, pb, (pa["label"] == pa["pred"]).to_numpy(), (pb["label"] == pb["pred"]).to_numpy()


def test_same_split_gives_the_table_and_mcnemar_p_of_an_independent_computation(pair):
    rd_a, rd_b, _, _ = pair
    result = compare_runs(rd_a, rd_b)
    pa, _, ok_a, ok_b = _independent(rd_a, "ft", rd_b, "tl")
    counts = pd.crosstab(ok_a, ok_b).reindex(index=[True, False], columns=[True, False], fill_value=0)
    only_a, only_b = int(counts.loc[True, False]), int(counts.loc[False, True])
    m = result["mcnemar"]
    assert (m["both_right"], m["only_a"], m["only_b"], m["both_wrong"]) == \
        (counts.loc[True, True], only_a, only_b, counts.loc[False, False])
    assert m["p_value"] == pytest.approx(sps.binomtest(only_a, only_a + only_b, 0.5).pvalue, abs=1e-12)
    assert sorted(result["table"]["only_a"]) == sorted(pa["path"][ok_a & ~ok_b])
    assert sorted(result["table"]["both_wrong"]) == sorted(pa["path"][~ok_a & ~ok_b])
    assert result["paired"] and result["n"] == N_TEST
    assert result["difference"]["diff"] == pytest.approx(ok_a.mean() - ok_b.mean())
    assert result["difference"]["low"] <= result["difference"]["diff"] <= result["difference"]["high"]


def test_accuracies_carry_wilson_intervals(pair):
    rd_a, rd_b, _, _ = pair
    result = compare_runs(rd_a, rd_b)
    _, _, ok_a, _ = _independent(rd_a, "ft", rd_b, "tl")
    ci = sps.binomtest(int(ok_a.sum()), N_TEST).proportion_ci(method="wilson")
    assert result["accuracy_a"]["value"] == pytest.approx(ok_a.mean())
    assert result["accuracy_a"]["ci95"] == pytest.approx([ci.low, ci.high])


def test_per_class_f1_differences_equal_scikit_learn(pair):
    rd_a, rd_b, _, _ = pair
    rows = compare_runs(rd_a, rd_b)["per_class_f1"]
    pa, pb, _, _ = _independent(rd_a, "ft", rd_b, "tl")
    f1_a = f1_score(pa["label"], pa["pred"], labels=CLASSES, average=None)
    f1_b = f1_score(pb["label"], pb["pred"], labels=CLASSES, average=None)
    assert [r["class"] for r in rows] == CLASSES
    assert [r["delta"] for r in rows] == pytest.approx(list(f1_a - f1_b))
    assert [r["f1_b"] for r in rows] == pytest.approx(list(f1_b))


def test_each_run_is_compared_at_its_final_stage_unless_a_stage_is_named(pair):
    rd_a, rd_b, _, _ = pair
    result = compare_runs(rd_a, rd_b)
    assert (result["run_a"]["stage"], result["run_b"]["stage"]) == ("ft", "tl")
    named = compare_runs(rd_a, rd_b, stage="tl")
    assert (named["run_a"]["stage"], named["run_b"]["stage"]) == ("tl", "tl")
    assert named["mcnemar"]["only_a"] == named["mcnemar"]["only_b"] == 0  # a's tl predictions are b's outcomes


def test_a_run_without_a_recorded_final_stage_is_compared_after_fine_tuning(tmp_path):
    a, b = _agreeing()
    split = _split()
    old = _run(tmp_path, "old", split, {"tl": b, "ft": a})
    other = _run(tmp_path, "other", split, {"tl": a})
    assert compare_runs(old, other)["run_a"]["stage"] == "ft"
    assert compare_runs(other, old)["run_a"]["stage"] == "tl"


def test_images_are_paired_by_path_not_by_row(pair):
    rd_a, rd_b, _, _ = pair
    before = compare_runs(rd_a, rd_b)
    shuffled = pd.read_csv(rd_b.eval_file("tl", "predictions")).sample(frac=1.0, random_state=3)
    store.write_csv(rd_b.eval_file("tl", "predictions"), shuffled)
    after = compare_runs(rd_a, rd_b)
    assert after["mcnemar"] == before["mcnemar"] and after["difference"] == before["difference"]


def test_a_moved_dataset_folder_still_pairs_by_image_content(tmp_path):
    a, b = _agreeing()
    here, there = _split("/data"), _split("/mnt/elsewhere/data")
    rd_a = _run(tmp_path, "a", here, {"ft": a}, seed=1)
    rd_b = _run(tmp_path, "b", there, {"ft": b}, seed=2)
    same_place = _run(tmp_path, "b2", here, {"ft": b}, seed=2)
    moved, reference = compare_runs(rd_a, rd_b), compare_runs(rd_a, same_place)
    assert moved["paired"] and moved["mcnemar"] == reference["mcnemar"]


def test_different_test_images_are_refused_naming_them_and_the_fix(tmp_path):
    a, b = _agreeing()
    rd_a = _run(tmp_path, "a", _split(seed=0), {"ft": a})
    rd_b = _run(tmp_path, "b", _split(seed=1), {"ft": b})
    with pytest.raises(UserError, match="tested on different images") as error:
        compare_runs(rd_a, rd_b)
    message = str(error.value)
    assert held_out_fingerprint(_split(seed=0))[:8] in message and held_out_fingerprint(_split(seed=1))[:8] in message
    assert "--from-run a" in message and "--data/--seed/--val/--test" in message and "--unpaired" in message


def test_the_same_test_images_with_different_train_val_parts_are_paired(tmp_path):
    a, b = _agreeing()
    split = _split(seed=0)
    other = split.copy()
    train = other.index[other["split"] == "train"]
    other.loc[train[:4], "split"] = "val"  # another train/val part, the same 60 test images
    rd_a, rd_b = _run(tmp_path, "a", split, {"ft": a}), _run(tmp_path, "b", other, {"ft": b})
    result = compare_runs(rd_a, rd_b)
    assert result["paired"] and result["mcnemar"] is not None and not result["same_split"]
    assert result["n"] == N_TEST and "their train/val parts differ" in format_comparison(result)


def test_different_test_images_compare_unpaired_with_newcombe_only_when_allowed(tmp_path):
    from statsmodels.stats.proportion import confint_proportions_2indep

    a, b = _agreeing()
    rd_a = _run(tmp_path, "a", _split(seed=0), {"ft": a})
    rd_b = _run(tmp_path, "b", _split(seed=1), {"ft": b})
    result = compare_runs(rd_a, rd_b, allow_unpaired=True)
    assert not result["paired"] and result["mcnemar"] is None and result["table"] is None
    assert result["difference"]["diff"] == pytest.approx(a.mean() - b.mean())
    assert result["difference"]["method"].startswith("unpaired: Newcombe")
    low, high = confint_proportions_2indep(int(a.sum()), len(a), int(b.sum()), len(b), method="newcomb",
                                           compare="diff")
    assert (result["difference"]["low"], result["difference"]["high"]) == pytest.approx((low, high), abs=1e-9)


def test_runs_that_know_different_classes_are_not_compared_even_unpaired(tmp_path):
    a, b = _agreeing()
    rd_a = _run(tmp_path, "a", _split(seed=0), {"ft": a})
    rd_b = _run(tmp_path, "b", _split(seed=1), {"ft": b})
    rd_b.update_run(class_names=["cat", "dog", "emu"])
    with pytest.raises(UserError, match="different classes.*emu"):
        compare_runs(rd_a, rd_b, allow_unpaired=True)


def test_a_missing_stage_is_a_user_error(pair):
    rd_a, rd_b, _, _ = pair
    with pytest.raises(UserError, match="eval/ft/predictions.csv"):
        compare_runs(rd_a, rd_b, stage="ft")  # b has no fine-tuning stage


def test_stage_change_flags_the_class_that_got_worse(tmp_path):
    split = _split()
    labels = split.loc[split["split"] == "test", "label"].to_numpy()
    tl = np.ones(N_TEST, bool)
    ft = labels != "owl"  # fine-tuning breaks every owl and keeps the rest
    tl[np.flatnonzero(labels == "cat")[:10]] = False  # ... and fixes ten cats (half of them)
    rd = _run(tmp_path, "run", split, {"tl": tl, "ft": ft})
    result = stage_change(rd)
    worse = {r["class"]: r["worse"] for r in result["per_class_f1"]}
    assert worse["owl"] is True and worse["cat"] is False
    pt, pf, ok_tl, ok_ft = _independent(rd, "tl", rd, "ft")
    f1_tl = f1_score(pt["label"], pt["pred"], labels=CLASSES, average=None)
    f1_ft = f1_score(pf["label"], pf["pred"], labels=CLASSES, average=None)
    assert [r["delta"] for r in result["per_class_f1"]] == pytest.approx(list(f1_ft - f1_tl))
    assert [r["worse"] for r in result["per_class_f1"]] == list(f1_ft - f1_tl < 0)
    newly_wrong, newly_right = int((ok_tl & ~ok_ft).sum()), int((~ok_tl & ok_ft).sum())
    assert (result["mcnemar"]["only_a"], result["mcnemar"]["only_b"]) == (newly_right, newly_wrong)
    owls = int((labels == "owl").sum())
    assert (newly_wrong, newly_right) == (owls, 10)
    assert result["mcnemar"]["p_value"] == pytest.approx(sps.binomtest(10, owls + 10, 0.5).pvalue)
    assert result["difference"]["diff"] == pytest.approx(ok_ft.mean() - ok_tl.mean())  # the gain of fine-tuning


def test_stage_change_needs_both_stages(pair):
    _, rd_b, _, _ = pair
    with pytest.raises(UserError, match="eval/ft"):
        stage_change(rd_b)


def test_the_text_shows_counts_not_paths(pair):
    rd_a, rd_b, _, _ = pair
    result = compare_runs(rd_a, rd_b)
    text = format_comparison(result)
    m = result["mcnemar"]
    lines = text.splitlines()
    assert any(line.split() == ["A", "right", str(m["both_right"]), str(m["only_a"])] for line in lines)
    assert any(line.split() == ["A", "wrong", str(m["only_b"]), str(m["both_wrong"])] for line in lines)
    assert f"McNemar exact p = {m['p_value']:.4g}" in text
    assert f"{result['difference']['diff']:+.3f}" in text
    assert ".png" not in text


def test_json_is_plain_and_keeps_the_paths(pair):
    rd_a, rd_b, _, _ = pair
    result = compare_runs(rd_a, rd_b)
    loaded = json.loads(json.dumps(comparison_json(result), allow_nan=False))
    assert loaded["table"]["only_b"] == result["table"]["only_b"]
    assert loaded["mcnemar"]["p_value"] == result["mcnemar"]["p_value"]
