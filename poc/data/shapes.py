"""A procedurally drawn shapes-and-textures task for pretraining the demo backbones (`python -m poc pretrain`).

These machines cannot download ImageNet weights, and a frozen random backbone gives near-constant features,
so the demo backbones are pretrained here on a SEPARATE task and then transferred to the cartoon classes of
`poc.data.demo`. None of these classes is a cartoon class: they are geometric primitives (circle, star,
arrow ...), strokes (spiral, zigzag, letters) and full-frame textures (stripes, checkerboard, waves ...),
each with random colours, scale, position, rotation, background and noise. What a backbone learns from
them (edges, corners, curvature, contrast, periodic texture) is generic; what the cartoon classes need on
top of it is learned only in the transfer runs.

Everything derives from one seed: image i of `make_shapes(n, size, seed)` is drawn from
`np.random.default_rng([seed, i])` with label `i % len(SHAPE_CLASSES)`, so the same call gives the same
arrays and different seeds give disjoint samples (train seed 0, held-out seed 1).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

SHAPE_CLASSES = (
    # filled primitives
    "circle", "triangle", "square", "pentagon", "hexagon", "star", "cross", "crescent", "heart", "arrow",
    "semicircle", "hourglass",
    # outlines and strokes
    "ring", "bullseye", "spiral", "zigzag", "sunburst",
    # glyphs (small rotations only, never mirrored, so they stay distinct)
    "letter_a", "letter_e", "letter_k", "letter_s", "letter_z",
    # full-frame textures
    "stripes", "checkerboard", "dots", "waves", "grid", "speckle",
)
_SUPERSAMPLE = 2  # drawn at 2x and reduced with a box filter: anti-aliased edges
_MIN_CONTRAST = 150  # L1 distance between foreground and background colours (0..765)

Point = tuple[float, float]


# --- colours and backgrounds ---------------------------------------------------------------------


def _colour_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Foreground and background RGB (float32) far enough apart for the figure to be visible."""
    fg = rng.integers(0, 256, size=3)
    for _ in range(32):  # bounded: deterministic and always terminates
        bg = rng.integers(0, 256, size=3)
        if np.abs(fg - bg).sum() >= _MIN_CONTRAST:
            break
    else:
        bg = 255 - fg
    return fg.astype(np.float32), bg.astype(np.float32)


