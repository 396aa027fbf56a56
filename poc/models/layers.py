"""Small registered layers the classifiers share. Rebuilt from code, never deserialised from artifacts."""

from __future__ import annotations

import keras
from keras import ops

# Per-backbone input conventions (keras.applications' preprocess_input, as stock arithmetic).
PREPROCESSING = {
    "tf": "pixels scaled to [-1, 1]",
    "caffe": "RGB->BGR, ImageNet mean subtracted (VGG16, ResNet50)",
    "unit": "pixels scaled to [0, 1]",
    "raw": "pixels in [0, 255] (the backbone rescales itself)",
}
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="vitrine")
class Preprocess(keras.layers.Layer):
    """Maps raw RGB pixels in [0, 255] to what a backbone expects, so every caller feeds raw pixels."""

    def __init__(self, mode: str = "tf", **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESSING:
            raise ValueError(f"unknown preprocessing mode {mode!r}; choose from {sorted(PREPROCESSING)}")
        self.mode = mode

    def call(self, x):  # (B, S, S, 3)
        x = ops.cast(x, self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "caffe":
            bgr = ops.flip(x, axis=-1)
            return bgr - ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=self.compute_dtype)
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
