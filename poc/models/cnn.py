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
    # EfficientNetV2 looks its block table up by its own name, so it keeps it; its graph is then wrapped under the
    # classifier's name for it (same layers and weights).
    named = {} if spec.app.startswith("EfficientNetV2") else {"name": "backbone"}
    backbone = constructor(include_top=False, weights=None if local else source,
                           input_shape=(image_size, image_size, 3), pooling="avg", **named)
    if backbone.name != "backbone":
        backbone = keras.Model(backbone.inputs[0], backbone.outputs[0], name="backbone")
    if local:
        try:
            backbone.load_weights(source)
        except Exception as exc:
            raise UserError(f"--weights {source} does not fit {spec.name} at {image_size} px: {exc}") from exc
    return backbone
