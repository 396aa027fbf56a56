"""Explanation heatmaps drawn over images, and display thumbnails. Pure functions: arrays and PIL in, PIL out.

A heatmap arrives at patch-grid (ViT rollout) or feature-map (Grad-CAM) resolution, e.g. (4, 4) for a 64 px
ViT-Ti/16; it is upsampled bilinearly to the image (cell centres stay on cell centres, so a peak stays where
it was), coloured with a matplotlib colormap and alpha-blended at `opacity`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

DEFAULT_CMAP = "jet"
THUMB_SIDE = 160  # px; the longer side of a grid thumbnail


def _as_map(heatmap) -> np.ndarray:
    """A finite float32 (h, w) array; raises ValueError naming the bad shape."""
    arr = np.asarray(heatmap, dtype=np.float32)
    if arr.ndim != 2 or 0 in arr.shape:
        raise ValueError(f"heatmap has shape {arr.shape}; expected a non-empty 2-D (h, w) array")
    return np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=0.0)


def normalise(heatmap) -> np.ndarray:
    """(h, w) scaled to [0, 1] by its own min and max; a constant map becomes all zeros."""
    arr = _as_map(heatmap)
    low, high = float(arr.min()), float(arr.max())
    if high - low <= 1e-12:
        return np.zeros_like(arr)
    return (arr - low) / (high - low)


def upsample(heatmap, size: tuple[int, int]) -> np.ndarray:
    """(h, w) in [0, 1] -> (height, width) float32 for `size` = (width, height), PIL's convention."""
    width, height = size
    arr = np.clip(_as_map(heatmap), 0.0, 1.0)
    resized = Image.fromarray(arr, mode="F").resize((int(width), int(height)), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)  # (H, W)


def colorize(heatmap, cmap: str = DEFAULT_CMAP) -> np.ndarray:
    """(h, w) in [0, 1] -> (h, w, 3) uint8 colours of matplotlib colormap `cmap`."""
    import matplotlib

    colours = matplotlib.colormaps[cmap](np.clip(_as_map(heatmap), 0.0, 1.0))  # (h, w, 4) floats
    return (colours[..., :3] * 255.0 + 0.5).astype(np.uint8)


def heatmap_image(heatmap, size: tuple[int, int], cmap: str = DEFAULT_CMAP) -> Image.Image:
    """The coloured heatmap alone at `size` = (width, height), e.g. a class's mean map."""
    return Image.fromarray(colorize(upsample(heatmap, size), cmap), mode="RGB")


def overlay(image: Image.Image, heatmap, opacity: float = 0.5, cmap: str = DEFAULT_CMAP) -> Image.Image:
    """`image` (any mode) with the heatmap upsampled to its size and blended in at `opacity` in [0, 1].

    Opacity 0 returns the image's own RGB pixels unchanged; 1 shows the colormap alone.
    """
    if not 0.0 <= float(opacity) <= 1.0:
        raise ValueError(f"opacity={opacity!r} is outside [0, 1]")
    base = image.convert("RGB")
    if opacity == 0:
        return base.copy()
    colours = heatmap_image(heatmap, base.size, cmap)
    return Image.blend(base, colours, float(opacity))


def thumbnail(image: Image.Image, side: int = THUMB_SIDE) -> Image.Image:
    """RGB copy whose longer side is `side` px (aspect kept); small images are enlarged, pixel-sharp."""
    if side < 1:
        raise ValueError(f"side must be a positive number of pixels, got {side!r}")
    base = image.convert("RGB")
    width, height = base.size
    scale = side / max(width, height)
    new = (max(1, round(width * scale)), max(1, round(height * scale)))
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
    return base.resize(new, resample)


def tile_grid(rows: list[list[Image.Image]], gap: int = 4, background=(255, 255, 255)) -> Image.Image:
    """One RGB image of `rows` of tiles laid out left to right, top to bottom, `gap` px apart.

    Each cell is as wide as its column's widest tile and as tall as its row's tallest; tiles sit top-left.
    """
    if not rows or not any(rows):
        raise ValueError("tile_grid needs at least one tile")
    n_cols = max(len(r) for r in rows)
    widths = [max((r[c].width for r in rows if c < len(r)), default=0) for c in range(n_cols)]
    heights = [max((t.height for t in r), default=0) for r in rows]
    canvas = Image.new("RGB", (sum(widths) + gap * (n_cols - 1), sum(heights) + gap * (len(rows) - 1)),
                       background)
    y = 0
    for r, row in enumerate(rows):
        x = 0
        for c, tile in enumerate(row):
            canvas.paste(tile.convert("RGB"), (x, y))
            x += widths[c] + gap
        y += heights[r] + gap
    return canvas
