"""A tiny end-to-end `python -m poc train` through the CLI's `main` (in this process; test_launcher runs the same
command as a real process), checked against the artifact contract; the same command through the Python API gives
the same predictions, and what the run decided (the final stage, each stage's temperature) is checked."""

from __future__ import annotations

import json

import h5py
import keras
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from cli import call_cli, call_main
from poc.errors import UserError
from poc.runs import store

TINY = ["--model", "mobilenet_v2", "--weights", "none", "--image-size", "32", "--tl-epochs", "2", "--ft-epochs", "2",
        "--batch-size", "16", "--fine-tune-at", "block_14_expand"]


@pytest.fixture(scope="module")
def tiny_run(demo_dataset, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    result = call_main("train", "--data", demo_dataset, *TINY, "--name", "tiny", runs_dir=runs)
    assert result.returncode == 0, result.stderr
    rd = store.RunDir(store.Path(result.stdout.strip().splitlines()[-1]))
    return rd


@pytest.fixture(scope="module")
def twin_run(demo_dataset, tmp_path_factory) -> store.RunDir:
    """tiny_run's command again, through the Python API (poc.train.training.train), in a runs folder of its own."""
    from poc.cli import build_parser, config_from_args
    from poc.train.training import train

    args = build_parser().parse_args(["train", "--data", str(demo_dataset), *TINY, "--name", "tiny"])
    return train(config_from_args(args), tmp_path_factory.mktemp("twin_runs"))


def test_run_json_records_status_config_dataset_and_params(tiny_run):
    info = json.loads(tiny_run.run_json.read_text())
    for key in ("id", "name", "status", "created", "started", "finished", "config", "dataset", "class_names",
                "model", "weights", "params", "fine_tune_at", "device", "versions", "seed", "timing",
                "best_epoch", "error"):
        assert key in info, key
    assert info["status"] == "completed" and info["error"] is None
    assert info["name"] == "tiny" and info["model"] == "mobilenet_v2" and info["fine_tune_at"] == "block_14_expand"
    assert info["dataset"]["counts"] == {"train": 100, "val": 10, "test": 10}
    assert set(info["timing"]) == {"features_tl", "tl", "ft"} and set(info["best_epoch"]) == {"tl", "ft"}
    assert {"python", "tensorflow", "keras"} <= set(info["versions"])


def test_each_stage_records_the_latency_of_one_image_through_the_compiled_call(tiny_run):
    for stage in ("tl", "ft"):
        metrics = json.loads(tiny_run.eval_file(stage, "metrics").read_text())
        assert isinstance(metrics["latency_ms"], float) and 0 < metrics["latency_ms"] < 60_000


def test_evaluation_probabilities_are_those_of_the_saved_model(tiny_run):
    """predictions.csv (written through the compiled call) against the rebuilt model's eager call."""
    import numpy as np

    from fixture_runs import raw_pixels
    from poc.inference import load_model

    run = load_model(tiny_run, "ft")
    predictions = pd.read_csv(tiny_run.eval_file("ft", "predictions"))
    eager = np.asarray(run.model(raw_pixels(predictions["path"].tolist(), run.image_size), training=False))
    np.testing.assert_allclose(predictions["confidence"], eager.max(axis=1), atol=1e-5)


def test_phase_one_trains_only_the_head(tiny_run):
    info = json.loads(tiny_run.run_json.read_text())
    features, classes = 1280, 10  # MobileNetV2's pooled feature width, ten cartoon classes
    assert info["params"]["trainable_tl"] == features * classes + classes
    assert info["params"]["trainable_tl"] < info["params"]["trainable_ft"] < info["params"]["total"]


def test_every_contract_file_exists_with_its_columns(tiny_run):
    assert list(pd.read_csv(tiny_run.split_csv).columns) == ["path", "label", "split", "sha256"]
    history = pd.read_csv(tiny_run.history_csv)
    assert list(history.columns) == store.HISTORY_COLUMNS
    assert {"phase", "epoch", "epochs", "step", "steps", "metrics", "eta_seconds", "updated"} <= \
        set(json.loads(tiny_run.progress_json.read_text()))
    assert tiny_run.weights.exists() and tiny_run.train_log.exists()
    assert any(tiny_run.logs_dir.rglob("events.out.tfevents*"))
    for stage in ("tl", "ft"):
        for kind in store.EVAL_FILES:
            assert tiny_run.eval_file(stage, kind).exists(), (stage, kind)
        report = pd.read_csv(tiny_run.eval_file(stage, "classification_report"))
        assert list(report.columns) == ["class", "precision", "recall", "f1", "support"]
        metrics = json.loads(tiny_run.eval_file(stage, "metrics").read_text())
        assert {"accuracy", "accuracy_ci95", "macro_f1", "weighted_f1", "top5_accuracy", "loss", "n",
                "perfect_class_share"} <= set(metrics)


def test_history_has_both_phases_with_global_epochs(tiny_run):
    history = pd.read_csv(tiny_run.history_csv)
    assert history["phase"].tolist()[:1] == ["tl"] and "ft" in set(history["phase"])
    assert history["epoch"].tolist() == list(range(1, len(history) + 1))
    assert (history.loc[history["phase"] == "ft", "lr"].round(8) == 1e-5).all()


@pytest.mark.parametrize("stage", ["tl", "ft"])
def test_report_and_confusion_matrix_equal_scikit_learn(tiny_run, stage):
    predictions = pd.read_csv(tiny_run.eval_file(stage, "predictions"))
    classes = json.loads(tiny_run.run_json.read_text())["class_names"]
    cm = pd.read_csv(tiny_run.eval_file(stage, "confusion_matrix"), index_col=0)
    expected_cm = confusion_matrix(predictions["label"], predictions["pred"], labels=classes)
    np.testing.assert_array_equal(cm.to_numpy(), expected_cm)
    assert list(cm.columns) == classes and list(cm.index) == classes
    assert cm.to_numpy().sum() == len(predictions) == 10
    p, r, f, s = precision_recall_fscore_support(predictions["label"], predictions["pred"], labels=classes,
                                                 zero_division=0)
    report = pd.read_csv(tiny_run.eval_file(stage, "classification_report"))
    np.testing.assert_allclose(report[["precision", "recall", "f1"]].to_numpy(), np.stack([p, r, f], 1))
    np.testing.assert_array_equal(report["support"], s)


def test_predictions_hold_one_probability_column_per_class_summing_to_one(tiny_run):
    predictions = pd.read_csv(tiny_run.eval_file("ft", "predictions"))
    probs = predictions.filter(like="prob_")
    assert probs.shape[1] == 10
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(predictions["confidence"], probs.max(axis=1), atol=1e-6)


def test_test_split_matches_the_manifest_and_is_never_trained_on(tiny_run):
    split = pd.read_csv(tiny_run.split_csv)
    predictions = pd.read_csv(tiny_run.eval_file("tl", "predictions"))
    assert sorted(predictions["path"]) == sorted(split.loc[split["split"] == "test", "path"])


def test_predict_command_ranks_classes(tiny_run, demo_dataset, capsys, monkeypatch):
    image = next((demo_dataset / "cat").iterdir())
    result = call_cli(capsys, monkeypatch, "predict", tiny_run.path, image, "--json", "--top-k", "3")
    assert result.returncode == 0, result.stderr
    ranked = json.loads(result.stdout)[0]["top_k"]
    assert len(ranked) == 3 and ranked[0]["probability"] >= ranked[-1]["probability"]


def test_runs_command_lists_the_run(tiny_run, capsys, monkeypatch):
    result = call_cli(capsys, monkeypatch, "runs", "--runs-dir", tiny_run.path.parent, "--json")
    rows = json.loads(result.stdout)
    assert result.returncode == 0 and rows[0]["id"] == tiny_run.id and rows[0]["status"] == "completed"


# ---------------------------------------------------------------- what a completed run records and decides

def _probs(rd, stage):
    frame = pd.read_csv(rd.eval_file(stage, "predictions"))
    return frame[[c for c in frame if c.startswith("prob_")]].to_numpy()


def test_the_same_command_twice_gives_identical_predictions(tiny_run, twin_run):
    a, b = tiny_run, twin_run
    for stage in ("tl", "ft"):
        np.testing.assert_array_equal(_probs(a, stage), _probs(b, stage))


def test_each_stage_records_validation_loss_and_accuracy_of_its_restored_weights(tiny_run):
    rd = tiny_run
    info = json.loads(rd.run_json.read_text())
    history = pd.read_csv(rd.history_csv)
    for stage in ("tl", "ft"):
        metrics = json.loads(rd.eval_file(stage, "metrics").read_text())
        best_row = history[(history["phase"] == stage) & (history["epoch"] == info["best_epoch"][stage])].iloc[0]
        # Keras' own val_loss at the best epoch (early stopping restored those weights), computed independently
        assert metrics["val_loss"] == pytest.approx(best_row["val_loss"], rel=1e-4)
        assert metrics["val_accuracy"] == pytest.approx(best_row["val_accuracy"], abs=1e-6)


def test_the_final_model_is_the_stage_with_the_lower_validation_loss(tiny_run):
    rd = tiny_run
    info = json.loads(rd.run_json.read_text())
    losses = {s: json.loads(rd.eval_file(s, "metrics").read_text())["val_loss"] for s in ("tl", "ft")}
    expected = "tl" if losses["tl"] < losses["ft"] else "ft"
    assert info["final_stage"] == expected
    with h5py.File(rd.weights) as final, h5py.File(rd.stage_weights(expected)) as stage:
        final_arrays, stage_arrays = [], []
        final.visititems(lambda n, o: final_arrays.append(o[()]) if isinstance(o, h5py.Dataset) else None)
        stage.visititems(lambda n, o: stage_arrays.append(o[()]) if isinstance(o, h5py.Dataset) else None)
    assert len(final_arrays) == len(stage_arrays)
    for x, y in zip(final_arrays, stage_arrays):
        np.testing.assert_array_equal(x, y)


def test_weights_files_hold_no_optimizer_state_and_match_the_parameter_size(tiny_run):
    rd = tiny_run
    info = json.loads(rd.run_json.read_text())
    for path in (rd.weights, rd.stage_weights("tl"), rd.stage_weights("ft")):
        with h5py.File(path) as f:
            assert "optimizer" not in f.keys()
        # the file is the parameters plus a little HDF5 structure
        assert abs(path.stat().st_size / 1e6 - info["params"]["size_mb"]) < 0.05 * info["params"]["size_mb"]
    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False, weights=None, pooling="avg")
    expected_mb = (model.count_params() + 1280 * 10 + 10) * 4 / 1e6  # float32 backbone + 10-class head
    assert info["params"]["size_mb"] == pytest.approx(expected_mb, abs=0.01)


