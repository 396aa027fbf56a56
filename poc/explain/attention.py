"""ViT attention maps for test images: the backbone's attention weights fed to attention rollout."""

from __future__ import annotations

import keras
import numpy as np

from poc.explain import batches
from poc.explain.rollout import attention_rollout, cls_attention_per_layer


def attention_batches(model: keras.Model, images):
    """Yields, per batch, the list of per-layer (B, heads, T, T) attention weights for raw-pixel images."""
    from poc.models.vit import attention_model

    inner = attention_model(model.get_layer("backbone"))
    preprocess = model.get_layer("preprocess")
    for batch in batches(images):
        outputs = inner(preprocess(np.asarray(batch, np.float32)), training=False)
        yield [np.asarray(a, np.float32) for a in outputs[1:]]


def rollout_maps(model: keras.Model, images) -> np.ndarray:
    """(N, g, g) class-token attention rollout, g = image size / patch; batch by batch to bound memory."""
    return np.concatenate([attention_rollout(att) for att in attention_batches(model, images)])


def per_layer_maps(model: keras.Model, images) -> np.ndarray:
    """(N, L, H, g, g) raw class-token attention for each layer and head."""
    return np.concatenate([cls_attention_per_layer(att) for att in attention_batches(model, images)])
