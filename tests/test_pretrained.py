"""The demo backbones: the shapes pretraining task, `--weights demo`, and why it exists (non-constant features);
their committed heads, `--evaluate`, and the distillation that pretraining can add."""

from __future__ import annotations

import argparse
import csv
import re
import shutil

import keras
import numpy as np
import pytest

from poc.data.demo import CLASS_NAMES, render_image
from poc.data.shapes import SHAPE_CLASSES, make_shapes, shape_image
from poc.errors import UserError
from poc.models import build
from poc.models.pretrained import DEMO_IMAGE_SIZE, DEMO_WEIGHTS, demo_weights_path, head_path, load_head
from poc.models.vit import attention_model, build_vit_backbone, intermediates_model
from poc.models.vit_variants import VIT_VARIANTS
from poc.models.vit_checkpoint import checkpoint_key_table, load_vit_checkpoint
from poc.models import pretrain
from poc.models.pretrain import compile_stage, distillation_trainer, parse_args

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


def test_staged_only_options_are_refused_for_an_epoch_recipe():
    with pytest.raises(SystemExit):
        parse_args(["--model", "vit_ti16", "--distill", "mobilenet_v2"])
    with pytest.raises(SystemExit):
        parse_args(["--model", "mobilenet_v2", "--init", "demo"])


def test_a_distillation_temperature_needs_distill_and_a_positive_value():
    for argv in (["--distill-temperature", "3"], ["--distill", "mobilenet_v2", "--distill-temperature", "0"]):
        with pytest.raises(SystemExit):
            parse_args(["--model", "vit_ti8", *argv])
    assert parse_args(["--model", "vit_ti8", "--distill", "mobilenet_v2", "--distill-temperature", "3"]
                      ).distill_temperature == 3.0


def test_distill_init_demo_continues_from_the_committed_backbone():
    args = parse_args(["--model", "vit_ti8", "--distill", "mobilenet_v2", "--init", "demo"])
    assert args.distill == "mobilenet_v2" and args.init == str(DEMO_WEIGHTS["vit_ti8"])


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


def test_head_file_sits_beside_its_backbone_file(tmp_path):
    assert head_path(tmp_path / "demo_mobilenet_v2_64.weights.h5") == tmp_path / "demo_mobilenet_v2_64.head.npz"
    assert head_path(tmp_path / "demo_vit_ti8_64.npz") == tmp_path / "demo_vit_ti8_64.head.npz"


def test_a_missing_head_names_the_command_that_fits_it(tmp_path):
    with pytest.raises(UserError, match="--fit-head"):
        load_head(tmp_path / "demo_vit_ti8_64.npz")


@pytest.mark.parametrize("name", sorted(DEMO_WEIGHTS))
def test_committed_head_is_small_and_fits_its_backbone_features(demo_models, name):
    kernel, bias = load_head(DEMO_WEIGHTS[name])
    features = demo_models[name].get_layer("backbone").output.shape[-1]
    assert kernel.shape == (features, len(SHAPE_CLASSES)) and bias.shape == (len(SHAPE_CLASSES),)
    assert head_path(DEMO_WEIGHTS[name]).stat().st_size < 200 * 1024


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
    outputs = [keras.ops.convert_to_numpy(m(pixels, training=False)) for m in (demo_models[name], random_model)]
    assert not np.allclose(*outputs)  # (2, 10) each; a direct call: predict() would trace a function per model


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


# --- the committed heads: --evaluate, --fit-head ---------------------------------------------------------------


def _held_out_line(out: str) -> float:
    lines = [line for line in out.splitlines() if line.startswith("held-out accuracy")]
    assert len(lines) == 1 and re.fullmatch(r"held-out accuracy: [01]\.\d{4}", lines[0]), out
    return float(lines[0].split(": ")[1])


