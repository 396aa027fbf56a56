"""A procedurally drawn cartoon dataset with the reference study's ten classes, for offline demos and tests.

The reference study used a downloaded image set; these machines cannot download one, and tests need a
dataset in seconds. Each class is a drawn figure (a panda is a white head with black ears and eye
patches) with random pose, scale, colours, background and noise, so a classifier has to learn shapes and
can be wrong: cat, dog and tiger share one face layout, panda and penguin share black-and-white.
The files also carry the traps real folders have: ~20% RGBA PNGs with transparent backgrounds (black
underneath), a PNG/JPEG mix, non-square sizes. Everything derives from one seed: same seed, same bytes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from poc.errors import UserError

CLASS_NAMES = ("bird", "car", "cat", "dog", "flower", "panda", "penguin", "plane", "tiger", "tree")
RGBA_SHARE = 0.2
_SUPERSAMPLE = 2  # figures are drawn at 2x and reduced, for anti-aliased edges
_GENERATED = re.compile(r"^(?P<cls>[a-z]+)_\d{4}\.(png|jpg)$")

Rgb = tuple[int, int, int]
BLACK: Rgb = (20, 20, 20)
WHITE: Rgb = (245, 245, 245)
ORANGE: Rgb = (240, 140, 30)


class _Pen:
    """ImageDraw in unit coordinates: (0, 0) top-left, (1, 1) bottom-right of the figure box."""

    def __init__(self, draw: ImageDraw.ImageDraw, side: int):
        self.draw, self.side = draw, side

    def _xy(self, points):
        return [(x * self.side, y * self.side) for x, y in points]

    def ellipse(self, cx, cy, rx, ry, fill):
        box = [(cx - rx) * self.side, (cy - ry) * self.side, (cx + rx) * self.side, (cy + ry) * self.side]
        self.draw.ellipse(box, fill=fill)

    def circle(self, cx, cy, r, fill):
        self.ellipse(cx, cy, r, r, fill)

    def polygon(self, points, fill):
        self.draw.polygon(self._xy(points), fill=fill)

    def rect(self, x0, y0, x1, y1, fill):
        self.draw.rectangle(self._xy([(x0, y0), (x1, y1)]), fill=fill)

    def line(self, points, fill, width):
        self.draw.line(self._xy(points), fill=fill, width=max(1, round(width * self.side)))


def _jitter(rng: np.random.Generator, rgb: Rgb, amount: int = 25) -> Rgb:
    """A colour near `rgb`: per-channel offset plus a common brightness factor."""
    factor = rng.uniform(0.85, 1.15)
    offset = rng.integers(-amount, amount + 1, size=3)
    return tuple(int(np.clip(c * factor + o, 0, 255)) for c, o in zip(rgb, offset))


def _pick(rng: np.random.Generator, colours: list[Rgb]) -> Rgb:
    return _jitter(rng, colours[int(rng.integers(len(colours)))])


# --- figures -------------------------------------------------------------------------------------


def _draw_bird(pen: _Pen, rng: np.random.Generator) -> None:
    body = _pick(rng, [(60, 110, 220), (210, 40, 40), (240, 210, 40), (90, 170, 80), (140, 90, 60)])
    wing = tuple(int(c * 0.6) for c in body)
    pen.polygon([(0.24, 0.52), (0.05, 0.40), (0.08, 0.66)], body)  # tail
    pen.line([(0.42, 0.68), (0.40, 0.84)], ORANGE, 0.02)  # legs
    pen.line([(0.52, 0.68), (0.54, 0.84)], ORANGE, 0.02)
    pen.ellipse(0.45, 0.55, 0.25, 0.16, body)
    pen.circle(0.68, 0.40, 0.12, body)
    pen.polygon([(0.78, 0.36), (0.95, 0.41), (0.78, 0.46)], _jitter(rng, ORANGE))  # beak
    pen.circle(0.71, 0.37, 0.025, BLACK)
    pen.polygon([(0.32, 0.52), (0.55, 0.48), (0.42, 0.30 + rng.uniform(0, 0.15))], wing)


def _draw_car(pen: _Pen, rng: np.random.Generator) -> None:
    paint = _pick(rng, [(200, 30, 30), (30, 80, 200), (240, 200, 30), (40, 40, 40), (230, 230, 230)])
    glass = _jitter(rng, (150, 200, 235), 15)
    roof = rng.uniform(0.22, 0.32)
    pen.polygon([(0.25, 0.46), (0.35, roof), (0.66, roof), (0.77, 0.46)], paint)  # cabin
    pen.rect(0.08, 0.45, 0.92, 0.70, paint)
    pen.polygon([(0.30, 0.45), (0.37, roof + 0.04), (0.49, roof + 0.04), (0.49, 0.45)], glass)
    pen.polygon([(0.53, 0.45), (0.53, roof + 0.04), (0.64, roof + 0.04), (0.72, 0.45)], glass)
    pen.rect(0.86, 0.50, 0.92, 0.56, (250, 230, 120))  # headlight
    for x in (0.27, 0.73):
        pen.circle(x, 0.71, 0.11, BLACK)
        pen.circle(x, 0.71, 0.045, (170, 170, 170))


def _face(pen: _Pen, rng: np.random.Generator, fur: Rgb, radius: float = 0.30) -> None:
    """The head and eyes shared by cat, dog and tiger: what makes them confusable."""
    pen.circle(0.5, 0.55, radius, fur)
    eye = _pick(rng, [(90, 180, 60), (220, 190, 40), (120, 80, 40)])
    for x in (0.39, 0.61):
        pen.ellipse(x, 0.48, 0.05, 0.045, eye)
        pen.ellipse(x, 0.48, 0.018, 0.04, BLACK)


def _whiskers(pen: _Pen, colour: Rgb) -> None:
    for dy in (-0.03, 0.0, 0.03):
        pen.line([(0.42, 0.64), (0.16, 0.62 + 2 * dy)], colour, 0.008)
        pen.line([(0.58, 0.64), (0.84, 0.62 + 2 * dy)], colour, 0.008)


def _draw_cat(pen: _Pen, rng: np.random.Generator) -> None:
    fur = _pick(rng, [(130, 130, 135), (235, 150, 60), (40, 40, 40), (235, 230, 220), (150, 100, 60)])
    tip = rng.uniform(0.08, 0.16)
    pen.polygon([(0.24, 0.45), (0.26, tip), (0.46, 0.30)], fur)  # pointy ears
    pen.polygon([(0.76, 0.45), (0.74, tip), (0.54, 0.30)], fur)
    _face(pen, rng, fur)
    pen.polygon([(0.46, 0.58), (0.54, 0.58), (0.50, 0.63)], (235, 130, 150))  # nose
    _whiskers(pen, WHITE if sum(fur) < 300 else BLACK)


def _draw_dog(pen: _Pen, rng: np.random.Generator) -> None:
    fur = _pick(rng, [(150, 100, 55), (210, 170, 110), (60, 45, 35), (235, 230, 220), (190, 120, 50)])
    ear = tuple(int(c * 0.6) for c in fur)
    _face(pen, rng, fur, radius=rng.uniform(0.26, 0.30))
    droop = rng.uniform(0.0, 0.12)
    pen.ellipse(0.22, 0.52 + droop, 0.08, 0.20, ear)  # floppy ears hang beside the head
    pen.ellipse(0.78, 0.52 + droop, 0.08, 0.20, ear)
    pen.ellipse(0.5, 0.67, 0.14, 0.10, _jitter(rng, (230, 210, 180)))  # snout
    pen.ellipse(0.5, 0.62, 0.05, 0.035, BLACK)
    if rng.random() < 0.5:
        pen.ellipse(0.5, 0.78, 0.04, 0.05, (220, 80, 100))  # tongue


def _draw_tiger(pen: _Pen, rng: np.random.Generator) -> None:
    fur = _jitter(rng, ORANGE, 30)
    for x in (0.28, 0.72):  # round ears with white insides
        pen.circle(x, 0.28, 0.09, fur)
        pen.circle(x, 0.28, 0.045, WHITE)
    _face(pen, rng, fur, radius=0.32)
    for i in range(int(rng.integers(3, 6))):  # forehead and cheek stripes
        x = 0.40 + 0.05 * i
        pen.polygon([(x, 0.24), (x + 0.03, 0.24), (x + 0.015, 0.38)], BLACK)
    for side in (-1, 1):
        for dy in (0.0, 0.07):
            edge, inner = 0.5 + side * 0.32, 0.5 + side * 0.18
            pen.polygon([(edge, 0.52 + dy), (edge, 0.56 + dy), (inner, 0.56 + dy)], BLACK)
    pen.ellipse(0.5, 0.68, 0.14, 0.09, WHITE)  # muzzle
    pen.polygon([(0.45, 0.60), (0.55, 0.60), (0.50, 0.65)], BLACK)
    _whiskers(pen, BLACK)


def _draw_panda(pen: _Pen, rng: np.random.Generator) -> None:
    for x in (0.27, 0.73):
        pen.circle(x, 0.28, 0.10, BLACK)
    pen.circle(0.5, 0.55, 0.31, _jitter(rng, WHITE, 10))
    tilt = rng.uniform(0.0, 0.04)
    for side in (-1, 1):  # eye patches, tilted outward
        x = 0.5 + side * 0.12
        pen.polygon(
            [(x - 0.07, 0.44 - side * tilt), (x + 0.07, 0.44 + side * tilt),
             (x + 0.06, 0.58), (x - 0.06, 0.58)],
            BLACK,
        )
        pen.circle(x, 0.50, 0.025, WHITE)
    pen.ellipse(0.5, 0.64, 0.05, 0.035, BLACK)


def _draw_penguin(pen: _Pen, rng: np.random.Generator) -> None:
    feet = _jitter(rng, ORANGE)
    for x in (0.40, 0.60):
        pen.ellipse(x, 0.90, 0.08, 0.04, feet)
    pen.ellipse(0.26, 0.60, 0.06, 0.18, BLACK)  # flippers
    pen.ellipse(0.74, 0.60, 0.06, 0.18, BLACK)
    pen.ellipse(0.5, 0.55, 0.22, rng.uniform(0.32, 0.37), _jitter(rng, BLACK, 15))
    pen.ellipse(0.5, 0.62, 0.15, 0.25, _jitter(rng, WHITE, 10))  # belly
    for x in (0.43, 0.57):
        pen.circle(x, 0.30, 0.035, WHITE)
        pen.circle(x, 0.30, 0.015, BLACK)
    pen.polygon([(0.46, 0.36), (0.54, 0.36), (0.50, 0.42)], feet)


def _draw_flower(pen: _Pen, rng: np.random.Generator) -> None:
    petal = _pick(rng, [(230, 90, 150), (220, 40, 50), (245, 215, 50), (150, 80, 200), (245, 245, 245)])
    green = _jitter(rng, (50, 150, 60))
    pen.line([(0.5, 0.45), (0.5 + rng.uniform(-0.05, 0.05), 0.97)], green, 0.04)
    pen.ellipse(0.60, 0.75, 0.10, 0.04, green)
    count, turn = int(rng.integers(5, 9)), rng.uniform(0, math.pi)
    for k in range(count):
        angle = turn + 2 * math.pi * k / count
        pen.circle(0.5 + 0.17 * math.cos(angle), 0.38 + 0.17 * math.sin(angle), 0.10, petal)
    pen.circle(0.5, 0.38, 0.09, _pick(rng, [(250, 200, 40), (110, 70, 30)]))


def _draw_plane(pen: _Pen, rng: np.random.Generator) -> None:
    body = _pick(rng, [(235, 235, 240), (170, 175, 185), (40, 90, 170), (200, 50, 50)])
    wing = tuple(int(c * 0.8) for c in body)
    sweep = rng.uniform(0.05, 0.15)
    pen.polygon([(0.45, 0.50), (0.60, 0.50), (0.42 - sweep, 0.12), (0.35 - sweep, 0.12)], wing)
    pen.polygon([(0.45, 0.50), (0.60, 0.50), (0.42 - sweep, 0.88), (0.35 - sweep, 0.88)], wing)
    pen.polygon([(0.10, 0.48), (0.22, 0.48), (0.10, 0.28), (0.04, 0.28)], wing)  # tail fin
    pen.ellipse(0.5, 0.50, 0.42, 0.065, body)  # fuselage
    for k in range(6):
        pen.circle(0.58 + 0.045 * k, 0.49, 0.012, (60, 90, 140))
    pen.ellipse(0.86, 0.49, 0.035, 0.025, (60, 90, 140))  # cockpit


def _draw_tree(pen: _Pen, rng: np.random.Generator) -> None:
    pen.rect(0.45, 0.55, 0.55, 0.96, _jitter(rng, (110, 70, 35)))
    leaves = _pick(rng, [(50, 140, 50), (30, 100, 40), (110, 170, 50), (220, 140, 40)])
    if rng.random() < 0.35:  # conifer: stacked triangles
        for k in range(3):
            top = 0.10 + 0.15 * k
            spread = 0.32 - 0.04 * k
            pen.polygon([(0.5, top), (0.5 - spread, top + 0.32), (0.5 + spread, top + 0.32)], leaves)
        return
    for _ in range(int(rng.integers(4, 7))):  # deciduous: cluster of blobs
        cx, cy = 0.5 + rng.uniform(-0.16, 0.16), 0.36 + rng.uniform(-0.12, 0.10)
        pen.circle(cx, cy, rng.uniform(0.14, 0.22), _jitter(rng, leaves, 12))


_DRAWERS: dict[str, Callable[[_Pen, np.random.Generator], None]] = {
    "bird": _draw_bird, "car": _draw_car, "cat": _draw_cat, "dog": _draw_dog, "flower": _draw_flower,
    "panda": _draw_panda, "penguin": _draw_penguin, "plane": _draw_plane, "tiger": _draw_tiger,
    "tree": _draw_tree,
}


# --- composition ---------------------------------------------------------------------------------


def _figure(name: str, side: int, rng: np.random.Generator) -> Image.Image:
    """The class figure on a transparent `side` x `side` canvas, randomly rotated and mirrored."""
    big = side * _SUPERSAMPLE
    canvas = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    _DRAWERS[name](_Pen(ImageDraw.Draw(canvas), big), rng)
    canvas = canvas.resize((side, side), Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        canvas = canvas.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return canvas.rotate(float(rng.uniform(-25, 25)), resample=Image.Resampling.BICUBIC)


def _background(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """Plain colour, linear gradient, or either with clutter shapes; RGBA, opaque."""
    kind = rng.choice(["plain", "gradient", "clutter"])
    first = tuple(int(c) for c in rng.integers(0, 256, size=3))
    if kind == "gradient" or (kind == "clutter" and rng.random() < 0.5):
        second = rng.integers(0, 256, size=3)
        ramp = np.linspace(0.0, 1.0, height if rng.random() < 0.5 else width, dtype=np.float32)
        grid = ramp[:, None] if len(ramp) == height else ramp[None, :]
        pixels = np.asarray(first, np.float32) * (1 - grid[..., None]) + second * grid[..., None]
        pixels = np.broadcast_to(pixels, (height, width, 3)).astype(np.uint8)  # (H, W, 3)
        image = Image.fromarray(pixels).convert("RGBA")
    else:
        image = Image.new("RGBA", (width, height), first + (255,))
    if kind == "clutter":
        _clutter(image, int(rng.integers(3, 9)), rng)
    return image


def _clutter(image: Image.Image, count: int, rng: np.random.Generator) -> None:
    draw = ImageDraw.Draw(image)
    width, height = image.size
    for _ in range(count):
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        x1, y1 = x0 + rng.uniform(4, width * 0.35), y0 + rng.uniform(4, height * 0.35)
        shape = rng.integers(3)
        if shape == 0:
            draw.ellipse([x0, y0, x1, y1], fill=colour)
        elif shape == 1:
            draw.rectangle([x0, y0, x1, y1], fill=colour)
        else:
            draw.line([x0, y0, x1, y1], fill=colour, width=int(rng.integers(1, 4)))


def _add_noise(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32)  # (H, W, 4)
    sigma = rng.uniform(2.0, 12.0)
    noise = rng.standard_normal(pixels.shape[:2] + (3,), dtype=np.float32) * sigma
    pixels[..., :3] += noise
    pixels[..., :3][pixels[..., 3] == 0] = 0  # transparent stays black underneath: a real-world trap
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def render_image(name: str, size: int, rng: np.random.Generator, transparent: bool) -> Image.Image:
    """One RGBA image of class `name`, each side uniform in [0.75, 1.25] x `size`."""
    width, height = (int(rng.integers(round(0.75 * size), round(1.25 * size) + 1)) for _ in range(2))
    side = max(8, int(rng.uniform(0.55, 0.95) * min(width, height)))
    figure = _figure(name, side, rng)
    if transparent:
        image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    else:
        image = _background(width, height, rng)
    corner = (int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1)))
    image.alpha_composite(figure, corner)
    if not transparent and rng.random() < 0.25:
        _clutter(image, 1, rng)  # an occluder in front of the figure now and then
    return _add_noise(image, rng)


# --- dataset -------------------------------------------------------------------------------------


def generate_demo_dataset(
    out: Path,
    per_class: int = 100,
    size: int = 128,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write `out/<class>/<class>_<i:04d>.(png|jpg)` for the ten classes; same seed, same bytes.

    Exactly round(20%) of each class are RGBA PNGs with transparent backgrounds; the rest are opaque,
    about half PNG and half JPEG. Files this function wrote earlier under `out` are replaced, so a
    re-run with a smaller `per_class` leaves no stale images. Returns {"root", "classes", "images",
    "rgba"} with `root` as a string.
    """
    out = _check_args(Path(out), per_class, size)
    total, done, rgba = per_class * len(CLASS_NAMES), 0, 0
    for class_index, name in enumerate(CLASS_NAMES):
        folder = out / name
        _clear_generated(folder)
        folder.mkdir(parents=True, exist_ok=True)
        transparent = _transparent_indices(per_class, np.random.default_rng([seed, class_index]))
        for i in range(per_class):
            rng = np.random.default_rng([seed, class_index, i])
            image = render_image(name, size, rng, i in transparent)
            _save(image, folder / f"{name}_{i:04d}", i in transparent, rng)
            done += 1
            if progress is not None:
                progress(done, total)
        rgba += len(transparent)
    return {"root": str(out), "classes": list(CLASS_NAMES), "images": total, "rgba": rgba}


