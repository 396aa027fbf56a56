"""KerasHub image backbones (`keras_hub:<preset>`), offline: tiny backbones built from config (random weights),
saved as local presets with `save_to_preset`, then run through the classifier, the cutoffs, the explanations, the
command line and the Live predict page. A named preset is tried only where the download fails on purpose."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import keras
import keras_hub
import numpy as np
import pytest
from PIL import Image

from apptest_checks import assert_no_section_failed
from cli import ROOT, call_cli
from conftest import settled
from poc.errors import UserError
from poc.models import build, get_spec
from poc.models import kerashub_presets
from poc.models.cutoffs import cutoff_choices, freeze_backbone, resolve_cutoff, trainable_count, unfreeze_from
from poc.models.kerashub import _resize_positions
from poc.models.registry import keras_hub_spec
from poc.runs import store

SIZE, CLASSES = 32, 3
MODELS = keras_hub.models
# Tiny image backbones, one per transformer family: 32 px, 8 px patches (a 4 x 4 grid), 2 blocks, width 16.
TINY = dict(patch_size=8, num_layers=2, num_heads=2, hidden_dim=16)
TRANSFORMERS = {
    "vit": lambda: MODELS.ViTBackbone(image_shape=(SIZE, SIZE, 3), mlp_dim=32, **TINY),
    "deit": lambda: MODELS.DeiTBackbone(image_shape=(SIZE, SIZE, 3), intermediate_dim=32, **TINY),
    "dinov2_registers": lambda: MODELS.DINOV2Backbone(image_shape=(SIZE, SIZE, 3), intermediate_dim=32,
                                                      num_register_tokens=2, position_embedding_shape=(48, 48, 3),
                                                      **TINY),
    "dinov3": lambda: MODELS.DINOV3Backbone(image_shape=(SIZE, SIZE, 3), intermediate_dim=32, **TINY),
    "siglip": lambda: MODELS.SigLIPBackbone(
        MODELS.SigLIPVisionEncoder(image_shape=(SIZE, SIZE, 3), intermediate_dim=32, **TINY),
        MODELS.SigLIPTextEncoder(vocabulary_size=10, embedding_dim=16, hidden_dim=16, num_layers=1, num_heads=2,
                                 intermediate_dim=32, max_sequence_length=4)),
    "clip": lambda: MODELS.CLIPBackbone(
        MODELS.CLIPVisionEncoder(image_shape=(SIZE, SIZE, 3), intermediate_dim=32, **TINY),
        MODELS.CLIPTextEncoder(vocabulary_size=10, embedding_dim=16, hidden_dim=16, num_layers=1, num_heads=2,
                               intermediate_dim=32, max_sequence_length=4), projection_dim=8),
}
EXPECTED_TOKENS = {"vit": 1, "deit": 2, "dinov2_registers": 3, "dinov3": 5, "siglip": 0, "clip": 1}  # before patches


def tiny_resnet():
    return MODELS.ResNetBackbone(input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 32],
                                 stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
                                 image_shape=(None, None, 3))


def pixels(n: int = 3, size: int = SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype(np.float32)


def hub_features(hub, images: np.ndarray, class_token: bool) -> np.ndarray:
    """What the pooled head should see, from KerasHub's own forward pass: the class token after the final norm,
    else the mean of the patch tokens (SigLIP: before its attention-pooling head)."""
    if isinstance(hub, MODELS.SigLIPVisionEncoder):
        hub = keras.Model(hub.inputs, hub.post_layer_norm.output)
    inputs = {"pixel_values": images} if isinstance(hub, MODELS.DINOV3Backbone) else images
    tokens = np.asarray(hub(inputs))  # (B, T, D)
    return tokens[:, 0] if class_token else tokens.mean(axis=1)


@pytest.fixture(scope="module")
def presets(tmp_path_factory) -> dict[str, Path]:
    """A ViT preset with its image converter (scale to [-1, 1]) and a ResNet preset without one."""
    root = tmp_path_factory.mktemp("presets")
    vit = TRANSFORMERS["vit"]()
    vit.save_to_preset(str(root / "vit"))
    keras_hub.layers.ViTImageConverter(image_size=(SIZE, SIZE), scale=1 / 127.5, offset=-1.0).save_to_preset(
        str(root / "vit"))
    tiny_resnet().save_to_preset(str(root / "resnet"))
    return {"vit": root / "vit", "resnet": root / "resnet", "vit_model": vit}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """3 classes x 8 textured 32 px images: a class colour under per-image noise (maps differ between images)."""
    root = tmp_path_factory.mktemp("data") / "shapes"
    rng = np.random.default_rng(0)
    for c, label in enumerate(["red", "green", "blue"]):
        (root / label).mkdir(parents=True)
        for i in range(8):
            image = rng.uniform(0, 120, (SIZE, SIZE, 3))
            image[..., c] += 120
            y, x = rng.integers(0, SIZE - 8, 2)
            image[y:y + 8, x:x + 8] = 255
            Image.fromarray(image.astype(np.uint8)).save(root / label / f"{i}.png")
    return root


# ---------------------------------------------------------------- the classifier, family by family

@pytest.mark.parametrize("family", sorted(TRANSFORMERS))
def test_each_transformer_family_feeds_the_head_what_keras_hub_computes(family, tmp_path):
    full = TRANSFORMERS[family]()
    full.save_to_preset(str(tmp_path / family))
    spec = get_spec(f"keras_hub:{tmp_path / family}")
    model = build(spec.name, CLASSES, SIZE, "imagenet")  # the preset's (saved) weights
    x = pixels()
    converted = np.asarray(model.get_layer("preprocess")(x))  # no converter saved: pixels / 255
    np.testing.assert_allclose(converted, x / 255.0, rtol=1e-6)
    hub = getattr(full, "vision_encoder", full)
    expected = hub_features(hub, converted, class_token=EXPECTED_TOKENS[family] > 0)
    np.testing.assert_allclose(model.get_layer("backbone")(converted), expected, atol=2e-5)
    assert spec.family == "vit" and spec.patch == 8 and spec.default_image_size == SIZE
    blocks = [layer for layer in model.get_layer("backbone").layers if layer.name.startswith("encoderblock_")]
    assert len(blocks) == 2
    if EXPECTED_TOKENS[family]:  # the attention handed back keeps the class token and the 16 patches only
        assert spec.explanation == "attention_rollout"
        assert tuple(blocks[0].outputs[1].shape) == (None, 2, 17, 17)
    else:
        assert spec.explanation == "gradcam" and spec.last_conv == "patch_grid"


def test_a_preset_saved_and_reloaded_gives_identical_outputs_inside_the_classifier(presets):
    original = presets["vit_model"]
    model = build(f"keras_hub:{presets['vit']}", CLASSES, SIZE, "imagenet")
    x = pixels()
    expected = np.asarray(original(x / 127.5 - 1.0))[:, 0]  # the saved converter's rescaling, by hand
    np.testing.assert_allclose(model.get_layer("backbone")(model.get_layer("preprocess")(x)), expected, atol=1e-5)
    again = build(f"keras_hub:{presets['vit']}", CLASSES, SIZE, "imagenet")
    again.get_layer("head").set_weights(model.get_layer("head").get_weights())
    np.testing.assert_array_equal(np.asarray(model(x, training=False)), np.asarray(again(x, training=False)))


def test_weights_none_builds_the_same_config_with_random_weights(presets):
    name = f"keras_hub:{presets['vit']}"
    pretrained, random = build(name, CLASSES, SIZE, "imagenet"), build(name, CLASSES, SIZE, "none")
    assert [w.shape for w in pretrained.weights] == [w.shape for w in random.weights]
    assert not np.allclose(pretrained.get_layer("backbone").weights[0], random.get_layer("backbone").weights[0])
    with pytest.raises(UserError, match="brings its own weights"):
        build(name, CLASSES, SIZE, str(presets["vit"] / "model.weights.h5"))


def test_another_image_size_interpolates_the_position_embeddings(presets):
    model = build(f"keras_hub:{presets['vit']}", CLASSES, 48, "imagenet")  # 6 x 6 patches instead of 4 x 4
    assert np.isfinite(np.asarray(model(pixels(size=48), training=False))).all()
    table = np.random.default_rng(0).normal(size=(17, 16)).astype(np.float32)  # class token + 4 x 4 patches
    np.testing.assert_allclose(_resize_positions(table, (17, 16)), table, atol=1e-5)  # same grid: unchanged
    grown = _resize_positions(table, (37, 16))
    np.testing.assert_array_equal(grown[0], table[0])  # the class token's position is kept


def test_a_fine_tuned_dinov2_off_its_grid_reloads_exactly(tmp_path):
    """DINOv2 interpolates its 48 px position grid to 32 px at every call and, when saving, interpolates the
    (trained) copy back: rebuilt at 32 px instead, a saved run's weights reload exactly."""
    TRANSFORMERS["dinov2_registers"]().save_to_preset(str(tmp_path / "dino"))
    name = f"keras_hub:{tmp_path / 'dino'}"
    model, x = build(name, CLASSES, SIZE, "imagenet"), pixels()
    freeze_backbone(model)
    unfreeze_from(model, 0)  # the embedding (position embeddings included) trains too
    rng = np.random.default_rng(0)
    for variable in model.trainable_weights:  # what fine-tuning does to them, in one step
        variable.assign(np.asarray(variable) + rng.normal(0, 0.1, variable.shape).astype(np.float32))
    assert any("interpolated_position_embeddings" in v.path for v in model.trainable_weights)
    model.save_weights(tmp_path / "run.weights.h5")
    again = build(name, CLASSES, SIZE, "none")
    again.load_weights(tmp_path / "run.weights.h5")
    np.testing.assert_array_equal(np.asarray(model(x, training=False)), np.asarray(again(x, training=False)))


