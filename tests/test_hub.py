"""TF-Hub backbones (`hub:<handle-or-path>`), exercised offline with tiny SavedModels exported here."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from cli import call_cli
from poc.runs import store
from poc.errors import UserError
from poc.models import build, get_spec
from poc.models.cutoffs import cutoff_choices, freeze_backbone, resolve_cutoff, trainable_count, unfreeze_from

SIZE, FEATURES, CLASSES = 32, 8, 3


class FeatureVector(tf.Module):
    """A stand-in for a TF-Hub image feature vector: images (B, S, S, 3) in [0, 1] -> (B, D) features."""

    def __init__(self, size: int = SIZE, features: int = FEATURES, outputs: tuple[str, ...] = ("output_0",)):
        super().__init__()
        self.kernel = tf.Variable(tf.random.stateless_normal((3, 3, 3, features), seed=(1, 2)), name="conv/kernel")
        self.bias = tf.Variable(tf.zeros((features,)), name="conv/bias")
        self.moving_mean = tf.Variable(tf.zeros((features,)), trainable=False, name="bn/moving_mean")
        self.outputs = outputs
        self.serve = tf.function(self._serve, input_signature=[tf.TensorSpec((None, size, size, 3), tf.float32,
                                                                             name="images")])

    def _serve(self, images):
        x = tf.nn.relu(tf.nn.conv2d(images, self.kernel, 1, "SAME") + self.bias)  # (B, S, S, D)
        features = tf.reduce_mean(x, axis=(1, 2)) - self.moving_mean  # (B, D)
        return {key: features * (i + 1) for i, key in enumerate(self.outputs)}


def export(path, **kwargs) -> str:
    module = FeatureVector(**kwargs)
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return str(path)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> str:
    return export(tmp_path_factory.mktemp("hub") / "feature_vector")


def pixels(n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype(np.float32)


def features(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """The backbone's (B, D) output for raw pixels, through the classifier's own preprocessing."""
    return np.asarray(model.get_layer("backbone")(model.get_layer("preprocess")(x)))


def test_hub_classifier_gives_probabilities(saved_model):
    model = build("hub:" + saved_model, CLASSES, SIZE)
    backbone = model.get_layer("backbone")
    assert backbone.output.shape == (None, FEATURES)
    probs = np.asarray(model(pixels(), training=False))
    assert probs.shape == (4, CLASSES)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


def test_backbone_feeds_the_savedmodel_unit_range_pixels(saved_model):
    model = build("hub:" + saved_model, CLASSES, SIZE)
    reloaded = tf.saved_model.load(saved_model).signatures["serving_default"]
    x = pixels()
    expected = reloaded(images=tf.constant(x / 255.0))["output_0"]  # "unit" preprocessing: [0, 255] -> [0, 1]
    np.testing.assert_allclose(features(model, x), expected, rtol=1e-5, atol=1e-6)


def test_hub_layer_stays_float32_under_mixed_precision(saved_model):
    keras.mixed_precision.set_global_policy("mixed_float16")  # what poc.device turns on for GPUs
    try:
        model = build("hub:" + saved_model, CLASSES, SIZE)
        probs = np.asarray(model(pixels(), training=False))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("backbone").get_layer("hub").compute_dtype == "float32"
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-3)


def test_phase_one_trains_only_the_head(saved_model):
    model = build("hub:" + saved_model, CLASSES, SIZE)
    freeze_backbone(model)
    assert trainable_count(model) == FEATURES * CLASSES + CLASSES


def test_phase_two_trains_the_savedmodel_variables_except_non_trainable_ones(saved_model):
    model = build("hub:" + saved_model, CLASSES, SIZE)
    unfreeze_from(model, 0)
    conv = 3 * 3 * 3 * FEATURES + FEATURES
    assert trainable_count(model) == conv + FEATURES * CLASSES + CLASSES
    assert model.count_params() == conv + FEATURES + FEATURES * CLASSES + CLASSES  # + the moving mean


def test_adam_fine_tuning_changes_the_backbone_output(saved_model):
    """The ':0_momentum' scope-name trap: a plain TFSMLayer fails here; ours trains."""
    model = build("hub:" + saved_model, CLASSES, SIZE)
    backbone = model.get_layer("backbone")
    unfreeze_from(model, 0)
    x, y = pixels(6), keras.utils.to_categorical(np.arange(6) % CLASSES, CLASSES)
    before = np.asarray(backbone(x / 255.0))
    model.compile(keras.optimizers.Adam(1e-2), "categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=6, verbose=0)
    after = np.asarray(backbone(x / 255.0))
    assert np.abs(after - before).max() > 1e-4


def test_cutoffs_are_whole_backbone_only(saved_model):
    spec = get_spec("hub:" + saved_model)
    model = build(spec.name, CLASSES, SIZE)
    backbone = model.get_layer("backbone")
    assert [layer.name for layer in backbone.layers] == ["images", "hub"]
    assert resolve_cutoff(backbone, None, spec) == 0  # default: fine-tune the whole SavedModel
    head = FEATURES * CLASSES + CLASSES
    choices = {c.value: c.trainable_params for c in cutoff_choices(model, spec)}
    assert choices == {"0": head + 3 * 3 * 3 * FEATURES + FEATURES, "2": head}
    unfreeze_from(model, resolve_cutoff(backbone, "1", spec))  # after the input layer: still the whole model
    assert trainable_count(model) == choices["0"]
    with pytest.raises(UserError, match="blocks:2"):
        resolve_cutoff(backbone, "blocks:2", spec)


def test_multi_output_signature_uses_the_feature_vector_key(tmp_path):
    path = export(tmp_path / "two", outputs=("logits", "feature_vector"))
    model = build("hub:" + path, CLASSES, SIZE)
    expected = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(pixels() / 255.0))
    np.testing.assert_allclose(features(model, pixels()), expected["feature_vector"], rtol=1e-5, atol=1e-6)


def test_unrecognised_multi_output_signature_is_rejected_listing_the_outputs(tmp_path):
    path = export(tmp_path / "two", outputs=("a", "b"))
    with pytest.raises(UserError, match=r"\['a', 'b'\]"):
        build("hub:" + path, CLASSES, SIZE)


def test_a_savedmodel_without_serving_default_is_rejected(tmp_path):
    module = FeatureVector()
    tf.saved_model.save(module, str(tmp_path / "other"), signatures={"serve": module.serve})
    with pytest.raises(UserError, match="serving_default"):
        build(f"hub:{tmp_path / 'other'}", CLASSES, SIZE)


def test_a_spatial_output_is_rejected_as_not_a_feature_vector(tmp_path):
    module = tf.Module()
    module.serve = tf.function(lambda images: {"output_0": images * 2},
                               input_signature=[tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "maps"), signatures={"serving_default": module.serve})
    with pytest.raises(UserError, match="not a \\(batch, features\\) vector"):
        build(f"hub:{tmp_path / 'maps'}", CLASSES, SIZE)


def test_fixed_input_size_mismatch_names_the_size_to_use(saved_model):
    with pytest.raises(UserError, match="--image-size 32"):
        build("hub:" + saved_model, CLASSES, 64)


def test_missing_path_is_a_user_error_naming_it(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(UserError, match="no_such_model"):
        build(f"hub:{missing}", CLASSES, SIZE)


def test_a_directory_without_saved_model_pb_is_rejected(tmp_path):
    with pytest.raises(UserError, match="saved_model.pb"):
        build(f"hub:{tmp_path}", CLASSES, SIZE)


def test_a_handle_that_cannot_be_downloaded_is_a_user_error(monkeypatch):
    import tensorflow_hub

    def offline(handle):
        raise OSError("Name or service not known")

    monkeypatch.setattr(tensorflow_hub, "resolve", offline)
    with pytest.raises(UserError, match="internet"):
        build("hub:https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5", CLASSES, SIZE)


def test_cli_trains_a_hub_model_without_explanations(saved_model, demo_dataset, tmp_path, capsys, monkeypatch):
    result = call_cli(capsys, monkeypatch, "train", "--model", "hub:" + saved_model, "--weights", "none", "--data",
                      demo_dataset, "--image-size", str(SIZE), "--tl-epochs", "1", "--ft-epochs", "1", "--batch-size",
                      "16", runs_dir=tmp_path / "runs")
    assert result.returncode == 0, result.stderr
    rd = store.RunDir(store.Path(result.stdout.strip().splitlines()[-1]))
    info = json.loads(rd.run_json.read_text())
    assert info["status"] == "completed" and info["explanation"] == "none" and info["family"] == "hub"
    assert info["params"]["trainable_tl"] == FEATURES * 10 + 10
    assert info["params"]["trainable_ft"] == info["params"]["trainable_tl"] + 3 * 3 * 3 * FEATURES + FEATURES
    for stage in ("tl", "ft"):
        assert rd.eval_file(stage, "predictions").exists()
        assert not rd.eval_file(stage, "explanations").exists()
    assert rd.weights.exists()

