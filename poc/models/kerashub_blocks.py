"""A KerasHub transformer backbone rewired as ViTrine's ViT is built: the backbone's own layers (shared weights)
called in a functional model whose top-level layers are [stem ..., encoderblock_0 ... encoderblock_{L-1},
final norm], each encoder block a nested model with outputs [tokens, attention (B, H, T, T)].

That layout is what the rest of ViTrine already reads: `blocks:K` cutoffs (poc.models.cutoffs), attention rollout
one block at a time (poc.explain.attention) and per-layer attention. KerasHub's encoders call their blocks inside
one layer and hand back no attention, so each family's block forward is written here from the block's public
sublayers, asking its MultiHeadAttention for `return_attention_scores` as poc.models.vit does (DeiT's block takes
the flag itself; DINOv3's RoPE attention is computed with plain ops). tests/test_kerashub.py checks every family's
features against the KerasHub backbone's own output.

Register and distillation tokens stay in the blocks but not in the attention handed back: it keeps the class
token and the patch tokens (T = 1 + g^2), so the rollout's class row covers patches only. A backbone without a
class token (SigLIP) is pooled by global average pooling over a `patch_grid` layer, which is where Grad-CAM reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np
from keras import ops


@dataclass
class Parts:
    stem: list  # layers from pixels to tokens (B, T, D), called in order
    blocks: list[Callable]  # tokens (B, T, D) -> (tokens (B, T, D), attention (B, H, T, T))
    norm: keras.layers.Layer  # the final norm


def transformer_backbone(hub, info, image_size: int) -> keras.Model:
    """Backbone "backbone": (B, S, S, 3) pixels after the preset's converter -> (B, D) pooled features."""
    parts = PARTS[info.class_name](hub, info, image_size)
    pixels = keras.Input((image_size, image_size, 3), name="images")  # (B, S, S, 3)
    x = pixels
    for layer in parts.stem:
        x = layer(x)  # (B, T, D) at the end
    tokens, width = info.prefix_tokens + (image_size // info.patch) ** 2, x.shape[2]
    if x.shape[1] != tokens:  # SigLIP's embedding declares one token too many; the slice is a no-op at run time
        x = x[:, :tokens]
    for i, block in enumerate(parts.blocks):
        x = _encoder_block(block, tokens, width, info.prefix_tokens, f"encoderblock_{i}")(x)[0]  # (B, T, D)
    x = parts.norm(x)  # (B, T, D)
    if info.class_token:
        features = x[:, 0]  # (B, D): the class token
    else:
        grid = image_size // info.patch
        x = keras.layers.Reshape((grid, grid, width), name="patch_grid")(x[:, info.prefix_tokens:])  # (B, g, g, D)
        features = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)  # (B, D)
    return keras.Model(pixels, features, name="backbone")


def _encoder_block(block: Callable, tokens: int, width: int, prefix: int, name: str) -> keras.Model:
    inputs = keras.Input((tokens, width), name=f"{name}_input")  # (B, T, D)
    outputs, attention = block(inputs)  # (B, T, D), (B, H, T, T)
    if prefix > 1:  # drop distillation / register rows and columns: (B, H, 1 + g*g, 1 + g*g)
        attention = ops.concatenate([attention[:, :, :1], attention[:, :, prefix:]], axis=2)
        attention = ops.concatenate([attention[:, :, :, :1], attention[:, :, :, prefix:]], axis=3)
    return keras.Model(inputs, [outputs, attention], name=name)


def _pre_norm(norm1, attention, norm2, mlp, after_attention=(), after_mlp=()) -> Callable:
    """The pre-norm block most families share: x + attn(norm1(x)), then + mlp(norm2(x)); extra layers (dropout,
    layer scale, drop path) after each branch, in the family's order."""

    def forward(x):
        h = norm1(x)  # (B, T, D)
        y, scores = attention(h, h, return_attention_scores=True)  # (B, T, D), (B, H, T, T)
        for layer in after_attention:
            y = layer(y)
        x = x + y
        y = mlp(norm2(x))  # (B, T, D)
        for layer in after_mlp:
            y = layer(y)
        return x + y, scores

    return forward


# ---------------------------------------------------------------- one function per family

