"""tf.data input pipeline: decode with PIL (every mode, EXIF), resize, keep in memory, shuffle, augment, batch.

Images stay raw pixels in [0, 255]: the backbone's preprocessing is inside the model, so the pipeline is the
same for every backbone and the dashboard feeds the model exactly like training did.

Training shuffles the whole index list every epoch before anything is decoded (a bounded shuffle buffer over a
path-sorted list leaves batches class-clustered), then gathers decoded images by index: decoded once into memory
when they fit CACHE_BUDGET_BYTES, decoded again every epoch when they do not. Randomness is stateless, keyed by
(seed, epoch, batch): the same seed gives the same training batches in any process, whatever the TensorFlow
global seed and however many batches are prepared in parallel.
"""

from __future__ import annotations

import itertools
import math

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from poc.data.images import load_array

# Keep decoded images in memory when they fit in this budget; larger sets are decoded every epoch.
CACHE_BUDGET_BYTES = 2 * 1024**3
AUGMENTATION_ORDER = ("flip", "rotation", "shift", "brightness", "zoom")


def augmentation_layers(names: list[str], seed: int = 0) -> list[keras.layers.Layer]:
    """The reference recipe's augmentations as Keras preprocessing layers, in a fixed order.

    Each layer gets its own seed (seed * 1000 + its place in AUGMENTATION_ORDER): with one shared seed every
    layer draws the same uniform numbers, so an image's zoom followed its rotation exactly.
    """
    table = {
        "flip": lambda s: keras.layers.RandomFlip("horizontal", seed=s, dtype="float32"),
        "rotation": lambda s: keras.layers.RandomRotation(0.1, fill_mode="nearest", seed=s, dtype="float32"),
        "shift": lambda s: keras.layers.RandomTranslation(0.1, 0.1, fill_mode="nearest", seed=s, dtype="float32"),
        "brightness": lambda s: keras.layers.RandomBrightness(0.2, value_range=(0, 255), seed=s, dtype="float32"),
        "zoom": lambda s: keras.layers.RandomZoom(0.1, fill_mode="nearest", seed=s, dtype="float32"),
    }
    return [table[name](seed * 1000 + i) for i, name in enumerate(AUGMENTATION_ORDER) if name in names]


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The training order of rows 0..n-1 in `epoch`: a full permutation, a pure function of (seed, epoch)."""
    return np.random.default_rng([seed % 2**63, epoch]).permutation(n)


def make_dataset(frame: pd.DataFrame, class_names: list[str], image_size: int, batch_size: int, *,
                 training: bool = False, augment: list[str] = (), seed: int = 0) -> tf.data.Dataset:
    """(pixels (B, S, S, 3) float32 in [0, 255], one-hot labels (B, C)) batches, in `frame` order unless training.

    Training batches follow `epoch_order` (a new permutation each time the dataset is iterated) and carry the
    `augment` layers' random transformations; validation / test batches are the decoded pixels as they are.
    """
    index = {name: i for i, name in enumerate(class_names)}
    paths = frame["path"].astype(str).tolist()
    labels = tf.constant([index[label] for label in frame["label"]], dtype=tf.int32)  # (N,)
    images = DecodedImages(paths, image_size, keep=len(paths) * image_size * image_size * 3 <= CACHE_BUDGET_BYTES)
    layers = augmentation_layers(list(augment), seed) if training else []

    if training:
        ds = _shuffled_ids(len(paths), batch_size, seed)
    else:
        ds = tf.data.Dataset.range(len(paths)).batch(batch_size).map(lambda i: (i, tf.zeros(2, tf.int64)))

    def load(ids, key):
        pixels = tf.numpy_function(images.gather, [ids], tf.uint8)
        pixels.set_shape((None, image_size, image_size, 3))
        pixels = tf.cast(pixels, tf.float32)  # (B, S, S, 3)
        if layers:
            pixels = tf.clip_by_value(apply_augmentations(pixels, layers, key), 0.0, 255.0)
        return pixels, tf.one_hot(tf.gather(labels, ids), len(class_names))  # (B, S, S, 3), (B, C)

    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def _shuffled_ids(n: int, batch_size: int, seed: int) -> tf.data.Dataset:
    """(row ids (B,), key (2,) = (epoch, batch)) per batch; each iteration of the dataset is the next epoch."""
    epochs = itertools.count()  # next() is atomic

    def next_epoch(_):
        epoch = next(epochs)
        return epoch_order(n, seed, epoch).astype(np.int64), np.int64(epoch)

    def batches_of(order, epoch):
        order.set_shape((None,))
        epoch.set_shape(())
        ids = tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
        return ids.enumerate().map(lambda b, i: (i, tf.stack([epoch, b])))

    ds = tf.data.Dataset.range(1).map(lambda x: tf.numpy_function(next_epoch, [x], (tf.int64, tf.int64)))
    ds = ds.flat_map(batches_of)
    return ds.apply(tf.data.experimental.assert_cardinality(math.ceil(n / batch_size)))


class DecodedImages:
    """Pixels by row index: decoded on first use and kept in memory (`keep`), or decoded on every use.

    `gather` runs inside tf.data's parallel map, several batches at a time; two threads that happened to
    decode the same row would write the same pixels.
    """

    def __init__(self, paths: list[str], image_size: int, keep: bool):
        self.paths = paths
        self.image_size = image_size
        self.store = np.empty((len(paths), image_size, image_size, 3), np.uint8) if keep else None  # lazy pages
        self.ready = np.zeros(len(paths), bool)

    def gather(self, ids: np.ndarray) -> np.ndarray:
        """(B,) row indices -> (B, S, S, 3) uint8."""
        if self.store is None:
            return np.stack([self._decode(i) for i in ids]).reshape(-1, self.image_size, self.image_size, 3)
        for i in ids:
            if not self.ready[i]:
                self.store[i] = self._decode(i)
                self.ready[i] = True
        return self.store[ids]

    def _decode(self, i: int) -> np.ndarray:
        return load_array(self.paths[i], self.image_size, verify=False)  # the scan verified every file


class _KeyedSeeds(keras.random.SeedGenerator):
    """Stands in for a layer's SeedGenerator: its k-th draw gets a stateless seed folded from (layer seed, batch
    key, k). Keras layers draw through `seed.next()`; a shared stateful generator read by parallel map calls
    would hand out its states in thread order, so the same seed would not give the same batches."""

    def __init__(self, layer_seed: int, key: tf.Tensor):  # no super().__init__: there is no state to create
        self._seed = tf.random.experimental.stateless_fold_in(
            tf.random.experimental.stateless_fold_in(tf.constant([layer_seed % 2**31, 0], tf.int64), key[0]),
            key[1])
        self._draws = 0

    def next(self, ordered=True):
        self._draws += 1
        return tf.random.experimental.stateless_fold_in(self._seed, self._draws)


def sample_transformations(images: tf.Tensor, layers: list[keras.layers.Layer], key: tf.Tensor) -> list:
    """Each layer's random transformation of the batch `images` under `key` (2,) int64 (epoch, batch)."""
    return [layer.get_random_transformation(images, training=True, seed=_KeyedSeeds(layer.seed, key))
            for layer in layers]


def apply_augmentations(images: tf.Tensor, layers: list[keras.layers.Layer], key: tf.Tensor) -> tf.Tensor:
    """`images` (B, S, S, 3) float32 through `layers` in order; the same (layers, key) gives the same output."""
    for layer, transformation in zip(layers, sample_transformations(images, layers, key)):
        images = layer.transform_images(images, transformation, training=True)
    return images
