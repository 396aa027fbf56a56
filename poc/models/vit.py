"""Vision Transformer backbone in plain Keras 3 (Dosovitskiy et al. 2020, arXiv 2010.11929).

The image is cut into non-overlapping p x p patches, each patch is linearly embedded, a learned class
token is prepended, learned position embeddings are added, and the token sequence goes through `depth`
pre-norm Transformer encoder blocks. The class token after the final LayerNorm is the image feature.

Layer names mirror Google's checkpoints (`embedding`, `cls`, `posembed_input`, `encoderblock_<i>`,
`encoder_norm`) so that `poc.models.vit_checkpoint` maps keys to variables through one explicit table.
Every encoder block also hands back its attention weights (B, heads, T, T): `attention_model` exposes
them for attention rollout (`poc.explain.rollout`).

Input is float32 RGB already scaled to [-1, 1]; the classifier owns the preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import ops

LN_EPSILON = 1e-6  # as in the reference implementation (Flax LayerNorm(epsilon=1e-6))


@dataclass(frozen=True)
class ViTConfig:
    """One ViT variant: patch size, token width, number of blocks, attention heads, MLP hidden units."""

    patch: int
    width: int
    depth: int
    heads: int
    mlp: int


# The variants of arXiv 2010.11929 Table 1 (+ the small ones of "How to train your ViT", arXiv 2106.10270).
VIT_VARIANTS: dict[str, ViTConfig] = {
    "vit_b32": ViTConfig(patch=32, width=768, depth=12, heads=12, mlp=3072),
    "vit_b16": ViTConfig(patch=16, width=768, depth=12, heads=12, mlp=3072),
    "vit_s16": ViTConfig(patch=16, width=384, depth=12, heads=6, mlp=1536),
    "vit_ti16": ViTConfig(patch=16, width=192, depth=12, heads=3, mlp=768),
}


@keras.saving.register_keras_serializable(package="vitrine")
class ClassToken(keras.layers.Layer):
    """Prepends one learned class token (weight `cls`, shape (1, 1, width), zero-initialised) to the tokens."""

    def build(self, input_shape):
        self.cls = self.add_weight(name="cls", shape=(1, 1, input_shape[-1]), initializer="zeros")

    def call(self, x):  # x: (B, N, D)
        cls = ops.broadcast_to(ops.cast(self.cls, x.dtype), (ops.shape(x)[0], 1, ops.shape(x)[-1]))  # (B, 1, D)
        return ops.concatenate([cls, x], axis=1)  # (B, 1 + N, D)

    def compute_output_shape(self, input_shape):
        n = None if input_shape[1] is None else input_shape[1] + 1
        return (input_shape[0], n, input_shape[2])


@keras.saving.register_keras_serializable(package="vitrine")
class AddPositionEmbedding(keras.layers.Layer):
    """Adds a learned position embedding (weight `pos_embedding`, shape (1, T, width)) to the tokens."""

    def build(self, input_shape):
        self.pos_embedding = self.add_weight(
            name="pos_embedding",
            shape=(1, input_shape[1], input_shape[2]),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )

    def call(self, x):  # x: (B, T, D)
        return x + ops.cast(self.pos_embedding, x.dtype)  # (B, T, D)


def _check_config(config: ViTConfig, image_size: int) -> int:
    """Validates the arguments up front; returns the number of tokens T (patches + class token)."""
    if image_size <= 0 or image_size % config.patch:
        raise ValueError(
            f"image_size={image_size} is not a positive multiple of the patch size {config.patch}; "
            f"use e.g. {max(1, round(image_size / config.patch)) * config.patch}"
        )
    if config.width % config.heads:
        raise ValueError(f"width={config.width} is not divisible by heads={config.heads}")
    return (image_size // config.patch) ** 2 + 1


def _encoder_block(config: ViTConfig, tokens: int, name: str) -> keras.Model:
    """One pre-norm encoder block as a nested functional model with outputs [tokens, attention weights]."""
    inputs = keras.Input(shape=(tokens, config.width), name=f"{name}_input")  # (B, T, D)
    y = keras.layers.LayerNormalization(epsilon=LN_EPSILON, name="LayerNorm_0")(inputs)  # (B, T, D)
    y, attention = keras.layers.MultiHeadAttention(
        num_heads=config.heads,
        key_dim=config.width // config.heads,
        name="MultiHeadDotProductAttention_1",
    )(y, y, return_attention_scores=True)  # (B, T, D), (B, H, T, T)
    x = keras.layers.Add(name="residual_1")([inputs, y])  # (B, T, D)
    y = keras.layers.LayerNormalization(epsilon=LN_EPSILON, name="LayerNorm_2")(x)  # (B, T, D)
    # The Flax reference uses tanh-approximated GELU; exact GELU (as in timm's port) differs by < 1e-3.
    mlp = keras.Sequential(
        [
            keras.Input(shape=(tokens, config.width)),
            keras.layers.Dense(config.mlp, activation=keras.activations.gelu, name="Dense_0"),  # (B, T, M)
            keras.layers.Dense(config.width, name="Dense_1"),  # (B, T, D)
        ],
        name="MlpBlock_3",
    )
    x = keras.layers.Add(name="residual_3")([x, mlp(y)])  # (B, T, D)
    return keras.Model(inputs, [x, attention], name=name)


def build_vit_backbone(config: ViTConfig, image_size: int, name: str = "backbone") -> keras.Model:
    """ViT backbone: (B, S, S, 3) pixels in [-1, 1] -> (B, width) class-token features after the final norm.

    Top-level layers, in order: `embedding`, `tokens`, `cls`, `posembed_input`, `encoderblock_0` ...
    `encoderblock_{depth-1}` (one nested model each, so `.trainable` freezes a whole block), `encoder_norm`.
    Raises ValueError when `image_size` is not a multiple of `config.patch`.
    """
    tokens = _check_config(config, image_size)
    grid = image_size // config.patch
    inputs = keras.Input(shape=(image_size, image_size, 3), name="pixels")  # (B, S, S, 3)
    x = keras.layers.Conv2D(
        config.width, config.patch, strides=config.patch, padding="valid", name="embedding"
    )(inputs)  # (B, g, g, D)
    x = keras.layers.Reshape((grid * grid, config.width), name="tokens")(x)  # (B, g*g, D)
    x = ClassToken(name="cls")(x)  # (B, T, D)
    x = AddPositionEmbedding(name="posembed_input")(x)  # (B, T, D)
    for i in range(config.depth):
        x, _ = _encoder_block(config, tokens, f"encoderblock_{i}")(x)  # (B, T, D), (B, H, T, T)
    x = keras.layers.LayerNormalization(epsilon=LN_EPSILON, name="encoder_norm")(x)  # (B, T, D)
    features = x[:, 0]  # (B, D): the class token
    return keras.Model(inputs, features, name=name)


def block_names(backbone: keras.Model) -> list[str]:
    """Names of the encoder blocks in order: ["encoderblock_0", ...]."""
    names = [layer.name for layer in backbone.layers if layer.name.startswith("encoderblock_")]
    return sorted(names, key=lambda n: int(n.rsplit("_", 1)[1]))


def attention_model(backbone: keras.Model) -> keras.Model:
    """A model sharing the backbone's weights: inputs -> [features, attn_0, ..., attn_{L-1}], attn (B, H, T, T).

    Built from the tensors of the backbone's own graph (the first call of each block inside the backbone),
    not from the blocks' internal outputs, which would give a 'graph disconnected' error.
    """
    attentions = []
    for name in block_names(backbone):
        block = backbone.get_layer(name)
        # A nested Model's `.output` is its own internal output; the node records the call in the backbone.
        _, attention = block._inbound_nodes[0].output_tensors  # (B, T, D), (B, H, T, T)
        attentions.append(attention)
    return keras.Model(backbone.inputs[0], [backbone.outputs[0], *attentions], name=f"{backbone.name}_attention")
