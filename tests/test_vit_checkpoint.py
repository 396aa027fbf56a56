"""Google ViT .npz port: checkpoints written here in exactly the vit_jax layout, random values."""

import keras
import numpy as np
import pytest

from poc.errors import UserError
from poc.models.vit import ViTConfig, build_vit_backbone
from poc.models.vit_checkpoint import checkpoint_key_table, export_vit_checkpoint, load_vit_checkpoint

TINY = ViTConfig(patch=8, width=32, depth=2, heads=2, mlp=64)
CLASSES = 5


def google_layout(c: ViTConfig, image_size: int, head: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Random arrays under the keys and shapes of Google's checkpoints, written from the spec alone."""
    rng = np.random.default_rng(seed)
    d, h, tokens = c.width, c.heads, (image_size // c.patch) ** 2 + 1

    def r(*shape):
        return rng.normal(0, 0.1, shape).astype(np.float32)

    arrays = {
        "embedding/kernel": r(c.patch, c.patch, 3, d),
        "embedding/bias": r(d),
        "cls": r(1, 1, d),
        "Transformer/posembed_input/pos_embedding": r(1, tokens, d),
        "Transformer/encoder_norm/scale": 1 + r(d),
        "Transformer/encoder_norm/bias": r(d),
    }
    for i in range(c.depth):
        p = f"Transformer/encoderblock_{i}"
        for ln in ("LayerNorm_0", "LayerNorm_2"):
            arrays[f"{p}/{ln}/scale"], arrays[f"{p}/{ln}/bias"] = 1 + r(d), r(d)
        for proj in ("query", "key", "value"):
            arrays[f"{p}/MultiHeadDotProductAttention_1/{proj}/kernel"] = r(d, h, d // h)
            arrays[f"{p}/MultiHeadDotProductAttention_1/{proj}/bias"] = r(h, d // h)
        arrays[f"{p}/MultiHeadDotProductAttention_1/out/kernel"] = r(h, d // h, d)
        arrays[f"{p}/MultiHeadDotProductAttention_1/out/bias"] = r(d)
        arrays[f"{p}/MlpBlock_3/Dense_0/kernel"], arrays[f"{p}/MlpBlock_3/Dense_0/bias"] = r(d, c.mlp), r(c.mlp)
        arrays[f"{p}/MlpBlock_3/Dense_1/kernel"], arrays[f"{p}/MlpBlock_3/Dense_1/bias"] = r(c.mlp, d), r(d)
    if head is not None:
        arrays["head/kernel"], arrays["head/bias"] = r(d, head), r(head)
    return arrays


def assign_directly(backbone: keras.Model, a: dict[str, np.ndarray]) -> None:
    """Sets the weights layer by layer in Keras's own weight order, without the loader or its table."""
    backbone.get_layer("embedding").set_weights([a["embedding/kernel"], a["embedding/bias"]])
    backbone.get_layer("cls").set_weights([a["cls"]])
    backbone.get_layer("posembed_input").set_weights([a["Transformer/posembed_input/pos_embedding"]])
    for i in range(TINY.depth):
        p = f"Transformer/encoderblock_{i}"
        attn = f"{p}/MultiHeadDotProductAttention_1"
        backbone.get_layer(f"encoderblock_{i}").set_weights(
            [a[f"{p}/LayerNorm_0/scale"], a[f"{p}/LayerNorm_0/bias"]]
            + [a[f"{attn}/{proj}/{w}"] for proj in ("query", "key", "value", "out") for w in ("kernel", "bias")]
            + [a[f"{p}/LayerNorm_2/scale"], a[f"{p}/LayerNorm_2/bias"]]
            + [a[f"{p}/MlpBlock_3/{dense}/{w}"] for dense in ("Dense_0", "Dense_1") for w in ("kernel", "bias")]
        )
    norm = backbone.get_layer("encoder_norm")
    norm.set_weights([a["Transformer/encoder_norm/scale"], a["Transformer/encoder_norm/bias"]])


def bilinear_align_corners(grid: np.ndarray, new: int) -> np.ndarray:
    """(g, g, D) -> (new, new, D), output pixel i sampled at input i * (g - 1) / (new - 1)."""
    old = grid.shape[0]
    src = np.arange(new) * (old - 1) / (new - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, old - 1)
    w = (src - lo)[:, None]
    rows = grid[lo] * (1 - w[:, :, None]) + grid[hi] * w[:, :, None]  # (new, g, D)
    return rows[:, lo] * (1 - w[None]) + rows[:, hi] * w[None]  # (new, new, D)


def write(path, arrays):
    np.savez(path, **arrays)
    return path


def tiny(size=32):
    return build_vit_backbone(TINY, size)


def built_head(classes=CLASSES):
    head = keras.layers.Dense(classes)
    head.build((None, TINY.width))
    return head


def pixels(size=32):
    return np.random.default_rng(3).uniform(-1, 1, (2, size, size, 3)).astype("float32")


def test_key_table_maps_every_weight_exactly_once():
    backbone = tiny()
    table = checkpoint_key_table(backbone)
    assert len(table) == len(backbone.weights) == len({id(v) for v in table.values()})
    assert set(table) == set(google_layout(TINY, 32))


def test_loaded_checkpoint_gives_the_same_outputs_as_direct_assignment(tmp_path):
    arrays = google_layout(TINY, 32)
    loaded, direct = tiny(), tiny()
    report = load_vit_checkpoint(loaded, write(tmp_path / "vit.npz", arrays))
    assign_directly(direct, arrays)
    assert report == {"loaded": len(arrays), "head_loaded": False, "head_note": None, "posemb_resized": None}
    np.testing.assert_array_equal(np.asarray(loaded(pixels())), np.asarray(direct(pixels())))


def test_head_is_loaded_when_its_class_count_matches(tmp_path):
    arrays = google_layout(TINY, 32, head=CLASSES)
    head = built_head()
    report = load_vit_checkpoint(tiny(), write(tmp_path / "vit.npz", arrays), head=head)
    assert report["head_loaded"] is True
    np.testing.assert_array_equal(np.asarray(head.kernel), arrays["head/kernel"])
    np.testing.assert_array_equal(np.asarray(head.bias), arrays["head/bias"])


def test_head_with_another_class_count_is_skipped_and_reported(tmp_path):
    head = built_head()
    before = np.asarray(head.kernel).copy()
    report = load_vit_checkpoint(tiny(), write(tmp_path / "vit.npz", google_layout(TINY, 32, head=1000)), head=head)
    assert report["head_loaded"] is False
    assert "class count" in report["head_note"]
    np.testing.assert_array_equal(np.asarray(head.kernel), before)


def test_checkpoint_without_head_loads_the_backbone_and_reports_it(tmp_path):
    report = load_vit_checkpoint(tiny(), write(tmp_path / "vit.npz", google_layout(TINY, 32)), head=built_head())
    assert report["head_loaded"] is False and "no head" in report["head_note"]


def test_position_embedding_of_another_grid_is_resized_bilinearly(tmp_path):
    arrays = google_layout(TINY, 64)  # 8 x 8 patch grid, loaded into a 4 x 4 model
    loaded, direct = tiny(32), tiny(32)
    report = load_vit_checkpoint(loaded, write(tmp_path / "vit64.npz", arrays))
    assert report["posemb_resized"] == (8, 4)

    old = arrays["Transformer/posembed_input/pos_embedding"]  # (1, 65, D)
    grid = bilinear_align_corners(old[0, 1:].reshape(8, 8, -1), 4)
    resized = np.concatenate([old[:, :1], grid.reshape(1, 16, -1)], axis=1)  # (1, 17, D)
    np.testing.assert_allclose(np.asarray(loaded.get_layer("posembed_input").pos_embedding), resized, atol=1e-6)

    assign_directly(direct, arrays | {"Transformer/posembed_input/pos_embedding": resized})
    np.testing.assert_allclose(np.asarray(loaded(pixels())), np.asarray(direct(pixels())), atol=1e-5)


def test_export_writes_the_google_layout_and_loads_back(tmp_path):
    arrays = google_layout(TINY, 32, head=CLASSES)
    source, head = tiny(), built_head()
    assign_directly(source, arrays)
    head.set_weights([arrays["head/kernel"], arrays["head/bias"]])
    path = export_vit_checkpoint(source, tmp_path / "exported.npz", head=head)
    with np.load(path, allow_pickle=False) as npz:
        assert set(npz.files) == set(arrays)
        for key in arrays:
            np.testing.assert_array_equal(npz[key], arrays[key])
    target = tiny()
    load_vit_checkpoint(target, path)
    np.testing.assert_array_equal(np.asarray(target(pixels())), np.asarray(source(pixels())))


MISSING = "Transformer/encoderblock_1/LayerNorm_2/bias"
EXTRA = "Transformer/encoderblock_2/LayerNorm_0/scale"
MISSHAPED = "Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda a: a.pop(MISSING), f"missing keys (1): {MISSING}"),
        (lambda a: a.update({EXTRA: np.ones(32, np.float32)}), f"unexpected keys (1): {EXTRA}"),
        (lambda a: a.update({MISSHAPED: np.ones((32, 65), np.float32)}), f"{MISSHAPED} (32, 64) vs (32, 65)"),
    ],
    ids=["missing", "unexpected", "misshaped"],
)
def test_wrong_checkpoint_raises_user_error_naming_the_keys(tmp_path, change, named):
    arrays = google_layout(TINY, 32)
    change(arrays)
    backbone = tiny()
    before = [np.asarray(v).copy() for v in backbone.weights]
    with pytest.raises(UserError) as error:
        load_vit_checkpoint(backbone, write(tmp_path / "bad.npz", arrays))
    assert named in str(error.value)
    for value, var in zip(before, backbone.weights):  # nothing was half-loaded
        np.testing.assert_array_equal(np.asarray(var), value)


def test_checkpoint_of_another_variant_gives_a_readable_error(tmp_path):
    arrays = google_layout(ViTConfig(patch=8, width=48, depth=4, heads=3, mlp=96), 32)
    with pytest.raises(UserError) as error:
        load_vit_checkpoint(tiny(), write(tmp_path / "other.npz", arrays))
    message = str(error.value)
    assert "unexpected keys (32)" in message and "mis-shaped keys" in message and "more" in message
    assert len(message) < 2000


def test_non_identity_pre_logits_is_reported_as_unsupported(tmp_path):
    arrays = google_layout(TINY, 32) | {"pre_logits/kernel": np.ones((32, 32), np.float32),
                                        "pre_logits/bias": np.zeros(32, np.float32)}
    with pytest.raises(UserError, match="pre_logits.*not supported"):
        load_vit_checkpoint(tiny(), write(tmp_path / "pre.npz", arrays))


def test_identity_pre_logits_is_ignored(tmp_path):
    arrays = google_layout(TINY, 32) | {"pre_logits/kernel": np.eye(32, dtype=np.float32),
                                        "pre_logits/bias": np.zeros(32, np.float32)}
    assert load_vit_checkpoint(tiny(), write(tmp_path / "pre.npz", arrays))["loaded"] == len(arrays) - 2


def test_missing_file_raises_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_vit_checkpoint(tiny(), tmp_path / "nope.npz")


def test_unreachable_url_raises_user_error_mentioning_the_network(tmp_path):
    with pytest.raises(UserError, match="network"):
        load_vit_checkpoint(tiny(), "http://127.0.0.1:9/ViT-Ti_16.npz", cache_dir=tmp_path)


def test_a_big_vision_layout_is_refused_with_its_keys_named(tmp_path):
    # big_vision nests parameters under params/ and names the MLP block MlpBlock_0: not the vit_jax layout the
    # table maps, so nothing loads and the message names what did not match.
    arrays = {f"params/{key.replace('MlpBlock_3', 'MlpBlock_0')}": value
              for key, value in google_layout(TINY, 32).items()}
    with pytest.raises(UserError) as error:
        load_vit_checkpoint(tiny(), write(tmp_path / "big_vision.npz", arrays))
    assert "unexpected keys" in str(error.value) and "params/" in str(error.value)
