"""ViT backbone (arXiv 2010.11929): published parameter count, shapes, attention, freezing, save/load."""

import keras
import numpy as np
import pytest

from poc.explain.rollout import attention_rollout
from poc.models.vit import attention_model, block_names, build_vit_backbone
from poc.models.vit_variants import VIT_VARIANTS, ViTConfig

TINY = ViTConfig(patch=8, width=32, depth=2, heads=2, mlp=64)
TINY_SIZE = 32  # 4 x 4 patches, T = 17 tokens


def expected_params(c: ViTConfig, image_size: int) -> dict[str, int]:
    """Parameters per top-level layer, counted from the architecture alone."""
    d, tokens = c.width, (image_size // c.patch) ** 2 + 1
    block = (
        2 * d  # LayerNorm_0 scale + bias
        + 4 * (d * d + d)  # query, key, value, out projections with biases
        + 2 * d  # LayerNorm_2
        + (d * c.mlp + c.mlp)  # MlpBlock_3/Dense_0
        + (c.mlp * d + d)  # MlpBlock_3/Dense_1
    )
    counts = {
        "embedding": c.patch * c.patch * 3 * d + d,
        "cls": d,
        "posembed_input": tokens * d,
        "encoder_norm": 2 * d,
    }
    counts.update({f"encoderblock_{i}": block for i in range(c.depth)})
    return counts


def trainable_count(model: keras.Model) -> int:
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


def pixels(batch: int = 2, size: int = TINY_SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (batch, size, size, 3)).astype("float32")


def test_variant_table_matches_the_paper():
    assert VIT_VARIANTS["vit_b32"] == ViTConfig(32, 768, 12, 12, 3072)
    assert VIT_VARIANTS["vit_b16"] == ViTConfig(16, 768, 12, 12, 3072)
    assert VIT_VARIANTS["vit_s16"] == ViTConfig(16, 384, 12, 6, 1536)
    assert VIT_VARIANTS["vit_ti16"] == ViTConfig(16, 192, 12, 3, 768)


def test_vit_b32_has_the_reference_parameter_count():
    backbone = build_vit_backbone(VIT_VARIANTS["vit_b32"], 224)
    assert backbone.count_params() == sum(expected_params(VIT_VARIANTS["vit_b32"], 224).values())
    assert backbone.count_params() == 87_455_232  # reference ViT-B/32 without its head


def test_vit_b32_gives_features_and_twelve_attention_maps_at_224():
    backbone = build_vit_backbone(VIT_VARIANTS["vit_b32"], 224)
    features, *attentions = attention_model(backbone)(pixels(1, 224))
    assert features.shape == (1, 768)
    assert len(attentions) == 12
    assert all(a.shape == (1, 12, 50, 50) for a in attentions)


def test_top_level_layers_mirror_the_checkpoint_names():
    backbone = build_vit_backbone(TINY, TINY_SIZE)
    weighted = [layer.name for layer in backbone.layers if layer.weights]
    assert weighted == ["embedding", "cls", "posembed_input", "encoderblock_0", "encoderblock_1", "encoder_norm"]
    assert block_names(backbone) == ["encoderblock_0", "encoderblock_1"]
    assert {name: backbone.get_layer(name).count_params() for name in weighted} == expected_params(TINY, TINY_SIZE)


def test_image_size_not_a_multiple_of_the_patch_is_rejected_quoting_it():
    with pytest.raises(ValueError, match="image_size=30"):
        build_vit_backbone(TINY, 30)


def test_output_is_the_class_token_features():
    backbone = build_vit_backbone(TINY, TINY_SIZE)
    out = np.asarray(backbone(pixels()))
    assert out.shape == (2, TINY.width)
    assert np.all(np.isfinite(out))


def test_attention_rows_sum_to_one():
    _, *attentions = attention_model(build_vit_backbone(TINY, TINY_SIZE))(pixels())
    for attention in attentions:
        assert attention.shape == (2, TINY.heads, 17, 17)
        np.testing.assert_allclose(np.asarray(attention).sum(axis=-1), 1.0, atol=1e-5)


def test_attention_maps_feed_attention_rollout():
    _, *attentions = attention_model(build_vit_backbone(TINY, TINY_SIZE))(pixels())
    maps = attention_rollout([np.asarray(a) for a in attentions])
    assert maps.shape == (2, 4, 4) and maps.min() >= 0
    np.testing.assert_allclose(maps.max(axis=(1, 2)), 1.0)


def test_attention_model_shares_the_backbone_weights():
    backbone = build_vit_backbone(TINY, TINY_SIZE)
    explained = attention_model(backbone)
    x = pixels()
    np.testing.assert_allclose(np.asarray(explained(x)[0]), np.asarray(backbone(x)), atol=1e-6)
    norm = backbone.get_layer("encoder_norm")
    norm.beta.assign(norm.beta + 1.0)  # a change made through the backbone shows in the attention model
    np.testing.assert_allclose(np.asarray(explained(x)[0]), np.asarray(backbone(x)), atol=1e-6)


@pytest.fixture(scope="module")
def ti16_classifier():
    from poc.models import build, get_spec

    return build("vit_ti16", 5, 32), get_spec("vit_ti16")


@pytest.mark.parametrize("k", [0, 1, 8, 12])
def test_blocks_cutoff_freezes_embedding_and_the_first_k_blocks(ti16_classifier, k):
    from poc.models.cutoffs import cutoff_choices, resolve_cutoff, unfreeze_from

    model, spec = ti16_classifier
    config = VIT_VARIANTS["vit_ti16"]
    counts = expected_params(config, 32)
    frozen = {"embedding", "cls", "posembed_input"} | {f"encoderblock_{i}" for i in range(k)}
    head = config.width * 5 + 5
    expected = sum(n for name, n in counts.items() if name not in frozen) + head
    unfreeze_from(model, resolve_cutoff(model.get_layer("backbone"), f"blocks:{k}", spec))
    assert trainable_count(model) == expected
    choices = {c.value: c.trainable_params for c in cutoff_choices(model, spec)}
    assert choices[f"blocks:{k}"] == expected


def test_blocks_cutoff_freezes_whole_blocks(ti16_classifier):
    from poc.models.cutoffs import resolve_cutoff, unfreeze_from

    model, spec = ti16_classifier
    backbone = model.get_layer("backbone")
    unfreeze_from(model, resolve_cutoff(backbone, "blocks:4", spec))
    trainable = {id(v) for v in model.trainable_weights}
    assert not any(id(v) in trainable for v in backbone.get_layer("encoderblock_3").weights)
    assert all(id(v) in trainable for v in backbone.get_layer("encoderblock_4").weights)


def test_save_and_load_weights_round_trip_gives_identical_outputs(tmp_path):
    keras.utils.set_random_seed(1)
    backbone = build_vit_backbone(TINY, TINY_SIZE)
    backbone.save_weights(tmp_path / "vit.weights.h5")
    keras.utils.set_random_seed(2)
    rebuilt = build_vit_backbone(TINY, TINY_SIZE)
    x = pixels()
    assert not np.allclose(np.asarray(rebuilt(x)), np.asarray(backbone(x)))
    rebuilt.load_weights(tmp_path / "vit.weights.h5")
    np.testing.assert_array_equal(np.asarray(rebuilt(x)), np.asarray(backbone(x)))


def test_tiny_vit_builds_and_runs_under_mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        backbone = build_vit_backbone(TINY, TINY_SIZE)
        features, *attentions = attention_model(backbone)(pixels())
        assert keras.backend.standardize_dtype(features.dtype) == "float16" and features.shape == (2, TINY.width)
        assert np.all(np.isfinite(np.asarray(features, dtype="float32")))
        assert all(a.shape == (2, TINY.heads, 17, 17) for a in attentions)
        assert all(v.dtype == "float32" for v in backbone.weights)
    finally:
        keras.mixed_precision.set_global_policy("float32")
