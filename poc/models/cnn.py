"""CNN backbones from keras.applications, global-average-pooled, named "backbone" for the classifier."""

from __future__ import annotations

import keras

from poc.errors import UserError
from poc.models.registry import ModelSpec


def build_application(spec: ModelSpec, image_size: int, weights: str) -> keras.Model:
    """`weights`: "none", "imagenet" (downloads once into ~/.keras), or a path to backbone weights (.h5) that
    `poc.models.resolve_weights` has checked."""
    constructor = getattr(keras.applications, spec.app)
    source = None if weights == "none" else weights
    local = source not in (None, "imagenet")
    # A failed ImageNet download becomes a UserError with the offline choices in poc.models.build.
    backbone = constructor(include_top=False, weights=None if local else source,
                           input_shape=(image_size, image_size, 3), pooling="avg", name="backbone")
    if local:
        try:
            backbone.load_weights(source)
        except Exception as exc:
            raise UserError(f"--weights {source} does not fit {spec.name} at {image_size} px: {exc}") from exc
    return backbone
