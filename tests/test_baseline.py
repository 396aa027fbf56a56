"""Baselines: a pixel logistic regression and a linear probe, written as runs on the same split as `train`."""

from __future__ import annotations

import argparse
import inspect
import shutil

import keras
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from poc.runs import store
from poc.train.baselines import C_GRID, MAX_ITER, add_arguments, baseline_summary, run_baselines, summary_text
from poc.data.images import load_array
from poc.data.scan import scan_dataset
from poc.data.split import split_dataset, split_fingerprint
from poc.errors import UserError

# The demo's CNN, shrunk: the shape-pretrained MobileNetV2 (a random frozen backbone's features are ~1e-12,
# nothing a probe could be checked on), one phase-1 epoch, no fine-tuning.
TINY_CNN = {"model": "mobilenet_v2", "weights": "demo", "image_size": 64, "tl_epochs": 1, "ft_epochs": 0,
            "augment": [], "batch_size": 32, "name": "tiny demo CNN"}


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def pixel_run(demo_dataset, tmp_path_factory) -> store.RunDir:
    runs = tmp_path_factory.mktemp("pixel_runs")
    (rd,) = run_baselines(data=demo_dataset, runs_dir=runs)
    return rd


@pytest.fixture(scope="module")
def demo_runs(demo_dataset, tmp_path_factory) -> list[store.RunDir]:
    """`run_demo` with one tiny CNN run: the CNN run, then the baselines it makes from it."""
    import poc.train.demo

    base = tmp_path_factory.mktemp("demo_runs")
    data = base / "data"
    shutil.copytree(demo_dataset, data)
    (data / ".complete").write_text("copied by the test\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(poc.train.demo.DEMO_SETTINGS, "runs", [TINY_CNN])
        return list(poc.train.demo.run_demo(base / "runs", data))


def _info(rd: store.RunDir) -> dict:
    return store.read_json(rd.run_json)


def _metrics(rd: store.RunDir) -> dict:
    return store.read_json(rd.eval_file("tl", "metrics"))


def _probabilities(rd: store.RunDir, class_names: list[str]) -> np.ndarray:
    predictions = store.read_predictions(rd, "tl")
    return predictions[[f"prob_{name}" for name in class_names]].to_numpy()


def _labels(frame: pd.DataFrame, class_names: list[str]) -> np.ndarray:
    return np.array([class_names.index(label) for label in frame["label"]])


def _independent_choice(x: dict, y: dict) -> tuple[float, dict]:
    """C by the documented rule (best validation accuracy, then lower validation log-loss, then smaller C),
    computed here with scikit-learn alone; returns (C, {C: fitted pipeline})."""
    fitted, keys = {}, {}
    for c in C_GRID:
        with threadpool_limits(1):  # small fits: one BLAS thread is much faster on a busy machine
            model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=MAX_ITER))
            model.fit(x["train"], y["train"])
        probs = model.predict_proba(x["val"])
        keys[c] = (-accuracy_score(y["val"], probs.argmax(axis=1)), log_loss(y["val"], probs, labels=model.classes_), c)
        fitted[c] = model
    return min(keys, key=keys.get), fitted


# ---------------------------------------------------------------- the pixel baseline

def test_pixel_baseline_writes_a_run_directory_of_the_contract(pixel_run, demo_dataset):
    info = _info(pixel_run)
    assert info["id"] == pixel_run.id and info["status"] == "completed"
    assert info["model"] == "baseline_pixels" and info["family"] == "baseline"
    assert info["name"] == "pixel logistic regression (32 px)"
    assert info["final_stage"] == "tl" and info["best_epoch"] == {} and info["error"] is None
    assert info["created"] and info["started"] and info["finished"] and info["timing"]["tl"] >= 0
    coefficients = 10 * (32 * 32 * 3) + 10  # a weight per class and pixel value, plus an intercept per class
    assert info["params"] == {"total": coefficients, "trainable_tl": coefficients, "trainable_ft": 0,
                              "size_mb": round(coefficients * 4 / 1e6, 2)}  # float32, as the pixels
    assert info["dataset"]["num_classes"] == len(info["class_names"]) == 10
    assert info["config"]["pixels_size"] == 32 and info["seed"] == 0 and info["device"] and info["versions"]
    assert info["baseline"]["C"] in C_GRID
    for kind in ("predictions", "confusion_matrix", "classification_report", "metrics"):
        assert pixel_run.eval_file("tl", kind).is_file()
    assert store.read_split(pixel_run) is not None
    assert not pixel_run.weights.exists() and not any(pixel_run.path.glob("*.h5"))
    assert not pixel_run.eval_dir("ft").exists()


