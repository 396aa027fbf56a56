"""Grad-CAM (arXiv 1610.02391) on the classifier's nested backbone, checked against a hand-worked formula."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest

from poc.explain.maps import explain_images
from poc.explain.gradcam import gradcam_layer, gradcam_maps
from poc.models import MODELS, build
from poc.models.layers import Preprocess
from poc.runs import store

CLASSES = 4


def pixels(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def mobilenet():
    """MobileNetV2 at 128 px (a 4 x 4 last feature map) with random weights (fitting it costs a minute)."""
    keras.utils.set_random_seed(0)
    return build("mobilenet_v2", CLASSES, 128, "none")


def test_maps_have_the_last_feature_map_shape_and_lie_in_unit_range(mobilenet):
    spec = MODELS["mobilenet_v2"]
    h, w = mobilenet.get_layer("backbone").get_layer(spec.last_conv).output.shape[1:3]
    maps = gradcam_maps(mobilenet, spec.last_conv, pixels(5, 128, seed=2))
    assert (h, w) == (4, 4)
    assert maps.shape == (5, h, w) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    assert all(m.max() in (0.0, 1.0) for m in maps)  # each map scaled by its own peak
    assert any(m.std() > 0 for m in maps)  # not a constant map


def test_explain_images_uses_gradcam_for_cnns_batch_by_batch(mobilenet):
    images = pixels(5, 128, seed=2)
    maps, method, layer = explain_images(mobilenet, MODELS["mobilenet_v2"], images)
    assert method == "gradcam" and layer == "out_relu"  # 4 x 4 at 128 px: the last feature map is fine enough
    np.testing.assert_allclose(maps, gradcam_maps(mobilenet, "out_relu", images), atol=1e-6)


# ---------------------------------------------------------------- the layer at low resolution

@pytest.fixture(scope="module")
def mobilenet_64():
    """MobileNetV2 at 64 px, the demo's size: its last feature map (out_relu) is 2 x 2."""
    keras.utils.set_random_seed(0)
    return build("mobilenet_v2", CLASSES, 64, "none")


def last_block_output_with_grid(backbone: keras.Model, at_least: int) -> tuple[str, tuple[int, int]]:
    """Independently of poc.explain.gradcam: the last MobileNetV2 block output (`block_N_add`, or
    `block_N_project_BN` for a block without a residual) whose output shape, as built, is at least `at_least`
    cells a side; blocks ordered by N."""
    found = {}
    for layer in backbone.layers:
        match = re.fullmatch(r"block_(\d+)_(add|project_BN)", layer.name)
        if match:
            h, w = layer.output.shape[1:3]
            if min(h, w) >= at_least:
                block = int(match[1])
                if match[2] == "add" or block not in found:  # a residual block ends at its add
                    found[block] = (layer.name, (h, w))
    return found[max(found)]


def test_at_64_px_gradcam_reads_the_last_block_whose_native_grid_is_at_least_4x4(mobilenet_64):
    backbone = mobilenet_64.get_layer("backbone")
    spec = MODELS["mobilenet_v2"]
    assert tuple(backbone.get_layer(spec.last_conv).output.shape[1:3]) == (2, 2)  # too coarse to read
    expected, grid = last_block_output_with_grid(backbone, 4)
    assert gradcam_layer(backbone, spec) == expected == "block_12_add" and grid == (4, 4)
    images = pixels(3, 64, seed=5)
    maps, method, layer = explain_images(mobilenet_64, spec, images)
    assert (method, layer) == ("gradcam", expected)
    assert maps.shape == (3, *grid)  # the layer's native grid: nothing was upsampled
    np.testing.assert_allclose(maps, gradcam_maps(mobilenet_64, expected, images), atol=1e-6)


def test_a_feature_map_of_at_least_4x4_is_kept(mobilenet):
    assert gradcam_layer(mobilenet.get_layer("backbone"), MODELS["mobilenet_v2"]) == "out_relu"


def test_explanations_npz_records_the_layer_and_old_files_read_without_it(tmp_path):
    rd = store.RunDir(tmp_path / "run")
    maps = np.random.default_rng(0).random((3, 4, 4)).astype(np.float32)
    rd.write_explanations("ft", maps, "gradcam", "block_12_add")
    assert store.read_explanation_layer(rd, "ft") == "block_12_add"
    read_maps, method = store.read_explanations(rd, "ft")
    assert method == "gradcam" and read_maps.shape == (3, 4, 4)
    rd.write_explanations("tl", maps, "attention_rollout")
    assert store.read_explanation_layer(rd, "tl") is None
    np.savez(rd.eval_file("tl", "explanations"), maps=maps.astype(np.float16), rows=np.arange(3), method="gradcam")
    assert store.read_explanations(rd, "tl")[1] == "gradcam"  # a file written before the layer was recorded
    assert store.read_explanation_layer(rd, "tl") is None