# ---------------------------------------------------------------- registry metadata and cutoffs

def test_the_registry_reads_family_size_cutoffs_and_explanation_from_the_preset(presets):
    vit, resnet = get_spec(f"keras_hub:{presets['vit']}"), get_spec(f"keras_hub:{presets['resnet']}")
    assert (vit.family, vit.default_image_size, vit.default_cutoff, vit.explanation) == (
        "vit", SIZE, "blocks:1", "attention_rollout")
    assert (resnet.family, resnet.default_image_size, resnet.explanation, resnet.last_conv) == (
        "cnn", 224, "gradcam", "feature_map")
    assert resnet.default_cutoff == "stack1_block0_1_pad"  # the last stage trains
    model = build(resnet.name, CLASSES, SIZE, "none")
    choices = [c.value for c in cutoff_choices(model, resnet)]
    assert choices == ["0", "stack0_block0_1_conv", "stack1_block0_1_pad", str(len(model.get_layer("backbone").layers))]


def test_transformer_cutoffs_freeze_whole_blocks_with_trainable_counts(presets):
    spec = get_spec(f"keras_hub:{presets['vit']}")
    model = build(spec.name, CLASSES, SIZE, "none")
    counts = {c.value: c.trainable_params for c in cutoff_choices(model, spec)}
    head = 16 * CLASSES + CLASSES
    assert counts["blocks:2"] == head + 2 * 16  # only the final norm and the head
    assert counts["blocks:0"] > counts["blocks:1"] > counts["blocks:2"] > head
    freeze_backbone(model)
    assert trainable_count(model) == head
    unfreeze_from(model, resolve_cutoff(model.get_layer("backbone"), "blocks:1", spec))
    assert trainable_count(model) == counts["blocks:1"]


