"""What training claims, checked on tiny data: early stopping restores its best epoch, augmentation touches
training batches only and changes every epoch, frozen BatchNorm keeps its statistics, train and test never
share an image, the ViT feature is the class token, shuffled batches mix classes, the same seed repeats, and
fit creates no variable inside its first step (which would trace it twice)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import keras
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss

from conftest import make_class_folders
from poc.config import AUGMENTATIONS, RunConfig
from poc.data.pipeline import make_dataset
from poc.data.scan import scan_dataset
from poc.data.split import split_dataset
from poc.models import build
from poc.models.cutoffs import freeze_backbone, frozen_view
from poc.train.training import train
from fixture_runs import raw_pixels

SIZE = 32


def one_per_class(root) -> tuple[pd.DataFrame, list[str]]:
    """The first demo image of every class: each row its own class, so a one-hot label names the row."""
    paths = [sorted(folder.iterdir())[0] for folder in sorted(p for p in root.iterdir() if p.is_dir())]
    frame = pd.DataFrame({"path": [str(p) for p in paths], "label": [p.parent.name for p in paths]})
    return frame, frame["label"].tolist()


def by_label(ds) -> dict[int, np.ndarray]:
    """One pass over a dataset whose labels are all distinct: {label index: pixels (S, S, 3)}."""
    return {int(y.argmax()): x for xs, ys in ds for x, y in zip(xs.numpy(), ys.numpy())}


def digest(pixels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()


# ---------------------------------------------------------------- early stopping restores its best epoch

@pytest.fixture(scope="module", params=[True, False], ids=["feature-cache", "no-feature-cache"])
def stopped_run(request, demo_dataset, tmp_path_factory):
    """Phase 1 only, at a learning rate high enough that validation loss gets worse and patience 1 stops it."""
    config = RunConfig(data=str(demo_dataset), model="mobilenet_v2", weights="none", image_size=SIZE,
                       tl_epochs=8, ft_epochs=0, patience=1, lr_tl=0.5, augment=[], batch_size=16, seed=0,
                       feature_cache=request.param)
    return train(config, tmp_path_factory.mktemp("runs"))


def test_early_stopping_triggers_and_restores_the_best_epoch(stopped_run):
    rd = stopped_run
    info = json.loads(rd.run_json.read_text())
    history = pd.read_csv(rd.history_csv)
    tl = history[history["phase"] == "tl"]
    assert info["status"] == "completed"
    assert len(tl) < 8, "early stopping never triggered: the test needs a rising validation loss"
    best = info["best_epoch"]["tl"]
    assert best == int(tl.loc[tl["val_loss"].idxmin(), "epoch"])
    assert best < int(tl["epoch"].max())  # the last epoch was worse: restoring it would be wrong
    # The saved phase-1 weights, evaluated independently on the validation split, give the best epoch's loss.
    split = pd.read_csv(rd.split_csv)
    val = split[split["split"] == "val"].reset_index(drop=True)
    model = build("mobilenet_v2", len(info["class_names"]), SIZE, "none")
    model.load_weights(rd.stage_weights("tl"))
    probs = model.predict(make_dataset(val, info["class_names"], SIZE, 16), verbose=0)
    labels = [info["class_names"].index(c) for c in val["label"]]
    loss = log_loss(labels, probs.astype(np.float64), labels=range(len(info["class_names"])))
    recorded = float(tl.loc[tl["epoch"] == best, "val_loss"].iloc[0])
    assert loss == pytest.approx(recorded, rel=1e-4)
    others = tl.loc[tl["epoch"] != best, "val_loss"]
    assert not np.isclose(others, recorded, rtol=1e-4).any()  # the comparison can tell the epochs apart


# ---------------------------------------------------------------- augmentation: training batches only

def test_augmentation_changes_training_batches_only_and_every_epoch(demo_dataset):
    frame, classes = one_per_class(demo_dataset)
    raw = dict(enumerate(raw_pixels(frame["path"].tolist(), SIZE)))
    evaluation = by_label(make_dataset(frame, classes, SIZE, 4, augment=list(AUGMENTATIONS)))
    plain = by_label(make_dataset(frame, classes, SIZE, 4, training=True, seed=0))
    augmented = make_dataset(frame, classes, SIZE, 4, training=True, augment=list(AUGMENTATIONS), seed=0)
    epoch1, epoch2 = by_label(augmented), by_label(augmented)
    for row in raw:
        np.testing.assert_array_equal(evaluation[row], raw[row])
        np.testing.assert_array_equal(plain[row], raw[row])  # shuffled, not altered, without augmentation
        assert np.abs(epoch1[row] - raw[row]).mean() > 0.5, classes[row]
        assert np.abs(epoch2[row] - epoch1[row]).mean() > 0.5, classes[row]
        assert epoch1[row].min() >= 0 and epoch1[row].max() <= 255


# ---------------------------------------------------------------- frozen BatchNorm keeps its statistics

def batchnorm_statistics(model: keras.Model) -> dict[str, np.ndarray]:
    layers = [layer for layer in model.get_layer("backbone")._flatten_layers(include_self=False)
              if isinstance(layer, keras.layers.BatchNormalization)]
    assert layers
    return {f"{layer.name}/{w.name}": np.array(w) for layer in layers
            for w in (layer.moving_mean, layer.moving_variance)}


@pytest.mark.parametrize("how", ["frozen_view", "classifier"])  # what phase 1 fits / the plain frozen model
def test_frozen_fit_leaves_batchnorm_moving_statistics_unchanged(how):
    keras.utils.set_random_seed(0)
    model = build("mobilenet_v2", 3, SIZE, "none")
    freeze_backbone(model)
    fit_model = frozen_view(model) if how == "frozen_view" else model
    before = batchnorm_statistics(model)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (24, SIZE, SIZE, 3)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 24)]
    fit_model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy")
    fit_model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    after = batchnorm_statistics(model)
    assert [name for name in before if not np.array_equal(before[name], after[name])] == []
    # Control: the same batch through a trainable backbone in training mode moves every statistic.
    model.get_layer("backbone").trainable = True
    model(x[:8], training=True)
    moved = batchnorm_statistics(model)
    assert all(not np.array_equal(before[name], moved[name]) for name in before)


# ---------------------------------------------------------------- train / test disjoint in the pipeline

def test_train_and_test_datasets_yield_disjoint_images_matching_their_split(demo_dataset):
    report = scan_dataset(demo_dataset)
    split = split_dataset(report, seed=0)
    hashes = {}
    for name in ("train", "test"):
        rows = split[split["split"] == name].reset_index(drop=True)
        ds = make_dataset(rows, report.class_names, SIZE, 8, training=name == "train", seed=0)
        yielded = Counter(digest(x) for xs, _ in ds for x in xs.numpy())
        assert yielded == Counter(digest(x) for x in raw_pixels(rows["path"].tolist(), SIZE)), name
        hashes[name] = set(yielded)
    assert len(hashes["train"]) > 0 and len(hashes["test"]) > 0
    assert hashes["train"].isdisjoint(hashes["test"])


# ---------------------------------------------------------------- the ViT feature is the class token

def test_vit_backbone_output_is_the_normalised_class_token():
    backbone = build("vit_ti16", 3, SIZE, "none").get_layer("backbone")
    pixels = np.random.default_rng(0).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    x = backbone.get_layer("embedding")(pixels)  # (B, g, g, D)
    x = backbone.get_layer("tokens")(x)  # (B, g*g, D)
    x = backbone.get_layer("posembed_input")(backbone.get_layer("cls")(x))  # (B, T, D)
    for block in sorted((layer for layer in backbone.layers if layer.name.startswith("encoderblock_")),
                        key=lambda layer: int(layer.name.rsplit("_", 1)[1])):
        x, _ = block(x)
    tokens = np.asarray(backbone.get_layer("encoder_norm")(x))  # (B, T, D)
    features = np.asarray(backbone(pixels, training=False))  # (B, D)
    np.testing.assert_allclose(features, tokens[:, 0], atol=1e-4)
    assert np.abs(features - tokens.mean(axis=1)).max() > 0.1  # not a mean over tokens
    assert np.abs(features - tokens[:, 1:].mean(axis=1)).max() > 0.1


# ---------------------------------------------------------------- shuffling mixes classes, seeds repeat

@pytest.mark.parametrize("per_class", [40, 4_000])  # 4,000 x 5 rows: beyond the old 10,000-row buffer
def test_shuffled_batches_mix_classes_from_the_whole_list(tmp_path, per_class):
    """Rows sorted by class; the first training batch holds several classes, the last one included."""
    root = make_class_folders(tmp_path, {c: 1 for c in "abcde"})
    classes = list("abcde")
    frame = pd.DataFrame({"path": [str(root / c / "000.png") for c in classes for _ in range(per_class)],
                          "label": [c for c in classes for _ in range(per_class)]})
    _, onehot = next(iter(make_dataset(frame, classes, 8, 16, training=True, seed=0)))
    present = {classes[i] for i in onehot.numpy().argmax(axis=1)}
    assert len(onehot) == 16
    assert len(present) > 2, present
    assert "e" in present, present


def test_same_seed_same_training_batches_other_seed_other_batches(demo_dataset):
    frame, classes = one_per_class(demo_dataset)

    def first_batch(seed):
        ds = make_dataset(frame, classes, SIZE, 4, training=True, augment=list(AUGMENTATIONS), seed=seed)
        x, y = next(iter(ds))
        return x.numpy(), y.numpy()

    a, b, c = first_batch(3), first_batch(3), first_batch(4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


# ---------------------------------------------------------------- the training step is traced once

def test_a_model_compiled_for_fit_creates_no_variable_during_fit():
    """A variable created inside fit's first step (a metric given by name, Adam's moments) makes TensorFlow trace
    the step a second time; tf.variable_creator_scope sees every variable created, traced or eager."""
    import tensorflow as tf

    from poc.train.phases import compile_for_fit

    x = np.random.default_rng(0).random((32, 4), dtype=np.float32)
    y = keras.utils.to_categorical(np.arange(32) % 3, 3)

    def variables_created_by_fit(compile_model) -> list[str]:
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
        compile_model(model)
        created = []

        def record(next_creator, **kwargs):
            created.append(kwargs.get("name"))
            return next_creator(**kwargs)

        with tf.variable_creator_scope(record):
            model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        return created

    lazily = variables_created_by_fit(lambda m: m.compile("adam", "categorical_crossentropy", metrics=["accuracy"]))
    assert {"total", "count"} <= set(lazily) and any("momentum" in name for name in lazily)  # the check sees them
    assert variables_created_by_fit(lambda m: compile_for_fit(m, 1e-3, jit_compile=False)) == []
