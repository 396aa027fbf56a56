"""Explanation maps for test images: attention rollout for ViTs, Grad-CAM for CNNs, none for TF-Hub models."""

from __future__ import annotations

import numpy as np


def explain_images(model, spec, images) -> tuple[np.ndarray, str] | None:
    """(maps (N, h, w) in [0, 1] at patch-grid or feature-map resolution, method) for a batched dataset or
    an array of raw pixels (N, S, S, 3); None when the model family has no explanation method."""
    if spec.explanation == "attention_rollout":
        from poc.explain.attention import rollout_maps

        return rollout_maps(model, images), "attention_rollout"
    if spec.explanation == "gradcam":
        from poc.explain.gradcam import gradcam_maps

        return gradcam_maps(model, spec.last_conv, images), "gradcam"
    return None


def batches(images, batch_size: int = 32):
    """Raw-pixel batches from a tf.data dataset of (images, labels) or from an array."""
    if isinstance(images, np.ndarray):
        for start in range(0, len(images), batch_size):
            yield images[start:start + batch_size]
        return
    for batch in images:
        yield batch[0] if isinstance(batch, (tuple, list)) else batch
