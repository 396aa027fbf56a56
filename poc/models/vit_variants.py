"""The ViT variant table: a variant name decoded once ("B/32" -> patch, width, depth, heads, MLP), as big_vision does.

The one place a ViT's sizes are written. The registry (`poc.models.registry`), the Keras backbone
(`poc.models.vit`) and the cost estimate (`poc.analysis.cost`) all read it. TensorFlow-free, so the CLI and the
dashboard read sizes without importing Keras.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ViTConfig:
    """One ViT variant: patch size, token width, number of blocks, attention heads, MLP hidden units."""

    patch: int
    width: int
    depth: int
    heads: int
    mlp: int


# (width, depth, heads, mlp) per model size: arXiv 2010.11929 Table 1 (B), and the small ones of "How to train
# your ViT" (arXiv 2106.10270: Ti, S).
SIZES: dict[str, tuple[int, int, int, int]] = {
    "Ti": (192, 12, 3, 768),
    "S": (384, 12, 6, 1536),
    "B": (768, 12, 12, 3072),
}

# Registry name -> variant name. Ti/8: the Ti width and depth on 8 px patches, 4x the tokens of Ti/16 (64 px ->
# 8 x 8 patches): the demo ViT, whose small images leave Ti/16 only 4 x 4 patches (see poc/pretrained/README.md).
VARIANT_NAMES: dict[str, str] = {
    "vit_b32": "B/32",
    "vit_b16": "B/16",
    "vit_s16": "S/16",
    "vit_ti16": "Ti/16",
    "vit_ti8": "Ti/8",
}


def decode(variant: str) -> ViTConfig:
    """"B/32" -> ViTConfig(patch=32, width=768, depth=12, heads=12, mlp=3072); ValueError quoting a bad name."""
    size, _, patch = variant.partition("/")
    if size not in SIZES or not patch.isdigit() or int(patch) < 1:
        raise ValueError(f"ViT variant {variant!r} is not <size>/<patch> with size one of {', '.join(SIZES)}, "
                         "e.g. 'B/32'")
    width, depth, heads, mlp = SIZES[size]
    return ViTConfig(patch=int(patch), width=width, depth=depth, heads=heads, mlp=mlp)


VIT_VARIANTS: dict[str, ViTConfig] = {name: decode(variant) for name, variant in VARIANT_NAMES.items()}


def describe(name: str, template: str) -> str:
    """`template` filled with the registered ViT's variant name and sizes: {variant} {patch} {width} {depth}
    {heads} {mlp}, e.g. "ViT-{variant}, {depth} blocks, width {width}" -> "ViT-B/16, 12 blocks, width 768"."""
    config = VIT_VARIANTS[name]
    return template.format(variant=VARIANT_NAMES[name], patch=config.patch, width=config.width, depth=config.depth,
                           heads=config.heads, mlp=config.mlp)