def _background(side: int, bg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(side, side, 3) float32: plain `bg`, or a linear gradient from `bg` towards a nearby colour."""
    image = np.broadcast_to(bg, (side, side, 3)).astype(np.float32)
    if rng.random() < 0.5:
        other = np.clip(bg + rng.integers(-70, 71, size=3), 0, 255)
        angle = rng.uniform(0, 2 * math.pi)
        u = _grid(side, angle, 0.0, 0.0)[0]  # (side, side) in about [-1.4, 1.4]
        t = np.clip((u + 1.4) / 2.8, 0, 1)[..., None]  # (side, side, 1)
        image = image * (1 - t) + other * t
    return image


# --- geometry --------------------------------------------------------------------------------------


def _grid(side: int, angle: float, cx: float, cy: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres as rotated coordinates (u, v), unit = half the image side, origin at (cx, cy)."""
    axis = (np.arange(side, dtype=np.float32) + 0.5) / side * 2 - 1  # (side,) in (-1, 1)
    y, x = np.meshgrid(axis, axis, indexing="ij")  # (side, side) each
    x, y = x - cx, y - cy
    c, s = math.cos(angle), math.sin(angle)
    return c * x + s * y, -s * x + c * y


class _Frame:
    """Local figure coordinates (unit radius, origin at the figure centre) -> supersampled canvas pixels."""

    def __init__(self, side: int, centre: Point, radius: float, angle: float):
        self.side, self.centre, self.radius = side, centre, radius
        self.cos, self.sin = math.cos(angle), math.sin(angle)

    def __call__(self, points) -> list[Point]:
        cx, cy = self.centre
        return [(cx + self.radius * (self.cos * u - self.sin * v), cy + self.radius * (self.sin * u + self.cos * v))
                for u, v in points]

    def px(self, length: float) -> int:
        return max(1, round(length * self.radius))


def _regular(n: int, radius: float = 1.0, phase: float = -math.pi / 2) -> list[Point]:
    return [(radius * math.cos(phase + 2 * math.pi * k / n), radius * math.sin(phase + 2 * math.pi * k / n))
            for k in range(n)]


def _disc(cx: float = 0.0, cy: float = 0.0, r: float = 1.0, n: int = 48) -> list[Point]:
    """A circle as a polygon, so it rotates and scales with the frame like every other figure."""
    return [(cx + x, cy + y) for x, y in _regular(n, r, 0.0)]


# --- figures: each draws white (255) into an 'L' mask through the frame ---------------------------


def _fill(draw, frame, points, value=255):
    draw.polygon(frame(points), fill=value)


def _stroke(draw, frame, points, width, value=255):
    draw.line(frame(points), fill=value, width=frame.px(width), joint="curve")


def _draw_figure(name: str, draw: ImageDraw.ImageDraw, frame: _Frame, rng: np.random.Generator) -> None:
    width = rng.uniform(0.12, 0.22)  # stroke width, local units
    if name == "circle":
        _fill(draw, frame, _disc())
    elif name == "triangle":
        _fill(draw, frame, _regular(3))
    elif name == "square":
        _fill(draw, frame, _regular(4, 1.0, math.pi / 4))
    elif name == "pentagon":
        _fill(draw, frame, _regular(5))
    elif name == "hexagon":
        _fill(draw, frame, _regular(6))
    elif name == "star":
        inner = rng.uniform(0.35, 0.5)
        outer, ring = _regular(5), _regular(5, inner, -math.pi / 2 + math.pi / 5)
        _fill(draw, frame, [p for pair in zip(outer, ring) for p in pair])
    elif name == "cross":
        arm = rng.uniform(0.22, 0.34)
        _fill(draw, frame, [(-1, -arm), (1, -arm), (1, arm), (-1, arm)])
        _fill(draw, frame, [(-arm, -1), (arm, -1), (arm, 1), (-arm, 1)])
    elif name == "crescent":
        _fill(draw, frame, _disc())
        _fill(draw, frame, _disc(rng.uniform(0.35, 0.6), 0.0, rng.uniform(0.75, 0.9)), 0)
    elif name == "heart":
        t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
        x = 16 * np.sin(t) ** 3 / 17
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)) / 17 + 0.1
        _fill(draw, frame, list(zip(x, y)))
    elif name == "arrow":
        shaft, head = rng.uniform(0.14, 0.24), rng.uniform(0.45, 0.65)
        _fill(draw, frame, [(-1, -shaft), (0.2, -shaft), (0.2, -head), (1, 0), (0.2, head), (0.2, shaft),
                            (-1, shaft)])
    elif name == "semicircle":
        _fill(draw, frame, [(math.cos(a), math.sin(a) + 0.4) for a in np.linspace(math.pi, 2 * math.pi, 33)])
    elif name == "hourglass":
        _fill(draw, frame, [(-0.75, -1), (0.75, -1), (0, 0)])
        _fill(draw, frame, [(-0.75, 1), (0.75, 1), (0, 0)])
    elif name == "ring":
        _fill(draw, frame, _disc())
        _fill(draw, frame, _disc(r=1 - 1.6 * width), 0)
    elif name == "bullseye":
        rings = int(rng.integers(3, 5))
        for k in range(2 * rings):
            _fill(draw, frame, _disc(r=1 - k / (2 * rings)), 255 if k % 2 == 0 else 0)
    elif name == "spiral":
        turns = rng.uniform(2.2, 3.2)
        a = np.linspace(0, 2 * math.pi * turns, 160)
        r = a / a[-1]
        _stroke(draw, frame, list(zip(r * np.cos(a), r * np.sin(a))), width * 0.7)
    elif name == "zigzag":
        teeth = int(rng.integers(3, 6))
        xs = np.linspace(-1, 1, 2 * teeth + 1)
        _stroke(draw, frame, [(x, 0.45 * (-1) ** k) for k, x in enumerate(xs)], width)
    elif name == "sunburst":
        rays = int(rng.integers(8, 15))
        for x, y in _regular(rays, 1.0, rng.uniform(0, math.pi)):
            _stroke(draw, frame, [(0.3 * x, 0.3 * y), (x, y)], width * 0.6)
        _fill(draw, frame, _disc(r=0.22))
    elif name.startswith("letter_"):
        for stroke in _GLYPHS[name[-1]]:
            _stroke(draw, frame, stroke, width)
    else:
        raise ValueError(f"{name!r} is not a figure class")


def _s_curve() -> list[Point]:
    top = [(0.45 * math.cos(a), -0.42 + 0.42 * math.sin(a)) for a in np.linspace(-0.2, -1.5 * math.pi, 24)]
    bottom = [(0.45 * math.cos(a), 0.42 + 0.42 * math.sin(a)) for a in np.linspace(-0.5 * math.pi, 0.8 * math.pi, 24)]
    return top + bottom


