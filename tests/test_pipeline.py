"""The input pipeline: independent augmentation seeds, full per-epoch shuffle, decode-once cache, frame order
for evaluation, and the same batches for the same seed in a fresh process."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from scipy.stats import pearsonr

from conftest import make_class_folders
from fixture_runs import raw_pixels
from poc.data import pipeline
from poc.data.pipeline import (
    AUGMENTATION_ORDER,
    augmentation_layers,
    apply_augmentations,
    epoch_order,
    make_dataset,
    sample_transformations,
)

REPO = Path(__file__).resolve().parents[1]
SIZE = 16


@pytest.fixture(scope="module")
def folder_frame(tmp_path_factory) -> tuple[pd.DataFrame, list[str]]:
    """3 classes x 7 distinct uniform images, path-sorted as a scan lists them."""
    root = make_class_folders(tmp_path_factory.mktemp("pipe"), {"a": 7, "b": 7, "c": 7})
    paths = sorted(root.glob("*/*.png"))
    return pd.DataFrame({"path": [str(p) for p in paths], "label": [p.parent.name for p in paths]}), ["a", "b", "c"]


def epochs_of(ds, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` full passes over `ds`, each as (pixels (N, S, S, 3), one-hot labels (N, C)) concatenated."""
    out = []
    for _ in range(count):
        xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
        out.append((np.concatenate(xs), np.concatenate(ys)))
    return out


# ---------------------------------------------------------------- augmentation seeds (issue 8.7)

def test_each_augmentation_layer_gets_its_own_seed_from_the_run_seed():
    seeds = [layer.seed for layer in augmentation_layers(list(AUGMENTATION_ORDER), seed=3)]
    assert len(set(seeds)) == len(AUGMENTATION_ORDER)
    assert set(seeds).isdisjoint(layer.seed for layer in augmentation_layers(list(AUGMENTATION_ORDER), seed=4))
    # A layer's seed does not depend on which other layers were chosen.
    assert augmentation_layers(["zoom"], seed=3)[0].seed == seeds[-1]


def rotation_zoom_correlation(layers, batch: int = 64) -> float:
    images = tf.zeros((batch, SIZE, SIZE, 3))
    rotation, zoom = sample_transformations(images, layers, tf.constant([0, 0], tf.int64))
    return pearsonr(rotation["angle"].numpy().ravel(), zoom["height_zoom"].numpy().ravel()).statistic


def test_sampled_rotation_and_zoom_are_not_correlated():
    layers = augmentation_layers(["rotation", "zoom"], seed=0)
    assert abs(rotation_zoom_correlation(layers)) < 0.4  # 64 independent pairs: |r| < 0.4 with p > 0.999


def test_the_correlation_check_catches_a_shared_seed():
    """The old code: every layer built with the same seed draws the same numbers, so zoom follows rotation."""
    rotation, zoom = augmentation_layers(["rotation", "zoom"], seed=0)
    zoom.seed = rotation.seed
    assert rotation_zoom_correlation([rotation, zoom]) == pytest.approx(1.0, abs=1e-6)


def test_augmentation_is_a_function_of_the_batch_key():
    layers = augmentation_layers(list(AUGMENTATION_ORDER), seed=0)
    images = tf.random.stateless_uniform((4, SIZE, SIZE, 3), seed=[1, 2], maxval=255.0)
    first = apply_augmentations(images, layers, tf.constant([0, 5], tf.int64)).numpy()
    again = apply_augmentations(images, layers, tf.constant([0, 5], tf.int64)).numpy()
    next_epoch = apply_augmentations(images, layers, tf.constant([1, 5], tf.int64)).numpy()
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, next_epoch)
    assert not np.allclose(first, images.numpy())


# ---------------------------------------------------------------- full shuffle (issue 9.3)

def test_epoch_order_is_a_seeded_full_permutation_new_each_epoch():
    n = 25_000  # above the old 10,000-element shuffle buffer
    order = epoch_order(n, seed=0, epoch=0)
    assert sorted(order) == list(range(n))
    np.testing.assert_array_equal(order, epoch_order(n, seed=0, epoch=0))
    assert not np.array_equal(order, epoch_order(n, seed=0, epoch=1))
    assert not np.array_equal(order, epoch_order(n, seed=1, epoch=0))
    # A buffer of 10,000 over a sorted list puts only rows < 10,320 in the first 320 places; here about 59% of
    # them lie beyond, as for any uniform permutation.
    assert (order[:320] >= 10_320).mean() > 0.5