def test_pixel_test_accuracy_is_that_of_the_written_predictions(pixel_run):
    predictions = store.read_predictions(pixel_run, "tl")
    metrics = _metrics(pixel_run)
    split = store.read_split(pixel_run)
    assert sorted(predictions["path"]) == sorted(split.loc[split["split"] == "test", "path"])
    assert metrics["accuracy"] == pytest.approx(accuracy_score(predictions["label"], predictions["pred"]))
    assert metrics["n"] == len(predictions) == _info(pixel_run)["dataset"]["counts"]["test"]


def test_pixel_baseline_keeps_logits_whose_softmax_is_its_predictions_and_scikit_learns(pixel_run):
    """logits.npz as a network run writes it: softmax(test logits) is predictions.csv's probabilities, which
    are the chosen model's predict_proba; the temperature is fitted on the validation logits."""
    from scipy.special import softmax

    classes = _info(pixel_run)["class_names"]
    logits = store.read_logits(pixel_run, "tl")
    assert logits is not None and logits["test"].shape == (len(store.read_predictions(pixel_run, "tl")), len(classes))
    np.testing.assert_allclose(softmax(logits["test"], axis=1), _probabilities(pixel_run, classes), atol=1e-5)
    assert _metrics(pixel_run)["temperature"] > 0 and 0 <= _metrics(pixel_run)["ece_calibrated"] <= 1


def test_pixel_split_is_the_one_train_makes_from_the_same_data_and_seed(pixel_run, demo_dataset):
    expected = split_dataset(scan_dataset(demo_dataset), val=0.1, test=0.1, seed=0)
    info = _info(pixel_run)
    assert info["dataset"]["split_fingerprint"] == split_fingerprint(expected)
    assert split_fingerprint(store.read_split(pixel_run)) == split_fingerprint(expected)
    assert info["dataset"]["counts"] == expected["split"].value_counts().to_dict()


def test_pixel_baseline_is_the_validation_chosen_scikit_learn_model(pixel_run):
    """Recomputed with scikit-learn from the written split: same C, same validation scores, same test
    probabilities."""
    info = _info(pixel_run)
    names, split = info["class_names"], store.read_split(pixel_run)
    frames = {s: split[split["split"] == s].reset_index(drop=True) for s in ("train", "val", "test")}
    x = {s: np.stack([load_array(p, 32).reshape(-1) for p in f["path"]]).astype(np.float32) / 255
         for s, f in frames.items()}
    y = {s: _labels(f, names) for s, f in frames.items()}
    chosen, fitted = _independent_choice(x, y)
    assert info["baseline"]["C"] == chosen
    expected_val = accuracy_score(y["val"], fitted[chosen].predict(x["val"]))
    assert _metrics(pixel_run)["val_accuracy"] == pytest.approx(expected_val)
    assert info["baseline"]["val_accuracy"] == pytest.approx(expected_val)
    assert [row["C"] for row in info["baseline"]["grid"]] == list(C_GRID)
    predictions = store.read_predictions(pixel_run, "tl").set_index("path").loc[frames["test"]["path"]]
    written = predictions[[f"prob_{n}" for n in names]].to_numpy()
    np.testing.assert_allclose(written, fitted[chosen].predict_proba(x["test"]), atol=1e-5)


def test_the_test_labels_take_no_part_in_choosing_C(pixel_run, demo_dataset, tmp_path, monkeypatch):
    """Relabelling every test image (each to the next class) changes what is scored, not the model chosen."""
    import poc.data.split

    real = poc.data.split.split_dataset

    def relabelled_test(*args, **kwargs):
        df = real(*args, **kwargs)
        names = sorted(df["label"].unique())
        shifted = {n: names[(i + 1) % len(names)] for i, n in enumerate(names)}
        test = df["split"] == "test"
        df.loc[test, "label"] = df.loc[test, "label"].map(shifted)
        return df

    monkeypatch.setattr(poc.data.split, "split_dataset", relabelled_test)
    (other,) = run_baselines(data=demo_dataset, runs_dir=tmp_path)
    assert _info(other)["baseline"]["C"] == _info(pixel_run)["baseline"]["C"]
    assert _info(other)["baseline"]["grid"] == _info(pixel_run)["baseline"]["grid"]
    assert _metrics(other)["val_accuracy"] == _metrics(pixel_run)["val_accuracy"]
    before, after = store.read_predictions(pixel_run, "tl"), store.read_predictions(other, "tl")
    assert (before["label"] != after["label"]).all()  # the relabelling reached the evaluation...
    assert before["pred"].tolist() == after["pred"].tolist()  # ...and the model did not move


