"""The frozen-feature module: the head's input, computed in inference mode, batch by batch."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from poc.train.features import extract_features, feature_extractor
from poc.models import build

SIZE = 64  # the project's shape-pretrained MobileNetV2 (offline): features with a real spread, unlike a random one


@pytest.fixture(scope="module")
def classifier():
    keras.utils.set_random_seed(0)
    return build("mobilenet_v2", 3, SIZE, "demo")


@pytest.fixture(scope="module")
def pixels():
    return np.random.default_rng(0).uniform(0, 255, size=(10, SIZE, SIZE, 3)).astype(np.float32)


def _batches(pixels: np.ndarray, batch_size: int) -> tf.data.Dataset:
    labels = np.zeros((len(pixels), 3), np.float32)
    return tf.data.Dataset.from_tensor_slices((pixels, labels)).batch(batch_size)


def _head_input(classifier) -> keras.Model:
    """The classifier's own graph cut at the dropout layer's input: what the head is trained on."""
    return keras.Model(classifier.input, classifier.get_layer("dropout").input)


def test_extractor_returns_the_input_of_the_head(classifier, pixels):
    expected = np.asarray(_head_input(classifier)(pixels, training=False))
    got = np.asarray(feature_extractor(classifier)(pixels, training=False))
    assert got.shape == (len(pixels), 1280)  # MobileNetV2's pooled width
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def _training_mode_features(classifier, pixels) -> np.ndarray:
    """BatchNorm on batch statistics, on a copy (training mode also moves the moving statistics)."""
    copy = keras.models.clone_model(classifier)
    copy.set_weights(classifier.get_weights())
    return np.asarray(_head_input(copy)(pixels, training=True))


def test_extract_features_runs_in_inference_mode_whatever_the_batches(classifier, pixels):
    expected = np.asarray(_head_input(classifier)(pixels, training=False))
    extractor = feature_extractor(classifier)
    by_four = extract_features(extractor, _batches(pixels, 4), len(pixels))
    one_by_one = extract_features(extractor, _batches(pixels, 1), len(pixels))
    scale = np.abs(expected).max()
    assert scale > 1e-2  # features worth comparing
    np.testing.assert_allclose(by_four, expected, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(one_by_one, by_four, rtol=1e-4, atol=1e-5 * scale)
    batch_stats = _training_mode_features(classifier, pixels[:4])
    assert np.abs(by_four[:4] - batch_stats).max() > 1e-2 * scale  # so training mode would have shown


def test_extract_features_leaves_the_moving_statistics_alone(classifier, pixels):
    before = [w.numpy().copy() for w in classifier.non_trainable_weights]
    extract_features(feature_extractor(classifier), _batches(pixels, 5), len(pixels))
    after = [w.numpy() for w in classifier.non_trainable_weights]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_memmap_path_writes_float16_of_the_right_shape(classifier, pixels, tmp_path):
    path = tmp_path / "features.npy"
    calls = []
    out = extract_features(feature_extractor(classifier), _batches(pixels, 4), len(pixels),
                           progress=lambda done, total: calls.append((done, total)), memmap_path=path)
    on_disk = np.load(path)
    assert on_disk.dtype == np.float16 and on_disk.shape == (len(pixels), 1280)
    np.testing.assert_array_equal(on_disk, np.asarray(out))
    expected = np.asarray(_head_input(classifier)(pixels, training=False))
    np.testing.assert_allclose(on_disk.astype(np.float32), expected, rtol=2e-3, atol=1e-3 * np.abs(expected).max())
    assert calls == [(4, 10), (8, 10), (10, 10)]


def test_in_memory_result_has_the_requested_dtype(classifier, pixels):
    out = extract_features(feature_extractor(classifier), _batches(pixels, 10), len(pixels), dtype=np.float64)
    assert out.dtype == np.float64 and out.shape == (len(pixels), 1280)


def test_a_count_that_does_not_match_the_dataset_is_an_error(classifier, pixels):
    extractor = feature_extractor(classifier)
    with pytest.raises(ValueError, match="more than the 6"):
        extract_features(extractor, _batches(pixels, 4), 6)
    with pytest.raises(ValueError, match="held 10 images, not the 12"):
        extract_features(extractor, _batches(pixels, 4), 12)
