"""Explanation maps for test images: attention rollout for ViTs, Grad-CAM for CNNs, none for TF-Hub models."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from poc.explain.batches import EXPLAIN_BATCH


class Explanation(NamedTuple):
    maps: np.ndarray  # (N, h, w) in [0, 1]
    method: str  # "attention_rollout" | "gradcam"
    layer: str | None = None  # the backbone layer Grad-CAM read (poc.explain.gradcam.gradcam_layer); None: rollout


def explain_images(model, spec, images, batch_size: int = EXPLAIN_BATCH) -> Explanation | None:
    """Explanation(maps (N, h, w) in [0, 1] at patch-grid or feature-map resolution, method, layer) for a batched
    dataset or an array of raw pixels (N, S, S, 3); None when the model family has no explanation method."""
    if spec.explanation == "attention_rollout":
        from poc.explain.attention import rollout_maps

        return Explanation(rollout_maps(model, images, batch_size=batch_size), "attention_rollout")
    if spec.explanation == "gradcam":
        from poc.explain.gradcam import gradcam_layer, gradcam_maps

        layer = gradcam_layer(model.get_layer("backbone"), spec)
        return Explanation(gradcam_maps(model, layer, images), "gradcam", layer)
    return None