@pytest.mark.parametrize("name", ["mobilenet_v2", "vit_ti8"])
def test_evaluate_prints_the_committed_backbone_and_head_accuracy(demo_models, name, capsys):
    # Recomputed apart from --evaluate: the backbone's features times the head file's kernel, in numpy.
    assert pretrain.main(["--model", name, "--evaluate", "--val-images", "56"]) == 0
    printed = _held_out_line(capsys.readouterr().out)
    images, labels = make_shapes(56, SIZE, seed=1)
    model = demo_models[name]
    scaled = model.get_layer("preprocess")(images.astype(np.float32))
    features = keras.ops.convert_to_numpy(model.get_layer("backbone")(scaled, training=False))  # (N, D)
    kernel, bias = load_head(DEMO_WEIGHTS[name])
    expected = np.mean(np.argmax(features @ kernel + bias, axis=1) == labels)
    assert printed == pytest.approx(expected, abs=1 / 56 + 1e-4)  # float ties aside, the same images right
    assert printed > 5 / len(SHAPE_CLASSES)  # far above chance: the head belongs to this backbone


def test_fit_head_writes_a_head_that_the_evaluation_uses(tmp_path, capsys):
    out = tmp_path / "demo_vit_ti16_64.npz"
    shutil.copy(DEMO_WEIGHTS["vit_ti16"], out)
    argv = ["--model", "vit_ti16", "--out", str(out), "--train-images", "56", "--val-images", "56"]
    assert pretrain.main(argv + ["--fit-head"]) == 0
    kernel, bias = load_head(out)
    assert kernel.shape == (VIT_VARIANTS["vit_ti16"].width, len(SHAPE_CLASSES)) and bias.shape == (len(SHAPE_CLASSES),)
    fitted = _held_out_line(capsys.readouterr().out)
    assert pretrain.main(argv + ["--evaluate"]) == 0
    assert _held_out_line(capsys.readouterr().out) == fitted > 2 / len(SHAPE_CLASSES)


def test_evaluate_without_a_head_file_says_how_to_make_one(tmp_path, capsys):
    out = tmp_path / "demo_vit_ti8_64.npz"
    shutil.copy(DEMO_WEIGHTS["vit_ti8"], out)
    assert pretrain.main(["--model", "vit_ti8", "--evaluate", "--out", str(out), "--val-images", "28"]) == 2
    assert "--fit-head" in capsys.readouterr().err


# --- DeiT-style distillation: hard labels, or soft targets at a temperature ---------------------------------------


def _stage_args(**changes) -> argparse.Namespace:
    values = dict(warmup_steps=0, weight_decay=0.0, jit_compile=False, batch_size=4, seed=0, init=None, curve=None,
                  pool=None, distill=None, distill_temperature=None)
    return argparse.Namespace(**(values | changes))


def test_distillation_loss_is_half_true_labels_half_teacher_labels():
    keras.utils.set_random_seed(0)
    model = build("vit_ti8", len(SHAPE_CLASSES), 32, "none")
    trainer = distillation_trainer(model, len(SHAPE_CLASSES))
    compile_stage(trainer, _stage_args(), 10, 1e-4, distilled=True)
    images, labels = make_shapes(8, 32, seed=3)
    taught = (labels + 1) % len(SHAPE_CLASSES)  # a teacher that disagrees everywhere
    probs, probs_taught = (keras.ops.convert_to_numpy(p) for p in trainer(images.astype(np.float32)))  # (B, C) x 2

    def ce(p, y):
        return -np.mean(np.log(p[np.arange(len(y)), y]))

    loss = trainer.compute_loss(y=(labels, taught), y_pred=(probs, probs_taught))
    assert float(loss) == pytest.approx(0.5 * ce(probs, labels) + 0.5 * ce(probs_taught, taught), rel=1e-5)


