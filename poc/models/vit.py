"""Vision Transformer backbone in plain Keras 3 (Dosovitskiy et al. 2020, arXiv 2010.11929).

The image is cut into non-overlapping p x p patches, each patch is linearly embedded, a learned class
token is prepended, learned position embeddings are added, and the token sequence goes through `depth`
pre-norm Transformer encoder blocks. The class token after the final LayerNorm is the image feature.

Layer names mirror Google's checkpoints (`embedding`, `cls`, `posembed_input`, `encoderblock_<i>`,
`encoder_norm`) so that `poc.models.vit_checkpoint` maps keys to variables through one explicit table.
Every encoder block also hands back its attention weights (B, heads, T, T) as a named output of the forward
pass (`with_attention=True`, `intermediates_model`); `attention_model` lists them for attention rollout
(`poc.explain.rollout`).

Input is float32 RGB already scaled to [-1, 1]; the classifier owns the preprocessing.
"""

from __future__ import annotations

import keras
from keras import ops

from poc.models.vit_variants import ViTConfig  # the variant table: poc.models.vit_variants.VIT_VARIANTS

LN_EPSILON = 1e-6  # as in the reference implementation (Flax LayerNorm(epsilon=1e-6))


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


def _layers(config: ViTConfig, image_size: int) -> list[keras.layers.Layer]:
    """The backbone's layers in call order, named as in Google's checkpoints (see `checkpoint_key_table`)."""
    tokens = _check_config(config, image_size)
    grid = image_size // config.patch
    return [
        keras.layers.Conv2D(config.width, config.patch, strides=config.patch, padding="valid", name="embedding"),
        keras.layers.Reshape((grid * grid, config.width), name="tokens"),
        ClassToken(name="cls"),
        AddPositionEmbedding(name="posembed_input"),
        *(_encoder_block(config, tokens, f"encoderblock_{i}") for i in range(config.depth)),
        keras.layers.LayerNormalization(epsilon=LN_EPSILON, name="encoder_norm"),
    ]


def _forward(layers: list[keras.layers.Layer], pixels) -> dict:
    """The one forward pass, wired on `pixels`: {"features": (B, D), "attention": [(B, H, T, T)] per block}.

    Both the plain backbone and its attention model are built from it, so they cannot drift apart, and the
    attention maps are ordinary outputs of the blocks' calls here (no reading of Keras' private graph nodes).
    """
    x, attentions = pixels, []  # (B, S, S, 3)
    for layer in layers:
        if layer.name.startswith("encoderblock_"):
            x, attention = layer(x)  # (B, T, D), (B, H, T, T)
            attentions.append(attention)
        else:
            x = layer(x)  # embedding (B, g, g, D) -> tokens (B, g*g, D) -> cls, posembed, encoder_norm (B, T, D)
    return {"features": x[:, 0], "attention": attentions}  # class token (B, D)


def build_vit_backbone(config: ViTConfig, image_size: int, name: str = "backbone",
                       with_attention: bool = False) -> keras.Model:
    """ViT backbone: (B, S, S, 3) pixels in [-1, 1] -> (B, width) class-token features after the final norm.

    Top-level layers, in order: `embedding`, `tokens`, `cls`, `posembed_input`, `encoderblock_0` ...
    `encoderblock_{depth-1}` (one nested model each, so `.trainable` freezes a whole block), `encoder_norm`.
    `with_attention=True` returns the named intermediates instead, as big_vision does: outputs
    {"features": (B, width), "attention": [(B, heads, T, T) per block]}. To explain an existing backbone
    (shared weights), use `attention_model(backbone)`.
    Raises ValueError when `image_size` is not a multiple of `config.patch`.
    """
    layers = _layers(config, image_size)
    inputs = keras.Input(shape=(image_size, image_size, 3), name="pixels")  # (B, S, S, 3)
    outputs = _forward(layers, inputs)
    return keras.Model(inputs, outputs if with_attention else outputs["features"], name=name)


def block_names(backbone: keras.Model) -> list[str]:
    """Names of the encoder blocks in order: ["encoderblock_0", ...]."""
    names = [layer.name for layer in backbone.layers if layer.name.startswith("encoderblock_")]
    return sorted(names, key=lambda n: int(n.rsplit("_", 1)[1]))


def _rewire(backbone: keras.Model) -> tuple:
    """A new input wired through the backbone's own layers (shared weights): (input, `_forward` outputs)."""
    names = ["embedding", "tokens", "cls", "posembed_input", *block_names(backbone), "encoder_norm"]
    layers = [backbone.get_layer(name) for name in names]  # ValueError naming the layer if one is missing
    inputs = keras.Input(shape=tuple(backbone.inputs[0].shape[1:]), name="pixels")  # (B, S, S, 3)
    return inputs, _forward(layers, inputs)


def intermediates_model(backbone: keras.Model) -> keras.Model:
    """A model sharing the backbone's weights with named outputs {"features": (B, D), "attention":
    [(B, H, T, T) per block]}, as `build_vit_backbone(..., with_attention=True)` builds them."""
    inputs, outputs = _rewire(backbone)
    return keras.Model(inputs, outputs, name=f"{backbone.name}_intermediates")


def attention_model(backbone: keras.Model) -> keras.Model:
    """A model sharing the backbone's weights: inputs -> [features, attn_0, ..., attn_{L-1}], attn (B, H, T, T)."""
    inputs, outputs = _rewire(backbone)
    return keras.Model(inputs, [outputs["features"], *outputs["attention"]], name=f"{backbone.name}_attention")