def test_run_json_names_the_pretraining_and_the_frozen_random_choice(tiny_run):
    info = json.loads(tiny_run.run_json.read_text())
    assert info["pretraining"] == "none" and info["frozen_random"] is True
    assert info["dataset"]["carved"] == {}  # class folders: split by fractions, nothing carved


def test_resume_refuses_a_completed_run(tiny_run):
    from poc.train.training import resume

    with pytest.raises(UserError, match="already completed"):
        resume(tiny_run.id, tiny_run.path.parent)


def test_each_stage_records_a_temperature_fitted_on_validation(tiny_run):
    from poc.analysis.stats import expected_calibration_error

    rd = tiny_run
    split = pd.read_csv(rd.split_csv)
    metrics = json.loads(rd.eval_file("tl", "metrics").read_text())
    assert metrics["temperature"] > 0 and 0 <= metrics["ece_calibrated"] <= 1
    # the test split's own best temperature differs in general: the recorded one must not be fitted on test
    frame = pd.read_csv(rd.eval_file("tl", "predictions"))
    names = json.loads(rd.run_json.read_text())["class_names"]
    y_test = frame["label"].map({n: i for i, n in enumerate(names)}).to_numpy()
    probs = frame[[f"prob_{n}" for n in names]].to_numpy()
    assert metrics["ece"] == pytest.approx(expected_calibration_error(probs, y_test))
    assert len(split[split["split"] == "val"]) > 0


