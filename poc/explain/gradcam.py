"""Grad-CAM (Selvaraju et al. 2017, arXiv 1610.02391) on a CNN backbone's last convolutional feature map.

The gradient model is built from the backbone's own input and output tensors: a model spanning the outer
classifier and a layer inside the nested backbone raises "graph disconnected" in Keras 3.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from poc.explain.batches import batches


def gradcam_model(model: keras.Model, last_conv: str) -> keras.Model:
    backbone = model.get_layer("backbone")
    return keras.Model(backbone.inputs, [backbone.get_layer(last_conv).output, backbone.outputs[0]])


def gradcam_maps(model: keras.Model, last_conv: str, images, class_index: np.ndarray | None = None) -> np.ndarray:
    """(N, h, w) maps in [0, 1] for the predicted class (or `class_index`), at feature-map resolution."""
    inner = gradcam_model(model, last_conv)
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