def _check_args(out: Path, per_class: int, size: int) -> Path:
    if per_class < 1:
        raise UserError(
            f"--per-class must be at least 1 (got {per_class}); 3 or more make a usable dataset"
        )
    if size < 16:
        raise UserError(f"--size must be at least 16 px (got {size})")
    if out.exists() and not out.is_dir():
        raise UserError(f"output path {out} exists and is not a folder; choose another OUT")
    return out


def _transparent_indices(per_class: int, rng: np.random.Generator) -> set[int]:
    count = int(math.floor(per_class * RGBA_SHARE + 0.5))
    return {int(i) for i in rng.permutation(per_class)[:count]}


def _clear_generated(folder: Path) -> None:
    """Remove files an earlier run wrote here (by name pattern); anything else is left alone."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        match = _GENERATED.match(path.name)
        if path.is_file() and match and match["cls"] == folder.name:
            path.unlink()


def _save(image: Image.Image, stem: Path, transparent: bool, rng: np.random.Generator) -> None:
    if transparent:
        image.save(stem.with_suffix(".png"), format="PNG", compress_level=6)
    elif rng.random() < 0.5:
        image.convert("RGB").save(stem.with_suffix(".png"), format="PNG", compress_level=6)
    else:
        quality = int(rng.integers(70, 96))
        image.convert("RGB").save(
            stem.with_suffix(".jpg"), format="JPEG", quality=quality, subsampling=2, optimize=False
        )