def test_pixels_size_sets_the_inputs(demo_dataset, tmp_path):
    (rd,) = run_baselines(data=demo_dataset, pixels_size=8, runs_dir=tmp_path)
    info = _info(rd)
    assert info["name"] == "pixel logistic regression (8 px)" and info["image_size"] == 8
    assert info["params"]["total"] == 10 * (8 * 8 * 3 + 1)


def test_bad_inputs_are_user_errors_before_anything_is_written(demo_dataset, tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(UserError, match="--data DATA"):
        run_baselines(runs_dir=runs)
    with pytest.raises(UserError, match="--pixels-size 2 is out of range"):
        run_baselines(data=demo_dataset, pixels_size=2, runs_dir=runs)
    with pytest.raises(UserError, match="does not exist"):
        run_baselines(data=tmp_path / "nowhere", runs_dir=runs)
    with pytest.raises(UserError, match="no such run"):
        run_baselines(from_run="no-such-run", runs_dir=runs)
    assert not runs.exists() or not any(runs.iterdir())


# ---------------------------------------------------------------- the command line's flags

def test_the_flags_map_onto_run_baselines():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--data", "d", "--from-run", "r", "--model", "vit_ti16", "--weights", "demo",
                              "--image-size", "64", "--pixels-size", "16", "--val", "0.2", "--test", "0.3",
                              "--seed", "4", "--runs-dir", "out", "--json"])
    options = {k: v for k, v in vars(args).items() if k != "json"}
    assert set(options) <= set(inspect.signature(run_baselines).parameters)
    assert (args.pixels_size, args.image_size, args.val, args.test, args.seed, args.json) == \
        (16, 64, 0.2, 0.3, 4, True)
    defaults = parser.parse_args([])
    assert (defaults.pixels_size, defaults.val, defaults.test, defaults.seed, defaults.from_run) == \
        (32, 0.1, 0.1, 0, None)


def test_summary_lists_each_baseline_with_its_accuracy(pixel_run):
    (row,) = baseline_summary([pixel_run])
    metrics = _metrics(pixel_run)
    assert row["id"] == pixel_run.id and row["model"] == "baseline_pixels"
    assert row["accuracy"] == pytest.approx(metrics["accuracy"]) and row["C"] == _info(pixel_run)["baseline"]["C"]
    assert row["split_fingerprint"] == _info(pixel_run)["dataset"]["split_fingerprint"]
    assert f"{metrics['accuracy']:.1%}" in summary_text([row]) and str(pixel_run.path) in summary_text([row])


# ---------------------------------------------------------------- the linear probe, and the demo that makes one

def test_demo_follows_its_cnn_run_with_a_pixel_baseline_and_a_probe_of_it(demo_runs):
    cnn, pixels, probe = demo_runs
    assert [_info(rd)["model"] for rd in demo_runs] == \
        ["mobilenet_v2", "baseline_pixels", "baseline_probe:mobilenet_v2"]
    assert all(_info(rd)["status"] == "completed" for rd in demo_runs)
    fingerprints = {_info(rd)["dataset"]["split_fingerprint"] for rd in demo_runs}
    assert len(fingerprints) == 1
    assert _info(probe)["weights"] == f"run:{cnn.id}" and _info(probe)["from_run"] == cnn.id
    assert _info(probe)["pretraining"] == "demo"