def test_training_epochs_follow_epoch_order_and_cover_every_row(folder_frame):
    frame, classes = folder_frame
    ds = make_dataset(frame, classes, SIZE, 4, training=True, seed=7)
    raw = raw_pixels(frame["path"].tolist(), SIZE)
    for epoch, (pixels, onehot) in enumerate(epochs_of(ds, 2)):
        order = epoch_order(len(frame), 7, epoch)
        np.testing.assert_array_equal(pixels, raw[order])
        assert [classes[i] for i in onehot.argmax(axis=1)] == frame["label"].iloc[order].tolist()


# ---------------------------------------------------------------- decoding and caching

def test_evaluation_batches_are_the_decoded_pixels_in_frame_order(folder_frame):
    frame, classes = folder_frame
    ds = make_dataset(frame, classes, SIZE, 4, augment=list(AUGMENTATION_ORDER))  # augment ignored: not training
    assert ds.element_spec[0].shape.as_list() == [None, SIZE, SIZE, 3]
    assert ds.element_spec[1].shape.as_list() == [None, len(classes)]
    (pixels, onehot), = epochs_of(ds, 1)
    assert pixels.dtype == np.float32
    np.testing.assert_array_equal(pixels, raw_pixels(frame["path"].tolist(), SIZE))
    np.testing.assert_array_equal(onehot, np.eye(3)[[classes.index(c) for c in frame["label"]]])


@pytest.mark.parametrize("budget, decodes_per_image", [(pipeline.CACHE_BUDGET_BYTES, 1), (0, 2)])
def test_images_are_decoded_once_when_they_fit_the_budget(folder_frame, monkeypatch, budget, decodes_per_image):
    frame, classes = folder_frame
    calls = []
    real = pipeline.load_array
    monkeypatch.setattr(pipeline, "load_array", lambda path, size, **kw: calls.append(path) or real(path, size, **kw))
    monkeypatch.setattr(pipeline, "CACHE_BUDGET_BYTES", budget)
    ds = make_dataset(frame, classes, SIZE, 4, training=True, seed=1)
    first, second = epochs_of(ds, 2)
    assert sorted(calls) == sorted(frame["path"].tolist() * decodes_per_image)
    expected = make_dataset(frame, classes, SIZE, 4, training=True, seed=1)
    for got, want in zip((first, second), epochs_of(expected, 2)):  # cached or not, the same batches
        np.testing.assert_array_equal(got[0], want[0])


# ---------------------------------------------------------------- reproducibility across processes

SCRIPT = """
import hashlib, sys
import pandas as pd
from poc.data.pipeline import make_dataset
frame = pd.read_csv(sys.argv[1])
ds = make_dataset(frame, sorted(frame["label"].unique()), {size}, 4, training=True,
                  augment=["flip", "rotation", "shift", "brightness", "zoom"], seed=11)
digest = hashlib.sha256()
for epoch in range(2):
    for x, y in ds:
        digest.update(x.numpy().tobytes()); digest.update(y.numpy().tobytes())
print(digest.hexdigest())
"""


def test_same_seed_gives_the_same_augmented_batches_in_a_fresh_process(folder_frame, tmp_path):
    frame, classes = folder_frame
    csv = tmp_path / "frame.csv"
    frame.to_csv(csv, index=False)
    tf.random.set_seed(12345)  # global TensorFlow state of this process must not matter
    ds = make_dataset(frame, classes, SIZE, 4, training=True, augment=list(AUGMENTATION_ORDER), seed=11)
    digest = hashlib.sha256()
    for pixels, onehot in (batch for _ in range(2) for batch in ds):
        digest.update(pixels.numpy().tobytes())
        digest.update(onehot.numpy().tobytes())
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT.format(size=SIZE)), str(csv)],
                            cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == digest.hexdigest()