def test_soft_distillation_loss_is_half_true_labels_half_t_squared_kl_to_the_softened_teacher():
    from scipy.special import log_softmax, softmax

    keras.utils.set_random_seed(0)
    temperature = 3.0
    model = build("vit_ti8", len(SHAPE_CLASSES), 32, "none")
    trainer = distillation_trainer(model, len(SHAPE_CLASSES), soft=True)
    compile_stage(trainer, _stage_args(distill_temperature=temperature), 10, 1e-4, distilled=True)
    images, labels = make_shapes(8, 32, seed=3)
    teacher_logits = np.random.default_rng(0).normal(0, 4, (8, len(SHAPE_CLASSES)))
    softened = softmax(teacher_logits / temperature, axis=1).astype(np.float32)  # (B, C)
    probs, logits = (keras.ops.convert_to_numpy(p) for p in trainer(images.astype(np.float32)))  # (B, C) x 2
    np.testing.assert_allclose(softmax(logits, axis=1), probs, rtol=1e-4, atol=1e-6)  # the same head, as logits
    ce = -np.mean(np.log(probs[np.arange(len(labels)), labels]))
    kl = np.mean(np.sum(softened * (np.log(softened) - log_softmax(logits / temperature, axis=1)), axis=1))
    loss = trainer.compute_loss(y=(labels, softened), y_pred=(probs, logits))
    assert float(loss) == pytest.approx(0.5 * ce + 0.5 * temperature ** 2 * kl, rel=1e-4)


def test_softened_teacher_probabilities_are_the_softmax_of_its_logits_over_the_temperature():
    from scipy.special import softmax

    logits = np.random.default_rng(1).normal(0, 6, (5, len(SHAPE_CLASSES)))
    for temperature in (1.0, 3.0, 10.0):
        np.testing.assert_allclose(pretrain.soften(softmax(logits, axis=1), temperature),
                                   softmax(logits / temperature, axis=1), rtol=1e-5, atol=1e-7)


def test_distillation_head_starts_as_a_copy_of_the_class_head():
    # Continuing from trained weights, a random second head would first disturb the backbone.
    model = build("vit_ti8", len(SHAPE_CLASSES), 32, "none")
    trainer = distillation_trainer(model, len(SHAPE_CLASSES))
    for mine, theirs in zip(trainer.get_layer("head_distill").get_weights(), model.get_layer("head").get_weights()):
        np.testing.assert_array_equal(mine, theirs)


class _BrightnessTeacher:
    """A stand-in teacher: class = mean brightness bucket; records the image sizes it was shown."""

    def __init__(self):
        self.sizes = []

    def predict_on_batch(self, images):
        self.sizes.append(images.shape[1])
        return np.eye(len(SHAPE_CLASSES))[(images.mean(axis=(1, 2, 3)) // 10).astype(int) % len(SHAPE_CLASSES)]


def test_distillation_stream_pairs_true_labels_with_the_teachers_labels_of_the_same_images():
    teacher = _BrightnessTeacher()
    stream = pretrain.fresh_stream(_stage_args(), 32, 2, start=5, teacher=teacher)
    batches = [(x.numpy(), y.numpy(), t.numpy()) for x, (y, t) in stream]
    images, labels = make_shapes(8, 32, seed=0, start=5)
    seen, _ = make_shapes(8, SIZE, seed=0, start=5)  # the same draws at the teacher's size
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), images)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), labels)
    np.testing.assert_array_equal(np.concatenate([b[2] for b in batches]),
                                  np.argmax(teacher.predict_on_batch(seen), axis=1))
    assert set(teacher.sizes) == {SIZE}


def test_soft_distillation_stream_pairs_true_labels_with_the_softened_teacher_probabilities():
    teacher = _BrightnessTeacher()
    teacher.output_shape = (None, len(SHAPE_CLASSES))
    stream = pretrain.fresh_stream(_stage_args(distill_temperature=2.0), 32, 2, start=5, teacher=teacher)
    batches = [(y.numpy(), t.numpy()) for _, (y, t) in stream]
    _, labels = make_shapes(8, 32, seed=0, start=5)
    seen, _ = make_shapes(8, SIZE, seed=0, start=5)
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), labels)
    np.testing.assert_allclose(np.concatenate([b[1] for b in batches]),
                               pretrain.soften(teacher.predict_on_batch(seen).astype(np.float32), 2.0), rtol=1e-6)