def test_probe_is_a_logistic_regression_on_the_runs_frozen_phase1_features(demo_runs):
    """Recomputed independently: the CNN rebuilt with its phase-1 weights, features = the head's input
    (keras.Model up to the dropout layer), scikit-learn with the same rule for C."""
    from poc.models import build

    cnn, _, probe = demo_runs
    info, cnn_info = _info(probe), _info(cnn)
    assert info["model"] == "baseline_probe:mobilenet_v2" and info["image_size"] == 64
    assert info["dataset"]["split_fingerprint"] == cnn_info["dataset"]["split_fingerprint"]
    assert info["params"]["total"] == 10 * 1280 + 10 and info["params"]["trainable_ft"] == 0
    model = build("mobilenet_v2", 10, 64, "none")
    model.load_weights(cnn.stage_weights("tl"))
    features = keras.Model(model.input, model.get_layer("dropout").input)
    split, names = store.read_split(cnn), cnn_info["class_names"]
    frames = {s: split[split["split"] == s].reset_index(drop=True) for s in ("train", "val", "test")}
    x = {s: np.asarray(features(np.stack([load_array(p, 64) for p in f["path"]]).astype(np.float32),
                                training=False)) for s, f in frames.items()}
    y = {s: _labels(f, names) for s, f in frames.items()}
    chosen, fitted = _independent_choice(x, y)
    assert info["baseline"]["C"] == chosen and info["baseline"]["features"] == 1280
    predictions = store.read_predictions(probe, "tl").set_index("path").loc[frames["test"]["path"]]
    written = predictions[[f"prob_{n}" for n in names]].to_numpy()
    # lbfgs stops at its tolerance, not at the exact optimum: features that differ in the last float bits (other
    # batches, threaded kernels) move a probability by up to ~1e-3 (seen: 1.2e-3); a wrong C or wrong features
    # move them by far more.
    np.testing.assert_allclose(written, fitted[chosen].predict_proba(x["test"]), atol=5e-3)
    assert _metrics(probe)["accuracy"] == pytest.approx(accuracy_score(predictions["label"], predictions["pred"]))


def test_from_run_errors_name_the_fix(demo_runs, tmp_path):
    cnn, pixels, _ = demo_runs
    runs = cnn.path.parent
    with pytest.raises(UserError, match="is itself a baseline"):
        run_baselines(from_run=pixels.id, runs_dir=runs)
    no_weights = store.RunDir(tmp_path / "runs" / "no-weights")
    no_weights.path.mkdir(parents=True)
    for f in (cnn.run_json, cnn.split_csv):
        shutil.copy(f, no_weights.path / f.name)
    with pytest.raises(UserError, match="no phase-1 weights"):
        run_baselines(from_run=str(no_weights.path), runs_dir=tmp_path / "runs")
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["no-weights"]


def test_probe_with_model_and_weights_uses_the_data_split(demo_dataset, tmp_path):
    pixels, probe = run_baselines(data=demo_dataset, model="mobilenet_v2", weights="demo", image_size=64,
                                  runs_dir=tmp_path)
    expected = split_fingerprint(split_dataset(scan_dataset(demo_dataset), val=0.1, test=0.1, seed=0))
    assert _info(pixels)["model"] == "baseline_pixels"
    assert _info(probe)["model"] == "baseline_probe:mobilenet_v2" and _info(probe)["weights"] == "demo"
    assert {_info(rd)["dataset"]["split_fingerprint"] for rd in (pixels, probe)} == {expected}


def test_leaderboard_lists_the_baselines_with_their_accuracy(demo_runs):
    from poc.analysis.leaderboard import leaderboard, verdict

    board = leaderboard(store.list_runs(demo_runs[0].path.parent)).set_index("id")
    for rd in demo_runs[1:]:
        row = board.loc[rd.id]
        assert row["family"] == "baseline" and row["status"] == "completed" and row["final_stage"] == "tl"
        assert row["acc_tl"] == pytest.approx(_metrics(rd)["accuracy"])
        assert row["val_acc"] == pytest.approx(_metrics(rd)["val_accuracy"])
        assert np.isnan(row["acc_ft"]) and row["problems"] is None
    best = verdict(board.reset_index(), _info(demo_runs[0])["dataset"]["test_fingerprint"]).best
    assert best["baseline"]["id"] in {rd.id for rd in demo_runs[1:]} and best["cnn"]["id"] == demo_runs[0].id


def test_a_run_fine_tuned_from_another_is_probed_with_its_sources_phase1_weights(demo_runs, tmp_path):
    """A `--from-run` run saves no phase-1 weights of its own: its source's are its phase-1 backbone."""
    cnn, _, probe = demo_runs
    child = store.RunDir(tmp_path / "runs" / "child-run")
    child.path.mkdir(parents=True)
    shutil.copy(cnn.split_csv, child.split_csv)
    store.write_json(child.run_json, {**_info(cnn), "id": child.id, "from_run": str(cnn.path)})
    _, again = run_baselines(from_run=child.id, runs_dir=tmp_path / "runs")
    assert _info(again)["weights"] == "run:child-run"
    names = _info(cnn)["class_names"]
    np.testing.assert_allclose(_probabilities(again, names), _probabilities(probe, names), atol=1e-6)
