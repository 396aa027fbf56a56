"""Explanation maps for test images: attention rollout for ViTs, Grad-CAM for CNNs, none for TF-Hub models."""

from __future__ import annotations

import numpy as np

EXPLAIN_BATCH = 32  # images per explanation batch at most; big ViTs lower it to fit (poc.explain.attention)


def explain_images(model, spec, images, batch_size: int = EXPLAIN_BATCH) -> tuple[np.ndarray, str] | None:
    """(maps (N, h, w) in [0, 1] at patch-grid or feature-map resolution, method) for a batched dataset or
    an array of raw pixels (N, S, S, 3); None when the model family has no explanation method."""
    if spec.explanation == "attention_rollout":
        from poc.explain.attention import rollout_maps

        return rollout_maps(model, images, batch_size=batch_size), "attention_rollout"
    if spec.explanation == "gradcam":
        from poc.explain.gradcam import gradcam_maps

        return gradcam_maps(model, spec.last_conv, images), "gradcam"
    return None


def batches(images, batch_size: int = 32):
    """Raw-pixel batches of at most `batch_size` images, from a tf.data dataset of (images, labels) or of
    images, or from an array. A dataset's larger batches are cut, so memory follows `batch_size`."""
    if isinstance(images, np.ndarray):
        for start in range(0, len(images), batch_size):
            yield images[start:start + batch_size]
        return
    for batch in images:
        batch = batch[0] if isinstance(batch, (tuple, list)) else batch
        for start in range(0, len(batch), batch_size):
            yield batch[start:start + batch_size]
