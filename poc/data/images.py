"""Open any image a user may drop into a dataset folder as 8-bit RGB, or say why it cannot be used.

Every later stage (scan, tf.data, live predict, explanations) sees pixels through `open_rgb`, so one
place decides what an image *is*: EXIF orientation applied, transparency composited on white (a naive
``convert("RGB")`` turns transparent backgrounds black), 16-bit data scaled to 8 bits (a naive convert
clips it to all white), animated files reduced to their first frame. A full decode is forced so a
truncated file is rejected at scan time rather than crashing a training epoch.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
)
MIN_SIDE = 8  # px; smaller files are icons or tracking pixels, not training images
_WHITE = (255, 255, 255, 255)
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})

Source = str | Path | bytes | BinaryIO


class ImageRejected(Exception):
    """An input that cannot be used as an image; `.reason` is the human-readable why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def open_rgb(source: Source, max_pixels: int = 80_000_000, verify: bool = True) -> Image.Image:
    """Decode `source` fully and return it upright, in RGB mode, 8 bits per channel.

    Raises ImageRejected (with `.reason`) for empty, non-image, corrupt or truncated input, for images
    with more than `max_pixels` pixels, and for images with a side shorter than MIN_SIDE pixels.
    `verify=False` skips Pillow's structural checks (a second open of the file) for files a scan has verified;
    a truncated file still fails the full decode.
    """
    img = _decode(_as_openable(source), max_pixels, verify)
    try:
        rgb = to_rgb(_upright(img))
        return img.copy() if rgb is img else rgb  # the copy outlives closing the source file
    finally:
        img.close()  # animated / multi-page files keep their file open after load()


def load_array(source: Source, size: int, verify: bool = True) -> np.ndarray:
    """Pixels of `source` resized (no crop, aspect not kept) to a (size, size, 3) uint8 array."""
    return resize_pixels(open_rgb(source, verify=verify), size)


def resize_pixels(img: Image.Image, size: int) -> np.ndarray:
    """An RGB image as the model sees it: (size, size, 3) uint8, no crop, aspect not kept, bilinear.

    The one resize of the project: training's `load_array` and live prediction both call it, so a photo
    uploaded to the dashboard gets exactly the pixels the same file would get in an evaluation.
    """
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size!r}")
    img = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)  # Pillow's bilinear is area-aware
    return np.asarray(img, dtype=np.uint8)  # (size, size, 3)



def to_rgb(img: Image.Image) -> Image.Image:
    """Convert a decoded image of any Pillow mode to RGB (alpha on white, 16/32-bit scaled to 8)."""
    if img.mode in _SIXTEEN_BIT_MODES or img.mode in ("I", "F"):
        img = _to_8bit_gray(img)
    if _has_transparency(img):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE)
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode == "RGB":
        return img
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageRejected(f"unsupported colour mode {img.mode}: {exc}") from exc


def _as_openable(source: Source) -> Path | io.BytesIO:
    """A path (checked to exist and be non-empty) or an in-memory stream of the bytes."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ImageRejected(f"no such file: {path}")
        if path.stat().st_size == 0:
            raise ImageRejected("empty file")
        return path
    data = bytes(source) if isinstance(source, (bytes, bytearray, memoryview)) else source.read()
    if not data:
        raise ImageRejected("empty file")
    return io.BytesIO(data)


def _decode(openable: Path | io.BytesIO, max_pixels: int, verify: bool = True) -> Image.Image:
    """Open, check size limits, verify structure, then force the full pixel decode."""
    try:
        if verify:
            with Image.open(openable) as probe:
                _check_size(probe.size, max_pixels)
                probe.verify()  # structural checks (e.g. PNG CRCs); the image is unusable afterwards
            if isinstance(openable, io.BytesIO):
                openable.seek(0)
        img = Image.open(openable)
        if not verify:
            try:
                _check_size(img.size, max_pixels)
            except ImageRejected:
                img.close()
                raise
        img.load()  # frame 0 of an animation; raises on truncated data
    except ImageRejected:
        raise
    except UnidentifiedImageError:
        raise ImageRejected("not an image file") from None
    except Image.DecompressionBombError as exc:
        raise ImageRejected(f"too large ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - decoders raise many types for bad bytes
        raise ImageRejected(f"truncated or corrupt image: {exc}") from None
    return img


def _check_size(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ImageRejected(
            f"too large ({width}x{height} px = {width * height:,} pixels; limit {max_pixels:,})"
        )
    if min(width, height) < MIN_SIDE:
        raise ImageRejected(f"image too small ({width}x{height} px)")


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag; a broken EXIF block is ignored, not fatal."""
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - malformed EXIF must not reject a readable image
        return img
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        return ImageOps.exif_transpose(img)
    return img


def _has_transparency(img: Image.Image) -> bool:
    return img.mode in _ALPHA_MODES or "transparency" in img.info


def _to_8bit_gray(img: Image.Image) -> Image.Image:
    """Scale 16-bit / 32-bit integer / float grayscale to 8 bits by the type's range, not the data's.

    Scaling by the data's own maximum would turn a uniform mid-gray image white; clipping (Pillow's
    default) turns any 16-bit image white. Integer "I" images holding 16-bit data (the usual case, from
    16-bit PNG / TIFF) are divided by 257; float images in [0, 1] are multiplied by 255.
    """
    pixels = np.asarray(img, dtype=np.float64)
    peak = float(pixels.max()) if pixels.size else 0.0
    if img.mode in _SIXTEEN_BIT_MODES:
        scaled = pixels / 257.0
    elif img.mode == "F" and peak <= 1.0:
        scaled = pixels * 255.0
    elif peak <= 255.0:
        scaled = pixels
    elif peak <= 65535.0:
        scaled = pixels / 257.0
    else:
        scaled = pixels * (255.0 / peak)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))  # mode "L"
