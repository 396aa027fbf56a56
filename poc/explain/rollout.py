"""Attention rollout for Vision Transformers (Abnar & Zuidema 2020, arXiv 2005.00928).

Each encoder block mixes tokens by its attention matrix and keeps the input through the residual
connection, so the block's token mixing is approximated by 0.5 * A + 0.5 * I (rows renormalised).
Multiplying these matrices from the first block to the last gives how much each input token flows into
each output token; the class token's row, restricted to the patch tokens, is the heatmap.

The product is built one layer at a time (`rollout_step`), so a caller that computes the blocks one by one
holds a single (B, H, T, T) attention and one (B, T, T) product, never all L layers: ViT-B/16 at 384 px has
T = 577 tokens, 16 MB per image and layer in float32. Model outputs stay float32 (float64 inputs stay
float64, so hand-worked checks are exact). Numpy only.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

HEAD_FUSIONS = ("mean", "max", "min")


def check_attention(attention: np.ndarray, like: tuple | None = None, index: int = 0) -> int:
    """Validates one (B, H, T, T) attention (and that it matches `like`, layer 0's shape); returns grid side g."""
    shape = np.shape(attention)
    if len(shape) != 4 or shape[2] != shape[3]:
        raise ValueError(f"attention {index} has shape {shape}; expected (batch, heads, T, T)")
    if like is not None and shape != like:
        raise ValueError(f"attention {index} has shape {shape} but attention 0 has {like}; all must match")
    tokens = shape[2]
    grid = int(round(np.sqrt(tokens - 1)))
    if tokens < 2 or grid * grid != tokens - 1:
        raise ValueError(f"T={tokens} tokens is not 1 class token + a square grid of patches")
    return grid


def fuse_heads(attention: np.ndarray, head_fusion: str = "mean") -> np.ndarray:
    """(B, H, T, T) -> (B, T, T), heads fused by "mean", "max" or "min", in float32 at least."""
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion='{head_fusion}' is not one of {HEAD_FUSIONS}")
    attention = np.asarray(attention)
    dtype = np.promote_types(attention.dtype, np.float32)
    return getattr(attention, head_fusion)(axis=1).astype(dtype, copy=False)  # (B, T, T)


def rollout_step(rollout: np.ndarray | None, fused: np.ndarray) -> np.ndarray:
    """One block folded into the product: R <- (0.5 A + 0.5 I, rows renormalised) @ R. None starts it."""
    tokens = fused.shape[-1]
    mixed = fused + np.eye(tokens, dtype=fused.dtype)  # (B, T, T): attention + residual
    mixed /= mixed.sum(axis=-1, keepdims=True)
    return mixed if rollout is None else mixed @ rollout  # (B, T, T)


def rollout_to_maps(rollout: np.ndarray) -> np.ndarray:
    """(B, T, T) product -> (B, g, g): the class token's row over the patches, each map scaled to max 1."""
    tokens = rollout.shape[-1]
    grid = int(round(np.sqrt(tokens - 1)))
    maps = rollout[:, 0, 1:].reshape(-1, grid, grid)  # (B, g, g)
    peak = maps.max(axis=(1, 2), keepdims=True)
    return np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0)


def attention_rollout(attentions: Iterable[np.ndarray], head_fusion: str = "mean") -> np.ndarray:
    """L arrays (B, H, T, T), first block to last (a list or a generator) -> (B, g, g) relevance maps.

    Raises ValueError for inconsistent shapes, an empty sequence or an unknown fusion.
    """
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion='{head_fusion}' is not one of {HEAD_FUSIONS}")
    rollout, first = None, None
    for i, attention in enumerate(attentions):
        check_attention(attention, first, i)
        first = first or np.shape(attention)
        rollout = rollout_step(rollout, fuse_heads(attention, head_fusion))
    if rollout is None:
        raise ValueError("attentions is empty; pass one (B, H, T, T) array per encoder block")
    return rollout_to_maps(rollout)


def class_rows(attention: np.ndarray) -> np.ndarray:
    """(B, H, T, T) -> (B, H, g, g): raw attention of the class token to each patch, in float32 at least."""
    grid = check_attention(attention)
    attention = np.asarray(attention)
    rows = attention[:, :, 0, 1:].astype(np.promote_types(attention.dtype, np.float32))  # (B, H, g*g)
    return rows.reshape(*rows.shape[:2], grid, grid)
