"""Attention rollout for Vision Transformers (Abnar & Zuidema 2020, arXiv 2005.00928).

Each encoder block mixes tokens by its attention matrix and keeps the input through the residual
connection, so the block's token mixing is approximated by 0.5 * A + 0.5 * I (rows renormalised).
Multiplying these matrices from the first block to the last gives how much each input token flows into
each output token; the class token's row, restricted to the patch tokens, is the heatmap.

Works on the arrays returned by `poc.models.vit.attention_model`; numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

HEAD_FUSIONS = ("mean", "max", "min")


def _stack(attentions: Sequence[np.ndarray]) -> np.ndarray:
    """Validates L arrays (B, H, T, T) of one model; returns (L, B, H, T, T) float64 and the grid side."""
    if len(attentions) == 0:
        raise ValueError("attentions is empty; pass one (B, H, T, T) array per encoder block")
    arrays = [np.asarray(a, dtype=np.float64) for a in attentions]
    first = arrays[0].shape
    for i, a in enumerate(arrays):
        if a.ndim != 4 or a.shape[2] != a.shape[3]:
            raise ValueError(f"attention {i} has shape {a.shape}; expected (batch, heads, T, T)")
        if a.shape != first:
            raise ValueError(f"attention {i} has shape {a.shape} but attention 0 has {first}; all must match")
    tokens = first[2]
    grid = int(round(np.sqrt(tokens - 1)))
    if tokens < 2 or grid * grid != tokens - 1:
        raise ValueError(f"T={tokens} tokens is not 1 class token + a square grid of patches")
    return np.stack(arrays), grid  # (L, B, H, T, T)


def attention_rollout(attentions: Sequence[np.ndarray], head_fusion: str = "mean") -> np.ndarray:
    """L arrays (B, H, T, T) -> (B, g, g) class-token-to-patch relevance, each map scaled to max 1.

    Heads are fused by `head_fusion` ("mean", "max" or "min"), the identity is added for the residual
    connection, rows are renormalised to sum to 1, and the layers are multiplied first to last.
    Raises ValueError for inconsistent shapes or an unknown fusion.
    """
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion='{head_fusion}' is not one of {HEAD_FUSIONS}")
    stacked, grid = _stack(attentions)  # (L, B, H, T, T)
    fused = getattr(stacked, head_fusion)(axis=2)  # (L, B, T, T)
    tokens = fused.shape[-1]
    mixed = fused + np.eye(tokens)  # (L, B, T, T): attention + residual
    mixed /= mixed.sum(axis=-1, keepdims=True)
    rollout = np.broadcast_to(np.eye(tokens), fused.shape[1:]).copy()  # (B, T, T)
    for layer in mixed:  # first block to last: R <- A_l @ R
        rollout = layer @ rollout  # (B, T, T)
    maps = rollout[:, 0, 1:].reshape(-1, grid, grid)  # (B, g, g): class token's row over the patches
    peak = maps.max(axis=(1, 2), keepdims=True)
    return np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0)


def cls_attention_per_layer(attentions: Sequence[np.ndarray]) -> np.ndarray:
    """L arrays (B, H, T, T) -> (B, L, H, g, g): raw attention of the class token to each patch."""
    stacked, grid = _stack(attentions)  # (L, B, H, T, T)
    cls = stacked[:, :, :, 0, 1:]  # (L, B, H, g*g)
    layers, batch, heads = cls.shape[:3]
    return cls.reshape(layers, batch, heads, grid, grid).transpose(1, 0, 2, 3, 4)  # (B, L, H, g, g)