# Each glyph: a list of strokes (polylines in local coordinates, y down).
_GLYPHS: dict[str, list[list[Point]]] = {
    "a": [[(-0.6, 0.85), (0.0, -0.85), (0.6, 0.85)], [(-0.32, 0.15), (0.32, 0.15)]],
    "e": [[(0.5, -0.85), (-0.5, -0.85), (-0.5, 0.85), (0.5, 0.85)], [(-0.5, 0.0), (0.35, 0.0)]],
    "k": [[(-0.5, -0.85), (-0.5, 0.85)], [(0.5, -0.85), (-0.5, 0.15)], [(-0.15, -0.2), (0.55, 0.85)]],
    "s": [_s_curve()],
    "z": [[(-0.55, -0.85), (0.55, -0.85), (-0.55, 0.85), (0.55, 0.85)]],
}


# --- textures: a boolean pattern over the whole frame ---------------------------------------------


def _texture_mask(name: str, side: int, rng: np.random.Generator) -> np.ndarray:
    """(side, side) float32 in [0, 1]: the foreground share of each supersampled pixel."""
    u, v = _grid(side, rng.uniform(0, math.pi), rng.uniform(-1, 1), rng.uniform(-1, 1))
    period = rng.uniform(0.18, 0.45)  # in half-image units: 4 to 11 repeats across the image
    if name == "stripes":
        mask = np.sin(2 * math.pi * u / period) > 0
    elif name == "checkerboard":
        mask = (np.floor(u / period) + np.floor(v / period)) % 2 == 0
    elif name == "dots":
        du, dv = (u / period) % 1 - 0.5, (v / period) % 1 - 0.5
        mask = du * du + dv * dv < rng.uniform(0.18, 0.35) ** 2
    elif name == "waves":
        bend = rng.uniform(0.25, 0.5) * period
        mask = np.sin(2 * math.pi * (u + bend * np.sin(2 * math.pi * v / (2.5 * period))) / period) > 0
    elif name == "grid":
        line = rng.uniform(0.12, 0.22)
        mask = ((u / period) % 1 < line) | ((v / period) % 1 < line)
    elif name == "speckle":  # random blobs: coarse noise, upsampled, thresholded
        cells = int(rng.integers(5, 10))
        coarse = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
        smooth = np.asarray(coarse.resize((side, side), Image.Resampling.BICUBIC), dtype=np.float32)
        mask = smooth > np.median(smooth)
    else:
        raise ValueError(f"{name!r} is not a texture class")
    return mask.astype(np.float32)


_TEXTURES = {"stripes", "checkerboard", "dots", "waves", "grid", "speckle"}


# --- one image, a dataset --------------------------------------------------------------------------


def shape_image(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One RGB image of class SHAPE_CLASSES[label]: (size, size, 3) uint8."""
    name = SHAPE_CLASSES[label]
    side = size * _SUPERSAMPLE
    fg, bg = _colour_pair(rng)
    if name in _TEXTURES:
        mask = _texture_mask(name, side, rng)
        image = np.broadcast_to(bg, (side, side, 3)).astype(np.float32)
    else:
        radius = rng.uniform(0.22, 0.45) * side
        centre = (rng.uniform(radius, side - radius), rng.uniform(radius, side - radius))
        glyph = name.startswith("letter_")
        angle = rng.uniform(-0.5, 0.5) if glyph else rng.uniform(0, 2 * math.pi)
        canvas = Image.new("L", (side, side), 0)
        _draw_figure(name, ImageDraw.Draw(canvas), _Frame(side, centre, radius, angle), rng)
        mask = np.asarray(canvas, dtype=np.float32) / 255.0  # (side, side)
        image = _background(side, bg, rng)
    image = image * (1 - mask[..., None]) + fg * mask[..., None]  # (side, side, 3)
    small = image.reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE, 3).mean(axis=(1, 3))  # box filter
    small += rng.standard_normal(small.shape).astype(np.float32) * rng.uniform(0.0, 10.0)
    return np.clip(np.rint(small), 0, 255).astype(np.uint8)


def make_shapes(count: int, size: int = 64, seed: int = 0, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images `start` .. `start + count - 1` of the seed's endless sequence, classes balanced in turn:
    (images (N, S, S, 3) uint8, labels (N,) int32). `start` lets a training stream draw fresh images forever."""
    if count < 1:
        raise ValueError(f"count={count} must be at least 1")
    if size < 16:
        raise ValueError(f"size={size} must be at least 16 px")
    if start < 0:
        raise ValueError(f"start={start} must be at least 0")
    index = np.arange(start, start + count)
    labels = (index % len(SHAPE_CLASSES)).astype(np.int32)
    images = np.empty((count, size, size, 3), np.uint8)
    for k, i in enumerate(index):
        images[k] = shape_image(int(labels[k]), size, np.random.default_rng([seed, int(i)]))
    return images, labels
