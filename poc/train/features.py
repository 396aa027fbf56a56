"""A frozen backbone's pooled features: what phase 1 on cached features, the linear probe and sweeps share.

The features are the input of the classifier's head (the `dropout` layer's input), computed in inference
mode, so BatchNorm uses its moving statistics and Dropout / stochastic depth are off.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

# One traced function per extractor: tracing a backbone costs seconds, and phase 1 extracts several sets.
_FORWARD: "weakref.WeakKeyDictionary[keras.Model, Callable]" = weakref.WeakKeyDictionary()


def feature_extractor(classifier: keras.Model) -> keras.Model:
    """Raw pixels (N, S, S, 3) in [0, 255] -> pooled backbone features (N, D), sharing the classifier's
    weights (a classifier from `poc.models.build`: pixels -> preprocess -> backbone -> dropout -> head)."""
    pixels = keras.Input(classifier.input_shape[1:], name="pixels")
    x = classifier.get_layer("preprocess")(pixels)
    features = classifier.get_layer("backbone")(x)  # (N, D)
    return keras.Model(pixels, features, name="feature_extractor")


def extract_features(extractor: keras.Model, dataset: tf.data.Dataset, count: int,
                     progress: Callable[[int, int], None] | None = None, memmap_path: Path | None = None,
                     dtype=np.float32) -> np.ndarray:
    """(count, D) features of a dataset of (pixels, labels) batches, in the dataset's order, written into one
    preallocated array: in memory, or a float16 .npy memmap at `memmap_path` for sets too large for memory."""
    width = int(extractor.output_shape[-1])
    if memmap_path is not None:
        out = np.lib.format.open_memmap(Path(memmap_path), mode="w+", dtype=np.float16, shape=(count, width))
    else:
        out = np.empty((count, width), dtype=dtype)

    forward = _forward(extractor)
    done = 0
    for batch in dataset:
        pixels = batch[0] if isinstance(batch, (tuple, list)) else batch
        values = forward(tf.cast(pixels, tf.float32)).numpy()  # (B, D)
        if done + len(values) > count:
            raise ValueError(f"the dataset holds more than the {count} images announced")
        out[done:done + len(values)] = values
        done += len(values)
        if progress:
            progress(done, count)
    if done != count:
        raise ValueError(f"the dataset held {done} images, not the {count} announced")
    if memmap_path is not None:
        out.flush()
    return out


def _forward(extractor: keras.Model) -> Callable:
    """The extractor in inference mode as a tf.function traced once for any batch size."""
    if extractor not in _FORWARD:
        spec = tf.TensorSpec((None, *extractor.input_shape[1:]), tf.float32)
        model = weakref.ref(extractor)  # a strong reference here would keep the extractor alive forever

        @tf.function(input_signature=[spec])
        def forward(pixels):  # (B, S, S, 3) -> (B, D)
            return tf.cast(model()(pixels, training=False), tf.float32)

        _FORWARD[extractor] = forward
    return _FORWARD[extractor]
