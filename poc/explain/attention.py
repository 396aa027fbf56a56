"""ViT attention maps for test images: the backbone's encoder blocks run one at a time, each block's
attention folded into attention rollout (or reduced to its class-token row) before the next block runs.

Asking the backbone for all L attention matrices at once (`poc.models.vit.attention_model`) holds
L x (B, H, T, T) floats; ViT-B/16 at 384 px is 192 MB per image. Here only one block's attention is alive at
a time, over batches small enough that the attention-sized buffers of one block (scores, softmax, the copy
handed back, the rollout product) stay within ATTENTION_BUDGET (`benchmarks/explain_memory.py` measures it).
"""

from __future__ import annotations

from collections.abc import Iterator

import keras
import numpy as np
import tensorflow as tf

from poc.explain.batches import EXPLAIN_BATCH, batches
from poc.explain.rollout import attention_rollout, class_rows

ATTENTION_BUDGET = 512 * 2**20  # bytes; ViT-B/16 at 384 px: 4 images per batch, about 1.8 GB process peak
BUFFERS_PER_IMAGE = 8  # (H, T, T) float32 buffers alive per image while one block runs (measured)


def fitting_batch(model: keras.Model, batch_size: int) -> int:
    """`batch_size`, lowered so one block's attention buffers for the batch fit in ATTENTION_BUDGET."""
    block = next(layer for layer in model.get_layer("backbone").layers if layer.name.startswith("encoderblock_"))
    _, heads, tokens, _ = block.outputs[1].shape  # (B, H, T, T)
    per_image = BUFFERS_PER_IMAGE * heads * tokens * tokens * 4
    return max(1, min(batch_size, ATTENTION_BUDGET // per_image))


def block_attentions(model: keras.Model, pixels) -> Iterator[np.ndarray]:
    """Yields each encoder block's attention (B, H, T, T) as float32 numpy, first block to last, for raw
    pixels (B, S, S, 3). Walks the backbone's own layers in call order (shared weights, inference mode)."""
    backbone = model.get_layer("backbone")
    x = model.get_layer("preprocess")(tf.convert_to_tensor(pixels, tf.float32))  # (B, S, S, 3)
    blocks = [layer for layer in backbone.layers if layer.name.startswith("encoderblock_")]
    if not blocks:
        raise ValueError(f"backbone {backbone.name!r} has no encoder blocks; attention maps need a ViT")
    for layer in backbone.layers[:backbone.layers.index(blocks[-1]) + 1]:  # the final norm is not needed
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if layer.name.startswith("encoderblock_"):
            x, attention = layer(x, training=False)  # (B, T, D), (B, H, T, T)
            yield np.asarray(attention, np.float32)
        else:
            x = layer(x)  # embedding (B, g, g, D) -> tokens (B, g*g, D) -> cls, posembed (B, T, D)


def rollout_maps(model: keras.Model, images, head_fusion: str = "mean",
                 batch_size: int = EXPLAIN_BATCH) -> np.ndarray:
    """(N, g, g) class-token attention rollout, g = image size / patch."""
    maps = [attention_rollout(block_attentions(model, batch), head_fusion)
            for batch in batches(images, fitting_batch(model, batch_size))]
    return np.concatenate(maps) if maps else np.zeros((0, 1, 1), np.float32)


def per_layer_maps(model: keras.Model, images, batch_size: int = EXPLAIN_BATCH) -> np.ndarray:
    """(N, L, H, g, g) raw class-token attention for each layer and head."""
    out = [np.stack([class_rows(a) for a in block_attentions(model, batch)], axis=1)  # (B, L, H, g, g)
           for batch in batches(images, fitting_batch(model, batch_size))]
    return np.concatenate(out)