def _vit(hub, info, size) -> Parts:
    embedding, encoder = hub.get_layer("vit_patching_and_embedding"), hub.get_layer("vit_encoder")
    blocks = [_pre_norm(b.layer_norm_1, b.mha, b.layer_norm_2, b.mlp, after_attention=[b.dropout])
              for b in encoder.encoder_layers]
    return Parts([embedding, encoder.dropout], blocks, encoder.layer_norm)


def _deit(hub, info, size) -> Parts:
    embedding, encoder = hub.get_layer("deit_patching_and_embedding"), hub.get_layer("deit_encoder")

    def forward(block):
        return lambda x: block(x, return_attention_scores=True)  # the block's own flag

    return Parts([embedding], [forward(b) for b in encoder.encoder_layers], encoder.layer_norm)


def _dinov2(hub, info, size) -> Parts:
    blocks = [_pre_norm(b.norm1, b.attention.attention, b.norm2, b.mlp,
                        after_attention=[b.attention.dropout, b.layer_scale1, b.drop_path],
                        after_mlp=[b.layer_scale2, b.drop_path]) for b in hub.encoder.layers]
    return Parts([hub.embeddings], blocks, hub.layernorm)


def _siglip(hub, info, size) -> Parts:
    blocks = [_pre_norm(b.layer_norm1, b.self_attn, b.layer_norm2, b.mlp) for b in hub.encoder_layers]
    return Parts([hub.embedding], blocks, hub.post_layer_norm)


def _clip(hub, info, size) -> Parts:
    def mlp(block):
        return lambda x: block.dense_2(block.activation(block.dense_1(x)))

    blocks = [_pre_norm(b.layer_norm_1, b.attention, b.layer_norm_2, mlp(b)) for b in hub.encoder_layers]
    return Parts([hub.embedding, hub.pre_layer_norm], blocks, hub.layer_norm)


def _dinov3(hub, info, size) -> Parts:
    """DINOv3 attends with rotary position embeddings (RoPE) on the patch tokens through
    ops.nn.dot_product_attention, which returns no scores: the same attention is written out here."""
    cos, sin = (np.asarray(t, np.float32) for t in hub.rope_embedding(np.zeros((1, size, size, 3), np.float32)))
    return Parts([hub.embeddings], [_rope_block(b, cos, sin, info.prefix_tokens) for b in hub.encoder.layers],
                 hub.layernorm)


def _rope_block(block, cos: np.ndarray, sin: np.ndarray, prefix: int) -> Callable:
    attention = block.attention
    heads, head_dim = attention.num_heads, attention.head_dim

    def split(x):  # (B, T, D) -> (B, T, H, hd)
        return ops.reshape(x, (-1, x.shape[1], heads, head_dim))

    def rotate(x):  # RoPE on the patch tokens only: (B, T, H, hd)
        half = head_dim // 2
        patches = x[:, prefix:]
        turned = ops.concatenate([-patches[..., half:], patches[..., :half]], axis=-1)
        c, s = (ops.cast(t[None, :, None, :], x.dtype) for t in (cos, sin))  # (1, N, 1, hd)
        return ops.concatenate([x[:, :prefix], patches * c + turned * s], axis=1)

    def forward(x):
        h = block.norm1(x)  # (B, T, D)
        q, k = rotate(split(attention.query_dense(h))), rotate(split(attention.key_dense(h)))
        v = split(attention.value_dense(h))  # (B, T, H, hd)
        logits = ops.einsum("bqhd,bkhd->bhqk", q, k) * (1.0 / math.sqrt(head_dim))  # (B, H, T, T)
        scores = ops.softmax(logits, axis=-1)
        y = ops.einsum("bhqk,bkhd->bqhd", scores, v)  # (B, T, H, hd)
        y = attention.output_dense(attention.dropout(ops.reshape(y, (-1, y.shape[1], heads * head_dim))))
        x = x + block.drop_path(block.layer_scale1(y))
        y = block.layer_scale2(block.mlp(block.norm2(x)))
        return x + block.drop_path(y), scores

    return forward


PARTS = {"ViTBackbone": _vit, "DeiTBackbone": _deit, "DINOV2Backbone": _dinov2, "DINOV3Backbone": _dinov3,
         "SigLIPVisionEncoder": _siglip, "CLIPVisionEncoder": _clip}