def test_a_pool_stream_shows_each_pool_image_once_a_pass_augmented_and_the_teacher_labels_that_view():
    teacher = _BrightnessTeacher()
    args = _stage_args(pool=4, start_image=5)
    stream = pretrain.fresh_stream(args, SIZE, 4, start=5, teacher=teacher)  # 16 draws: four passes over 4 images
    batches = [(x.numpy(), y.numpy(), t.numpy()) for x, (y, t) in stream]
    pixels, labels, taught = (np.concatenate([b[k] for b in batches]) for k in range(3))
    originals, pool_labels = make_shapes(4, SIZE, seed=0, start=5)
    for one_pass in labels.reshape(4, 4):  # every pass is a reshuffle of the same four images
        assert sorted(one_pass) == sorted(pool_labels)
    assert not any(np.array_equal(view, image) for view in pixels for image in originals.astype(np.float32))
    assert pixels.min() >= 0 and pixels.max() <= 255
    np.testing.assert_array_equal(taught, np.argmax(teacher.predict_on_batch(pixels), axis=1))  # the view shown


def test_pool_is_refused_outside_the_staged_recipe():
    with pytest.raises(SystemExit):
        pretrain.parse_args(["--model", "vit_ti16", "--pool", "640"])


def test_a_distilled_model_saves_a_standard_vit_backbone_and_its_true_label_head(tmp_path):
    model = build("vit_ti8", len(SHAPE_CLASSES), SIZE, "none")
    distillation_trainer(model, len(SHAPE_CLASSES))
    out = pretrain.save_backbone(model, "vit_ti8", tmp_path / "demo_vit_ti8_64.npz")
    with np.load(out) as npz:  # the keys of a standard ViT-Ti/8: no distillation head, no extra token
        assert set(npz.files) == set(checkpoint_key_table(build("vit_ti8", 2, SIZE).get_layer("backbone")))
    kernel, bias = load_head(out)
    np.testing.assert_array_equal(kernel, keras.ops.convert_to_numpy(model.get_layer("head").kernel))
    np.testing.assert_array_equal(bias, keras.ops.convert_to_numpy(model.get_layer("head").bias))


class _Classifier:
    """A stand-in classifier that gets the first `right` held-out images right."""

    def __init__(self, right: int):
        self.right = right

    def predict(self, images, batch_size, verbose):
        labels = np.arange(len(images)) % len(SHAPE_CLASSES)
        labels[self.right:] += 1
        return np.eye(len(SHAPE_CLASSES) + 1)[labels]


def test_curve_rows_count_steps_and_images_across_stages(tmp_path):
    args = _stage_args(curve=tmp_path / "curve.csv", init="demo.npz", distill="mobilenet_v2")
    progress = {"steps": 0, "eval_seconds": 0.0, "started": 0.0}
    held_out = make_shapes(10, 32, seed=1)
    for stage, right in ((1, 5), (2, 8)):
        callback = pretrain.StreamProgress(_Classifier(right), held_out, 2, stage, args, progress)
        callback.params = {"steps": 3}
        callback.on_train_begin()
        for batch in range(3):
            callback.on_train_batch_end(batch, {"loss": 1.0})
        callback.on_train_end({"loss": 0.5})
    rows = list(csv.DictReader((tmp_path / "curve.csv").open()))
    assert [(r["stage"], r["step"], r["images"], r["held_out_accuracy"]) for r in rows] == [
        ("1", "0", "0", "0.5000"), ("1", "2", "8", "0.5000"), ("1", "3", "12", "0.5000"),
        ("2", "5", "20", "0.8000"), ("2", "6", "24", "0.8000")]
    assert {r["run"] for r in rows} == {"distill_mobilenet_v2"}
    assert pretrain.distillation_name(_stage_args(distill="mobilenet_v2", distill_temperature=3.0)) == \
        "distill_soft3_mobilenet_v2"
