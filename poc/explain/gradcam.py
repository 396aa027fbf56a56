"""Grad-CAM (Selvaraju et al. 2017, arXiv 1610.02391) on a CNN backbone's feature map.

The gradient model is built from the backbone's own input and output tensors: a model spanning the outer
classifier and a layer inside the nested backbone raises "graph disconnected" in Keras 3.

Which feature map (`gradcam_layer`): the backbone's last one (the registry's `last_conv`) when its native grid is
at least MIN_GRID x MIN_GRID; at low resolution it is coarser (MobileNetV2 at 64 px: 2 x 2, a colour wash), and
Grad-CAM reads instead the output of the last block whose native grid is still at least MIN_GRID a side, never
an upsampled map. Blocks are where the registry's cutoffs start (`cutoff_pattern`): the tensor entering a block's
first layer is the previous block's output.
"""

from __future__ import annotations

import re

import keras
import numpy as np
import tensorflow as tf

from poc.explain.batches import batches

MIN_GRID = 4  # cells a side: a finer map than this is asked of Grad-CAM when the backbone has one


def native_grid(layer: keras.layers.Layer) -> tuple[int, int] | None:
    """(h, w) of a layer's 4-D output (B, h, w, K) as built, before any resizing; None for other outputs."""
    try:
        output = layer.output
    except (AttributeError, ValueError):  # a layer called several times has no single output
        return None
    shape = getattr(output, "shape", None) if not isinstance(output, (list, tuple)) else None
    if shape is None or len(shape) != 4 or shape[1] is None or shape[2] is None:
        return None
    return int(shape[1]), int(shape[2])


def gradcam_layer(backbone: keras.Model, spec) -> str:
    """The backbone layer Grad-CAM reads: `spec.last_conv` when its grid is at least MIN_GRID a side, else the
    output of the last block whose native grid is (the layer producing the input of the last block start, by the
    spec's cutoff pattern, whose grid is at least MIN_GRID a side); `spec.last_conv` when no block qualifies."""
    grid = native_grid(backbone.get_layer(spec.last_conv))
    if grid is not None and min(grid) >= MIN_GRID:
        return spec.last_conv
    producers = {id(layer.output): layer for layer in backbone.layers if native_grid(layer) is not None}
    chosen = None
    for layer in backbone.layers:  # topological order: the last qualifying block wins
        if not re.match(spec.cutoff_pattern, layer.name):
            continue
        try:
            entering = layer.input
        except (AttributeError, ValueError):
            continue
        source = producers.get(id(entering)) if not isinstance(entering, (list, tuple)) else None
        source_grid = native_grid(source) if source is not None else None
        if source_grid is not None and min(source_grid) >= MIN_GRID:
            chosen = source.name
    return chosen or spec.last_conv


def gradcam_model(model: keras.Model, layer: str) -> keras.Model:
    backbone = model.get_layer("backbone")
    return keras.Model(backbone.inputs, [backbone.get_layer(layer).output, backbone.outputs[0]])


def gradcam_maps(model: keras.Model, layer: str, images, class_index: np.ndarray | None = None) -> np.ndarray:
    """(N, h, w) maps in [0, 1] for the predicted class (or `class_index`), at the native resolution of the
    backbone layer `layer` (see gradcam_layer)."""
    inner = gradcam_model(model, layer)
    preprocess, head = model.get_layer("preprocess"), model.get_layer("head")
    maps, offset = [], 0
    for batch in batches(images):
        x = preprocess(tf.convert_to_tensor(batch, tf.float32))
        with tf.GradientTape() as tape:
            fmap, features = inner(x, training=False)  # (B, h, w, K), (B, D)
            logits = tf.matmul(tf.cast(features, tf.float32), head.kernel) + head.bias  # (B, C): pre-softmax
            target = (tf.argmax(logits, axis=1) if class_index is None
                      else tf.constant(class_index[offset:offset + len(x)]))
            score = tf.gather(logits, target, axis=1, batch_dims=1)  # (B,)
        grads = tf.cast(tape.gradient(score, fmap), tf.float32)  # (B, h, w, K)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)  # (B, 1, 1, K)
        cam = tf.nn.relu(tf.reduce_sum(weights * tf.cast(fmap, tf.float32), axis=-1)).numpy()  # (B, h, w)
        maps.append(_normalise(cam))
        offset += len(x)
    return np.concatenate(maps) if maps else np.zeros((0, 1, 1), np.float32)


def _normalise(cam: np.ndarray) -> np.ndarray:
    peak = cam.reshape(len(cam), -1).max(axis=1)[:, None, None]
    return np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0).astype(np.float32)
