"""Registry glue for our ViT: registered name -> backbone of its variant (poc.models.vit_variants)."""

from __future__ import annotations

import keras

from poc.models.registry import ModelSpec


def build_vit(spec: ModelSpec, image_size: int, weights: str) -> keras.Model:
    """A random backbone of `spec`'s variant at `image_size` (already checked by `resolve_image_size`); a Google
    checkpoint (`weights`) is loaded by `poc.models.build`, which also fills the head from it."""
    from poc.models.vit import build_vit_backbone
    from poc.models.vit_variants import VIT_VARIANTS

    return build_vit_backbone(VIT_VARIANTS[spec.name], image_size, name="backbone")