def test_compare_cli_pairs_two_runs_on_the_same_split(tiny_run, twin_run, capsys, monkeypatch):
    from scipy.stats import binomtest

    from cli import call_cli

    a, b = tiny_run, twin_run
    result = call_cli(capsys, monkeypatch, "compare", a.path, b.path, "--stage", "ft", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    pa, pb = (pd.read_csv(rd.eval_file("ft", "predictions")) for rd in (a, b))
    ok_a, ok_b = (pa["label"] == pa["pred"]).to_numpy(), (pb["label"] == pb["pred"]).to_numpy()
    only_a, only_b = int((ok_a & ~ok_b).sum()), int((~ok_a & ok_b).sum())
    expected = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    assert out["paired"] is True and out["mcnemar"]["p_value"] == pytest.approx(expected)


def _validation_nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(labels)), labels]))


def _ece(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error written out here: equal-width confidence bins, |accuracy - confidence|."""
    confidence, right = probs.max(axis=1), probs.argmax(axis=1) == labels
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    return float(sum(abs(right[which == b].mean() - confidence[which == b].mean()) * (which == b).mean()
                     for b in range(bins) if (which == b).any()))


@pytest.mark.parametrize("stage", ["tl", "ft"])
def test_each_stage_keeps_its_logits_and_its_temperature_is_the_validation_nll_minimum(tiny_run, stage):
    with np.load(tiny_run.eval_file(stage, "logits")) as z:
        val, val_labels, test = z["val"], z["val_labels"], z["test"]
    assert val.dtype == test.dtype == np.float32 and val.shape == (10, 10) and test.shape == (10, 10)
    metrics = json.loads(tiny_run.eval_file(stage, "metrics").read_text())
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 4001))
    nll = [_validation_nll(val.astype(float), val_labels, t) for t in grid]
    assert _validation_nll(val.astype(float), val_labels, metrics["temperature"]) <= min(nll) + 1e-3
    predictions = pd.read_csv(tiny_run.eval_file(stage, "predictions"))
    classes = json.loads(tiny_run.run_json.read_text())["class_names"]
    y_test = predictions["label"].map(classes.index).to_numpy()
    softmax = np.exp(test - test.max(axis=1, keepdims=True))
    softmax /= softmax.sum(axis=1, keepdims=True)  # test logits are in predictions.csv's row order
    np.testing.assert_allclose(predictions[[f"prob_{c}" for c in classes]].to_numpy(), softmax, atol=1e-5)
    scaled = np.exp(test / metrics["temperature"] - (test / metrics["temperature"]).max(axis=1, keepdims=True))
    scaled /= scaled.sum(axis=1, keepdims=True)
    assert _ece(scaled, y_test) == pytest.approx(metrics["ece_calibrated"], abs=0.005)


def test_evaluate_rewrites_identical_metrics_and_the_logits_of_an_older_run(tiny_run, capsys, monkeypatch):
    before = json.loads(tiny_run.eval_file("ft", "metrics").read_text())
    tiny_run.eval_file("ft", "logits").unlink()  # a run trained before ViTrine kept logits
    result = call_cli(capsys, monkeypatch, "evaluate", tiny_run.path)
    assert result.returncode == 0, result.stderr
    after = json.loads(tiny_run.eval_file("ft", "metrics").read_text())
    assert after["accuracy"] == before["accuracy"]
    assert after["loss"] == pytest.approx(before["loss"], rel=1e-4)
    assert tiny_run.eval_file("ft", "logits").exists()
    assert after["temperature"] == pytest.approx(before["temperature"], rel=1e-3)


@pytest.fixture(scope="module")
def half_data_tl_only_run(demo_dataset, tmp_path_factory) -> store.RunDir:
    """`--ft-epochs 0 --train-fraction 0.5`: phase 1 only, on half the training images."""
    runs = tmp_path_factory.mktemp("tl_only")
    result = call_main("train", "--data", demo_dataset, "--model", "mobilenet_v2", "--weights", "none",
                       "--image-size", "32", "--tl-epochs", "1", "--ft-epochs", "0", "--batch-size", "16",
                       "--train-fraction", "0.5", runs_dir=runs)
    assert result.returncode == 0, result.stderr
    return store.RunDir(store.Path(result.stdout.strip().splitlines()[-1]))


def test_zero_fine_tuning_epochs_skip_phase_two(half_data_tl_only_run):
    rd = half_data_tl_only_run
    assert set(pd.read_csv(rd.history_csv)["phase"]) == {"tl"}
    assert rd.eval_file("tl", "metrics").exists() and not rd.eval_dir("ft").exists()
    assert json.loads(rd.run_json.read_text())["status"] == "completed"


def test_from_run_fine_tunes_from_phase_one_weights_on_the_parents_split_and_train_fraction(
        half_data_tl_only_run, demo_dataset, capsys, monkeypatch):
    parent = half_data_tl_only_run
    result = call_cli(capsys, monkeypatch, "train", "--data", demo_dataset, "--model", "mobilenet_v2", "--from-run",
                      parent.id, "--ft-epochs", "1", "--fine-tune-at", "block_15_expand", "--batch-size", "16",
                      runs_dir=parent.path.parent)
    assert result.returncode == 0, result.stderr
    child = store.RunDir(store.Path(result.stdout.strip().splitlines()[-1]))
    parent_info, child_info = (json.loads(rd.run_json.read_text()) for rd in (parent, child))
    assert child_info["from_run"] == parent.id
    assert set(pd.read_csv(child.history_csv)["phase"]) == {"ft"}  # phase 1 is the parent's, not trained again
    same_tl = [json.loads(rd.eval_file("tl", "metrics").read_text())["accuracy"] for rd in (parent, child)]
    assert same_tl[0] == same_tl[1]
    assert child.split_csv.read_text() == parent.split_csv.read_text()
    assert child_info["dataset"]["split_fingerprint"] == parent_info["dataset"]["split_fingerprint"]
    assert child_info["dataset"]["test_fingerprint"] == parent_info["dataset"]["test_fingerprint"]
    assert parent_info["dataset"]["counts"]["train"] == 50  # half of the 100 training images: the share is kept
    assert child_info["dataset"]["counts"]["train"] == 50