def test_a_local_transformer_preset_is_described_without_tensorflow(presets):
    script = ("import sys\nfrom poc.models.registry import get_spec\n"
              f"spec = get_spec('keras_hub:{presets['vit']}')\n"
              "print(spec.family, spec.default_cutoff, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["vit", "blocks:1", "False"]


# ---------------------------------------------------------------- refusals and the offline path

@pytest.mark.parametrize("text, says", [("", "needs a KerasHub preset name"),
                                        ("hf://someone/model", "only KerasHub preset names"),
                                        ("no spaces!", "is not a preset name"),
                                        ("/no/such/preset", "no such preset directory")])
def test_malformed_or_missing_presets_are_refused_naming_the_problem(text, says):
    with pytest.raises(UserError, match=says):
        get_spec(f"keras_hub:{text}")


def test_a_text_model_preset_is_refused_listing_the_accepted_classes(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text(json.dumps({"class_name": "GemmaBackbone", "config": {}}))
    with pytest.raises(UserError, match=r"GemmaBackbone preset, not an image backbone.*DINOV2Backbone.*ResNetBackbone"):
        get_spec(f"keras_hub:{tmp_path}")
    import kagglehub

    monkeypatch.setattr(kagglehub, "model_download", lambda *a, **k: pytest.fail("nothing is downloaded"))
    with pytest.raises(UserError, match="gemma_2b_en is a GemmaBackbone preset"):  # refused from KerasHub's table
        get_spec("keras_hub:gemma_2b_en")


def test_a_download_that_hangs_is_cut_short_with_the_offline_message(monkeypatch):
    import kagglehub

    monkeypatch.setattr(kagglehub, "model_download", lambda *a, **k: time.sleep(30))
    monkeypatch.setattr(kerashub_presets, "DOWNLOAD_TIMEOUT", 0.5)
    kerashub_presets.describe.cache_clear()
    keras_hub_spec.cache_clear()
    begin = time.monotonic()
    with pytest.raises(UserError, match=r"preset dinov2_small could not be downloaded \(offline\?\): give a local "
                                        r"preset directory"):
        get_spec("keras_hub:dinov2_small")
    assert time.monotonic() - begin < 5


def test_train_with_a_preset_name_offline_exits_2_naming_the_preset_and_the_local_alternative(tiny_data, tmp_path,
                                                                                             capsys, monkeypatch):
    for name in ("HTTPS_PROXY", "https_proxy"):  # no network: a proxy that refuses every connection
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    begin = time.monotonic()
    result = call_cli(capsys, monkeypatch, "train", "--model", "keras_hub:dinov2_small", "--data", tiny_data,
                      runs_dir=tmp_path / "runs")
    assert result.returncode == 2, result.stderr
    assert "preset dinov2_small could not be downloaded (offline?): give a local preset directory" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - begin < 90
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# ---------------------------------------------------------------- end to end: train, evaluate, predict, explain

@pytest.fixture(scope="module")
def trained(presets, tiny_data, tmp_path_factory) -> dict[str, store.RunDir]:
    """One tiny run per preset, both phases with a cutoff, through the command line (in this process)."""
    from poc.cli import main

    root = tmp_path_factory.mktemp("runs")
    for key, cutoff in (("vit", "blocks:1"), ("resnet", "stack1_block0_1_pad")):
        code = main(["train", "--model", f"keras_hub:{presets[key]}", "--weights", "none", "--data", str(tiny_data),
                     "--image-size", str(SIZE), "--tl-epochs", "1", "--ft-epochs", "1", "--batch-size", "8",
                     "--tl-views", "0", "--fine-tune-at", cutoff, "--name", key, "--runs-dir", str(root)])
        assert code == 0
    runs = {}
    for path in root.iterdir():
        info = store.read_json(path / "run.json") if (path / "run.json").exists() else None
        if info:
            runs[info["name"]] = store.RunDir(path)
    return runs


@pytest.mark.parametrize("key, family, method", [("vit", "vit", "attention_rollout"), ("resnet", "cnn", "gradcam")])
def test_a_tiny_run_completes_with_both_stages_evaluated_and_explained(trained, key, family, method):
    rd = trained[key]
    info = json.loads(rd.run_json.read_text())
    assert info["status"] == "completed" and info["family"] == family and info["explanation"] == method
    params = info["params"]
    assert params["trainable_tl"] < params["trainable_ft"] <= params["total"]
    for stage in ("tl", "ft"):
        assert rd.eval_file(stage, "predictions").exists() and rd.eval_file(stage, "metrics").exists()
        maps, written = store.read_explanations(rd, stage)
        assert written == method and len(maps) >= 2
        assert np.ptp(maps.astype(np.float32), axis=0).max() > 0  # not the same map for every image


def test_evaluate_and_predict_with_explanations_work_on_the_runs(trained, tiny_data, capsys, monkeypatch):
    image = next((tiny_data / "red").glob("*.png"))
    for key, method in (("vit", "attention_rollout"), ("resnet", "gradcam")):
        rd = trained[key]
        runs_dir = rd.path.parent
        assert call_cli(capsys, monkeypatch, "evaluate", rd.path, "--runs-dir", runs_dir).returncode == 0
        result = call_cli(capsys, monkeypatch, "predict", rd.path, image, "--json", "--explain",
                          "--runs-dir", runs_dir)
        assert result.returncode == 0, result.stderr
        answer = json.loads(result.stdout)[0]
        assert len(answer["top_k"]) == CLASSES and answer["explanation"]["method"] == method


def test_live_predict_shows_both_keras_hub_runs_with_their_explanations(trained, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("VITRINE_RUNS_DIR", str(trained["vit"].path.parent))
    at = settled(AppTest.from_file("../pages/3_Live_predict.py", default_timeout=180).run())
    assert not at.exception and not at.error
    assert_no_section_failed(at)
    texts = [e.value for kind in ("markdown", "caption") for e in getattr(at, kind)]
    assert sum(t.startswith("Top-1:") for t in texts) == 2
    captions = [img.caption for element in at.get("image") for img in element.proto.imgs]
    assert any(c.startswith("attention rollout") for c in captions)
    assert any(c.startswith("Grad-CAM") for c in captions)
