"""open_rgb: every Pillow mode becomes honest 8-bit RGB; unusable files are rejected with a reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import make_image
from PIL import Image

from poc.data.images import IMAGE_EXTENSIONS, ImageRejected, load_array, open_rgb

WHITE = (255, 255, 255)


def assert_close(actual, expected, tol=2):
    assert all(abs(a - e) <= tol for a, e in zip(actual, expected)), f"{actual} != {expected}"


def test_image_extensions_cover_common_formats():
    assert {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"} <= IMAGE_EXTENSIONS


def test_rgb_png_is_returned_unchanged(tmp_path):
    path = make_image(tmp_path / "a.png", "RGB", (16, 12), (10, 20, 30))
    img = open_rgb(path)
    assert img.mode == "RGB" and img.size == (16, 12)
    assert img.getpixel((5, 5)) == (10, 20, 30)


def test_rgba_transparent_pixel_becomes_white(tmp_path):
    img = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    img.putpixel((3, 3), (200, 0, 0, 255))
    img.save(tmp_path / "a.png")
    out = open_rgb(tmp_path / "a.png")
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == WHITE
    assert out.getpixel((3, 3)) == (200, 0, 0)


def test_rgba_half_transparent_black_blends_to_mid_gray(tmp_path):
    path = make_image(tmp_path / "a.png", "RGBA", (16, 16), (0, 0, 0, 128))
    assert_close(open_rgb(path).getpixel((0, 0)), (127, 127, 127))


def test_la_transparent_becomes_white_and_opaque_keeps_gray(tmp_path):
    img = Image.new("LA", (16, 16), (0, 0))
    img.putpixel((1, 1), (60, 255))
    img.save(tmp_path / "a.png")
    out = open_rgb(tmp_path / "a.png")
    assert out.getpixel((0, 0)) == WHITE
    assert out.getpixel((1, 1)) == (60, 60, 60)


def test_palette_with_transparent_index_becomes_white(tmp_path):
    img = Image.new("P", (16, 16), 0)
    img.putpalette([0, 0, 0, 0, 0, 255] + [0] * (254 * 3))  # index 0 black, index 1 blue
    img.putpixel((2, 2), 1)
    img.save(tmp_path / "a.png", transparency=0)
    out = open_rgb(tmp_path / "a.png")
    assert out.getpixel((0, 0)) == WHITE
    assert out.getpixel((2, 2)) == (0, 0, 255)


def test_palette_without_transparency_keeps_colours(tmp_path):
    img = Image.new("P", (16, 16), 1)
    img.putpalette([0, 0, 0, 0, 200, 0] + [0] * (254 * 3))
    img.save(tmp_path / "a.bmp")
    assert open_rgb(tmp_path / "a.bmp").getpixel((0, 0)) == (0, 200, 0)


def test_grayscale_l_becomes_equal_rgb_channels(tmp_path):
    path = make_image(tmp_path / "a.png", "L", (16, 16), 100)
    assert open_rgb(path).getpixel((0, 0)) == (100, 100, 100)


@pytest.mark.parametrize("bit, expected", [(0, (0, 0, 0)), (1, WHITE)])
def test_bilevel_mode_1_becomes_black_or_white(tmp_path, bit, expected):
    path = make_image(tmp_path / "a.png", "1", (16, 16), bit)
    assert open_rgb(path).getpixel((0, 0)) == expected


def test_cmyk_pure_magenta_yellow_becomes_red(tmp_path):
    path = make_image(tmp_path / "a.tif", "CMYK", (16, 16), (0, 255, 255, 0))
    assert open_rgb(path).getpixel((0, 0)) == (255, 0, 0)


def test_16bit_mid_gray_stays_mid_gray_not_white(tmp_path):
    path = make_image(tmp_path / "a.png", "I;16", (16, 16), 32768)
    assert Image.open(path).mode.startswith("I")  # the file really holds 16-bit samples
    assert_close(open_rgb(path).getpixel((0, 0)), (128, 128, 128), tol=1)


def test_16bit_full_range_maps_to_full_8bit_range(tmp_path):
    img = Image.new("I;16", (16, 16), 0)
    img.putpixel((1, 1), 65535)
    img.save(tmp_path / "a.png")
    out = open_rgb(tmp_path / "a.png")
    assert out.getpixel((0, 0)) == (0, 0, 0)
    assert out.getpixel((1, 1)) == WHITE


def test_float_image_in_unit_range_scales_to_8bit(tmp_path):
    path = make_image(tmp_path / "a.tif", "F", (16, 16), 0.5)
    assert_close(open_rgb(path).getpixel((0, 0)), (128, 128, 128), tol=1)


def _jpeg_with_orientation(path, orientation):
    """A 40x20 JPEG, gray with a red 10x10 block in the stored top-left corner."""
    img = Image.new("RGB", (40, 20), (128, 128, 128))
    img.paste((255, 0, 0), (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, quality=95, exif=exif.tobytes())
    return path


def _is_red(pixel):
    return pixel[0] > 200 and pixel[1] < 60 and pixel[2] < 60


def test_exif_orientation_6_rotates_clockwise(tmp_path):
    out = open_rgb(_jpeg_with_orientation(tmp_path / "a.jpg", 6))
    assert out.size == (20, 40)
    assert _is_red(out.getpixel((15, 4)))  # stored top-left ends up top-right
    assert not _is_red(out.getpixel((4, 4)))


def test_exif_orientation_8_rotates_counter_clockwise(tmp_path):
    out = open_rgb(_jpeg_with_orientation(tmp_path / "a.jpg", 8))
    assert out.size == (20, 40)
    assert _is_red(out.getpixel((4, 35)))  # stored top-left ends up bottom-left
    assert not _is_red(out.getpixel((4, 4)))


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert open_rgb(tmp_path / "a.gif").getpixel((0, 0)) == (255, 0, 0)


def test_bytes_and_stream_sources_are_accepted(tmp_path):
    path = make_image(tmp_path / "a.png", "RGB", (16, 16), (1, 2, 3))
    data = path.read_bytes()
    assert open_rgb(data).getpixel((0, 0)) == (1, 2, 3)
    assert open_rgb(io.BytesIO(data)).getpixel((0, 0)) == (1, 2, 3)


def test_empty_file_is_rejected(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    with pytest.raises(ImageRejected) as info:
        open_rgb(tmp_path / "a.jpg")
    assert info.value.reason == "empty file"


def test_text_file_with_image_extension_is_rejected(tmp_path):
    (tmp_path / "a.jpg").write_text("not really a picture")
    with pytest.raises(ImageRejected) as info:
        open_rgb(tmp_path / "a.jpg")
    assert info.value.reason == "not an image file"


@pytest.mark.parametrize("verify", [True, False])
@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_file_is_rejected(tmp_path, suffix, verify):
    """Also without Pillow's structural checks (the pipeline's files were verified by the scan): the full
    decode still fails on a file cut since."""
    noisy = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noisy).save(tmp_path / f"full{suffix}")
    data = (tmp_path / f"full{suffix}").read_bytes()
    (tmp_path / f"cut{suffix}").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageRejected) as info:
        open_rgb(tmp_path / f"cut{suffix}", verify=verify)
    assert info.value.reason.startswith("truncated or corrupt image")
    unverified = np.asarray(open_rgb(tmp_path / f"full{suffix}", verify=False))
    np.testing.assert_array_equal(unverified, np.asarray(open_rgb(tmp_path / f"full{suffix}")))


def test_tiny_image_is_rejected_as_too_small(tmp_path):
    path = make_image(tmp_path / "a.png", "RGB", (2, 2))
    with pytest.raises(ImageRejected) as info:
        open_rgb(path)
    assert info.value.reason == "image too small (2x2 px)"


def test_image_over_pixel_limit_is_rejected_as_too_large(tmp_path):
    path = make_image(tmp_path / "a.png", "RGB", (20, 20))
    with pytest.raises(ImageRejected) as info:
        open_rgb(path, max_pixels=100)
    assert info.value.reason.startswith("too large")


def test_load_array_resizes_without_cropping(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (20, 0, 40, 20))  # right half blue
    img.save(tmp_path / "a.png")
    pixels = load_array(tmp_path / "a.png", 10)
    assert pixels.shape == (10, 10, 3) and pixels.dtype == np.uint8
    assert tuple(pixels[5, 0]) == (255, 0, 0)
    assert tuple(pixels[5, 9]) == (0, 0, 255)
