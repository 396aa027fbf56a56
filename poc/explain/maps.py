"""Explanation maps for test images: attention rollout for ViTs, Grad-CAM for CNNs, none for TF-Hub models."""

from __future__ import annotations

import numpy as np

from poc.explain.batches import EXPLAIN_BATCH


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