def test_empty_input_gives_no_maps(mobilenet):
    assert gradcam_maps(mobilenet, "out_relu", np.zeros((0, 128, 128, 3), np.float32)).shape[0] == 0


# ---------------------------------------------------------------- a hand-worked tiny classifier

SIZE, KERNEL, FILTERS = 8, 3, 5  # feature map 6 x 6 x 5


def tiny_classifier(seed: int = 0) -> keras.Model:
    """The same outer structure as poc.models.build: pixels -> preprocess -> backbone -> dropout -> head."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3), name="images")
    fmap = keras.layers.Conv2D(FILTERS, KERNEL, activation="relu", name="last_conv")(inputs)  # (B, 6, 6, K)
    features = keras.layers.GlobalAveragePooling2D(name="pool")(fmap)  # (B, K)
    backbone = keras.Model(inputs, features, name="backbone")

    pixels_in = keras.Input((SIZE, SIZE, 3), name="pixels")
    x = backbone(Preprocess("unit", name="preprocess")(pixels_in))
    x = keras.layers.Dropout(0.2, name="dropout")(x)
    probs = keras.layers.Dense(3, activation="softmax", name="head")(x)
    model = keras.Model(pixels_in, probs)
    rng = np.random.default_rng(seed)
    model.get_layer("head").set_weights([rng.normal(0, 1, (FILTERS, 3)).astype(np.float32),
                                         rng.normal(0, 0.1, 3).astype(np.float32)])
    return model


def gradcam_by_hand(model: keras.Model, images: np.ndarray, classes: np.ndarray | None = None) -> np.ndarray:
    """Grad-CAM in numpy. The head is linear on average-pooled features, so d logit_c / d A_k(i, j) = W[k, c] / (h w)
    everywhere: alpha_k = W[k, c] / (h w) and the map is ReLU(sum_k alpha_k A_k), then divided by its peak."""
    kernel, bias = model.get_layer("backbone").get_layer("last_conv").get_weights()  # (3, 3, 3, K), (K,)
    head_w, head_b = model.get_layer("head").get_weights()  # (K, C), (C,)
    x = images / 255.0
    windows = np.lib.stride_tricks.sliding_window_view(x, (KERNEL, KERNEL), axis=(1, 2))  # (B, 6, 6, 3, kh, kw)
    fmap = np.maximum(np.einsum("bijcuv,uvck->bijk", windows, kernel) + bias, 0)  # (B, 6, 6, K)
    h, w = fmap.shape[1:3]
    logits = fmap.mean(axis=(1, 2)) @ head_w + head_b  # (B, C)
    classes = logits.argmax(axis=1) if classes is None else classes
    alpha = head_w[:, classes].T / (h * w)  # (B, K)
    cam = np.maximum(np.einsum("bijk,bk->bij", fmap, alpha), 0)  # (B, 6, 6)
    peak = cam.max(axis=(1, 2), keepdims=True)
    return np.where(peak > 0, cam / np.where(peak > 0, peak, 1), 0)


def test_gradcam_equals_the_hand_worked_formula_for_the_predicted_class():
    model = tiny_classifier()
    images = pixels(6, SIZE, seed=3)
    maps = gradcam_maps(model, "last_conv", images)
    assert maps.shape == (6, 6, 6)
    np.testing.assert_allclose(maps, gradcam_by_hand(model, images), atol=1e-5)


def test_gradcam_for_a_chosen_class_equals_the_formula():
    model = tiny_classifier(seed=1)
    images = pixels(6, SIZE, seed=4)
    classes = np.array([0, 1, 2, 2, 1, 0])
    np.testing.assert_allclose(gradcam_maps(model, "last_conv", images, class_index=classes),
                               gradcam_by_hand(model, images, classes), atol=1e-5)


def test_a_class_with_only_negative_evidence_gives_an_all_zero_map():
    model = tiny_classifier()
    kernel, bias = model.get_layer("head").get_weights()
    model.get_layer("head").set_weights([np.concatenate([-np.abs(kernel[:, :1]), kernel[:, 1:]], axis=1), bias])
    maps = gradcam_maps(model, "last_conv", pixels(3, SIZE), class_index=np.zeros(3, np.int64))
    assert not maps.any()  # ReLU(negative everywhere) = 0: no division by a zero peak
