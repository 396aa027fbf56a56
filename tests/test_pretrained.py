"""The demo backbones: the shapes pretraining task, `--weights demo`, and why it exists (non-constant features)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from poc.data.demo import CLASS_NAMES, render_image
from poc.data.shapes import SHAPE_CLASSES, make_shapes, shape_image
from poc.errors import UserError
from poc.models import build
from poc.models.pretrained import DEMO_IMAGE_SIZE, DEMO_WEIGHTS, demo_weights_path
from poc.models.vit import attention_model, build_vit_backbone, intermediates_model
from poc.models.vit_variants import VIT_VARIANTS
from poc.models.vit_checkpoint import checkpoint_key_table, load_vit_checkpoint
from poc.models.pretrain import parse_args

SIZE = DEMO_IMAGE_SIZE


# --- the pretraining task ----------------------------------------------------------------------------


def test_shapes_are_deterministic_from_the_seed():
    first, labels_first = make_shapes(30, SIZE, seed=5)
    again, labels_again = make_shapes(30, SIZE, seed=5)
    other, _ = make_shapes(30, SIZE, seed=6)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(labels_first, labels_again)
    assert not np.array_equal(first, other)


def test_shapes_arrays_have_the_promised_shape_and_balanced_labels():
    images, labels = make_shapes(2 * len(SHAPE_CLASSES) + 3, 48, seed=0)
    assert images.shape == (2 * len(SHAPE_CLASSES) + 3, 48, 48, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, np.arange(len(labels)) % len(SHAPE_CLASSES))
    assert images.std() > 20  # drawn content, not blank frames


def test_shapes_from_a_start_index_continue_the_same_sequence():
    # A training stream draws images start .. start + n - 1: fresh ones, identical to a longer call's tail.
    head, head_labels = make_shapes(9, 32, seed=0)
    tail, tail_labels = make_shapes(4, 32, seed=0, start=5)
    np.testing.assert_array_equal(tail, head[5:])
    np.testing.assert_array_equal(tail_labels, head_labels[5:])


def test_shape_classes_are_many_unique_and_none_is_a_cartoon_class():
    assert len(SHAPE_CLASSES) >= 24
    assert len(set(SHAPE_CLASSES)) == len(SHAPE_CLASSES)
    assert set(SHAPE_CLASSES).isdisjoint(CLASS_NAMES)


def test_each_class_draws_something_different_from_the_same_random_draws():
    # Same seed for every class: colours, pose and noise start alike, so differences come from the class.
    images = np.stack([shape_image(k, SIZE, np.random.default_rng([7, 0])) for k in range(len(SHAPE_CLASSES))])
    images = images.astype(np.float32)
    distance = np.abs(images[:, None] - images[None]).mean(axis=(2, 3, 4))  # (K, K) mean |difference|
    np.fill_diagonal(distance, np.inf)
    assert distance.min() > 3.0


def test_staged_recipe_ends_at_the_demo_size_and_refuses_another():
    args = parse_args(["--model", "vit_ti8", "--stages", "32:10:1e-3,64:5:2e-4", "--out", "x.npz"])
    assert args.stages == ((32, 10, 1e-3), (64, 5, 2e-4)) and args.image_size == 64
    with pytest.raises(SystemExit):
        parse_args(["--model", "vit_ti8", "--image-size", "96"])


# --- demo weight files --------------------------------------------------------------------------------


def test_demo_weights_path_lists_what_exists_for_a_model_without_demo_weights():
    with pytest.raises(UserError) as info:
        demo_weights_path("resnet50", SIZE)
    message = str(info.value)
    assert "resnet50" in message and "mobilenet_v2 at 64 px" in message and "vit_ti16 at 64 px" in message


def test_demo_weights_path_rejects_another_image_size():
    with pytest.raises(UserError, match="vit_ti16 at 96 px"):
        demo_weights_path("vit_ti16", 96)


@pytest.mark.parametrize("name", sorted(DEMO_WEIGHTS))
def test_committed_demo_weight_files_exist_and_are_small(name):
    path = demo_weights_path(name, SIZE)
    assert path == DEMO_WEIGHTS[name]
    assert 0 < path.stat().st_size < 25 * 1024**2


# --- building with weights="demo" ----------------------------------------------------------------------


def _cartoons() -> np.ndarray:
    """Two cartoon images of different classes (panda, car) as raw pixels: (2, S, S, 3) float32."""
    images = []
    for name in ("panda", "car"):
        image = render_image(name, SIZE, np.random.default_rng([0, CLASS_NAMES.index(name)]), transparent=False)
        images.append(np.asarray(image.convert("RGB").resize((SIZE, SIZE)), dtype=np.float32))
    return np.stack(images)


@pytest.fixture(scope="module")
def demo_models() -> dict[str, keras.Model]:
    return {name: build(name, 10, SIZE, "demo") for name in sorted(DEMO_WEIGHTS)}


def test_mobilenet_demo_build_holds_the_committed_backbone_weights(demo_models):
    reference = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3),
                                               pooling="avg")
    reference.load_weights(DEMO_WEIGHTS["mobilenet_v2"])
    loaded = demo_models["mobilenet_v2"].get_layer("backbone").weights
    assert len(loaded) == len(reference.weights)
    for mine, theirs in zip(loaded, reference.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(mine), keras.ops.convert_to_numpy(theirs))


def test_vit_demo_build_holds_the_committed_npz_arrays(demo_models):
    table = checkpoint_key_table(demo_models["vit_ti16"].get_layer("backbone"))
    with np.load(DEMO_WEIGHTS["vit_ti16"]) as npz:
        assert set(npz.files) == set(table)  # the backbone only: no head in the demo checkpoint
        for key, variable in table.items():
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), npz[key].astype(np.float32))


@pytest.mark.parametrize("name", sorted(DEMO_WEIGHTS))
def test_demo_build_differs_from_a_random_build(demo_models, name):
    keras.utils.set_random_seed(0)
    random_model = build(name, 10, SIZE, "none")
    pixels = _cartoons()
    assert not np.allclose(demo_models[name].predict(pixels, verbose=0), random_model.predict(pixels, verbose=0))


@pytest.mark.parametrize("name", sorted(DEMO_WEIGHTS))
def test_frozen_demo_backbone_gives_different_features_for_different_cartoons(demo_models, name):
    # The reason demo weights exist: a frozen random MobileNetV2 at 64 px maps every image to features of
    # norm ~1e-11 (the signal vanishes through its inference-mode BatchNorms), so every prediction is the same.
    model = demo_models[name]
    scaled = model.get_layer("preprocess")(_cartoons())  # (2, S, S, 3)
    features = keras.ops.convert_to_numpy(model.get_layer("backbone")(scaled, training=False))  # (2, D)
    assert np.linalg.norm(features[0] - features[1]) > 1.0
    assert np.linalg.norm(features[0] - features[1]) > 0.1 * np.linalg.norm(features, axis=1).mean()


# --- the demo ViT's attention, as named outputs of its forward pass ---------------------------------------


def _demo_vit_input(models) -> tuple[keras.Model, np.ndarray]:
    model = models["vit_ti8"]
    return model.get_layer("backbone"), keras.ops.convert_to_numpy(model.get_layer("preprocess")(_cartoons()))


def _layer_norm(x, scale, bias, eps=1e-6):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) * scale + bias


def test_demo_vit_first_attention_map_is_softmax_of_its_query_key_products(demo_models):
    # Independent of Keras' attention layer: block 0's map recomputed in numpy from the checkpoint variables.
    backbone, scaled = _demo_vit_input(demo_models)
    table = {key: keras.ops.convert_to_numpy(v) for key, v in checkpoint_key_table(backbone).items()}
    tokens = scaled
    for name in ("embedding", "tokens", "cls", "posembed_input"):
        tokens = backbone.get_layer(name)(tokens)
    tokens = keras.ops.convert_to_numpy(tokens)  # (B, T, D): the input of block 0
    block = "Transformer/encoderblock_0"
    y = _layer_norm(tokens, table[f"{block}/LayerNorm_0/scale"], table[f"{block}/LayerNorm_0/bias"])
    mha = f"{block}/MultiHeadDotProductAttention_1"
    q = np.einsum("btd,dhk->bhtk", y, table[f"{mha}/query/kernel"]) + table[f"{mha}/query/bias"][:, None]
    k = np.einsum("btd,dhk->bhtk", y, table[f"{mha}/key/kernel"]) + table[f"{mha}/key/bias"][:, None]
    logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])  # (B, H, T, T)
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    _, first, *_ = attention_model(backbone)(scaled)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(first), expected, atol=2e-4)


def test_demo_vit_named_outputs_match_the_listed_ones_and_the_backbone(demo_models):
    backbone, scaled = _demo_vit_input(demo_models)
    named = intermediates_model(backbone)(scaled)
    features, *listed = attention_model(backbone)(scaled)
    config = VIT_VARIANTS["vit_ti8"]
    tokens = (SIZE // config.patch) ** 2 + 1
    assert set(named) == {"features", "attention"} and len(named["attention"]) == config.depth == len(listed)
    assert all(tuple(a.shape) == (2, config.heads, tokens, tokens) for a in named["attention"])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(named["features"]),
                               keras.ops.convert_to_numpy(backbone(scaled)), atol=1e-5)
    for mine, theirs in zip(named["attention"], listed):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(mine), keras.ops.convert_to_numpy(theirs), atol=1e-6)


def test_backbone_built_with_attention_holds_the_same_layers_and_loads_the_demo_checkpoint(demo_models):
    backbone, scaled = _demo_vit_input(demo_models)
    explained = build_vit_backbone(VIT_VARIANTS["vit_ti8"], SIZE, with_attention=True)
    assert [layer.name for layer in explained.layers] == [layer.name for layer in backbone.layers]
    load_vit_checkpoint(explained, DEMO_WEIGHTS["vit_ti8"])
    outputs = explained(scaled)
    _, *listed = attention_model(backbone)(scaled)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(outputs["features"]),
                               keras.ops.convert_to_numpy(backbone(scaled)), atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(outputs["attention"][-1]),
                               keras.ops.convert_to_numpy(listed[-1]), atol=1e-5)
