"""tf.data input pipeline: decode with PIL (every mode, EXIF), resize, cache, augment (train only), batch.

Images stay raw pixels in [0, 255]: the backbone's preprocessing is inside the model, so the pipeline is the
same for every backbone and the dashboard feeds the model exactly like training did.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import tensorflow as tf
import keras

from poc.data.images import load_array

# Keep decoded images in memory when they fit in this budget; larger sets are decoded every epoch.
CACHE_BUDGET_BYTES = 2 * 1024**3


def augmentation_layers(names: list[str], seed: int = 0) -> list[keras.layers.Layer]:
    """The reference recipe's augmentations as Keras preprocessing layers, in a fixed order."""
    table = {
        "flip": lambda: keras.layers.RandomFlip("horizontal", seed=seed),
        "rotation": lambda: keras.layers.RandomRotation(0.1, fill_mode="nearest", seed=seed),
        "shift": lambda: keras.layers.RandomTranslation(0.1, 0.1, fill_mode="nearest", seed=seed),
        "brightness": lambda: keras.layers.RandomBrightness(0.2, value_range=(0, 255), seed=seed),
        "zoom": lambda: keras.layers.RandomZoom(0.1, fill_mode="nearest", seed=seed),
    }
    return [table[name]() for name in ("flip", "rotation", "shift", "brightness", "zoom") if name in names]


def make_dataset(frame: pd.DataFrame, class_names: list[str], image_size: int, batch_size: int, *,
                 training: bool = False, augment: list[str] = (), seed: int = 0) -> tf.data.Dataset:
    """(pixels (B, S, S, 3) float32 in [0, 255], one-hot labels (B, C)) batches, in `frame` order unless training."""
    index = {name: i for i, name in enumerate(class_names)}
    paths = frame["path"].astype(str).tolist()
    labels = np.array([index[label] for label in frame["label"]], dtype=np.int32)

    def load(path):
        return load_array(path.numpy().decode(), image_size)

    def decode(path, label):
        image = tf.py_function(load, [path], tf.uint8)
        image.set_shape((image_size, image_size, 3))
        return image, label

    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if len(paths) * image_size * image_size * 3 <= CACHE_BUDGET_BYTES:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(min(len(paths), 10_000), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    layers = augmentation_layers(list(augment), seed) if training else []

    def finish(images, label_ids):
        images = tf.cast(images, tf.float32)  # (B, S, S, 3)
        for layer in layers:
            images = layer(images, training=True)
        return tf.clip_by_value(images, 0.0, 255.0), tf.one_hot(label_ids, len(class_names))

    return ds.map(finish, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def load_batch(paths: list[str], image_size: int) -> np.ndarray:
    """Raw pixels for a handful of images (explanations, live predict): (N, S, S, 3) float32."""
    return np.stack([load_array(p, image_size) for p in paths]).astype(np.float32)
