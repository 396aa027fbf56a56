"""ui/overlay.py: heatmaps upsampled onto images, blended at an opacity; thumbnails."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ui.overlay import colorize, heatmap_image, normalise, overlay, thumbnail, tile_grid, upsample


def _image(size=(48, 32)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def test_overlay_has_the_image_size_not_the_heatmap_size():
    out = overlay(_image((48, 32)), np.random.default_rng(1).random((4, 4)), opacity=0.5)
    assert out.size == (48, 32)
    assert out.mode == "RGB"


def test_opacity_zero_returns_the_original_pixels():
    image = _image()
    out = overlay(image, np.ones((7, 7)), opacity=0.0)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(image))


def test_opacity_one_replaces_the_image_with_the_colormap():
    image = _image()
    heat = np.random.default_rng(2).random((4, 4))
    out = np.asarray(overlay(image, heat, opacity=1.0))
    assert not np.array_equal(out, np.asarray(image))
    np.testing.assert_array_equal(out, np.asarray(heatmap_image(heat, image.size)))


def test_opacity_outside_unit_interval_is_rejected():
    with pytest.raises(ValueError, match="opacity"):
        overlay(_image(), np.ones((2, 2)), opacity=1.5)


@pytest.mark.parametrize("row, col", [(0, 0), (1, 2), (3, 3), (2, 0)])
def test_heatmap_peak_lands_in_its_cell_after_upsampling(row, col):
    heat = np.zeros((4, 4), np.float32)
    heat[row, col] = 1.0
    big = upsample(heat, (64, 128))  # (width, height): cells are 16 wide, 32 tall
    assert big.shape == (128, 64)
    peak_y, peak_x = np.unravel_index(np.argmax(big), big.shape)
    assert row * 32 <= peak_y < (row + 1) * 32
    assert col * 16 <= peak_x < (col + 1) * 16


def test_peak_is_the_hottest_colour_in_the_overlay():
    heat = np.zeros((4, 4), np.float32)
    heat[2, 1] = 1.0
    grey = Image.new("RGB", (40, 40), (128, 128, 128))
    out = np.asarray(overlay(grey, heat, opacity=0.8, cmap="gray")).astype(int)  # gray cmap: brightness = heat
    peak_y, peak_x = np.unravel_index(np.argmax(out[..., 0]), out.shape[:2])
    assert 20 <= peak_y < 30 and 10 <= peak_x < 20


def test_colorize_gives_uint8_rgb_and_maps_low_and_high_to_the_colormap_ends():
    colours = colorize(np.array([[0.0, 1.0]]), cmap="gray")
    assert colours.dtype == np.uint8 and colours.shape == (1, 2, 3)
    np.testing.assert_array_equal(colours[0, 0], [0, 0, 0])
    np.testing.assert_array_equal(colours[0, 1], [255, 255, 255])


def test_non_2d_heatmap_is_rejected_with_its_shape():
    with pytest.raises(ValueError, match=r"\(2, 3, 4\)"):
        upsample(np.zeros((2, 3, 4)), (8, 8))


def test_normalise_scales_to_unit_range_and_flattens_constant_maps():
    np.testing.assert_allclose(normalise(np.array([[2.0, 4.0], [3.0, 6.0]])), [[0, 0.5], [0.25, 1]])
    np.testing.assert_array_equal(normalise(np.full((3, 3), 0.7)), np.zeros((3, 3)))


def test_thumbnail_scales_the_longer_side_and_keeps_aspect():
    assert thumbnail(_image((400, 200)), side=100).size == (100, 50)
    assert thumbnail(_image((20, 40)), side=80).size == (40, 80)  # small images are enlarged
    assert thumbnail(Image.new("RGBA", (30, 30)), side=60).mode == "RGB"


def test_tile_grid_lays_tiles_out_with_gaps():
    red, blue = Image.new("RGB", (10, 6), (255, 0, 0)), Image.new("RGB", (4, 8), (0, 0, 255))
    grid = tile_grid([[red, blue], [blue]], gap=2)
    assert grid.size == (10 + 2 + 4, 8 + 2 + 8)
    pixels = np.asarray(grid)
    np.testing.assert_array_equal(pixels[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(pixels[0, 12], [0, 0, 255])
    np.testing.assert_array_equal(pixels[10, 0], [0, 0, 255])
    np.testing.assert_array_equal(pixels[0, 10], [255, 255, 255])  # the gap
