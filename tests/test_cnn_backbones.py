"""Every CNN in the registry: forward pass, phase-1 / phase-2 trainable counts, cutoffs, Grad-CAM target.

Expectations come from outside the code under test: published keras.applications parameter counts, the trash
reference study's InceptionResNetV2 figure, and frozen counts summed layer by layer from the architecture.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from poc.errors import UserError
from poc.models import MODELS, build
from poc.models.cutoffs import (
    count_params,
    cutoff_choices,
    freeze_backbone,
    resolve_cutoff,
    trainable_count,
    unfreeze_from,
)

CNNS = [name for name, spec in MODELS.items() if spec.family == "cnn"]
CLASSES = 6
SIZES = {"inception_resnet_v2": 75}  # its stem needs >= 75 px; the others run at 32
# keras.applications, include_top=False, pooling="avg": published counts (https://keras.io/api/applications/).
PUBLISHED_NO_TOP = {"MobileNetV2": 2_257_984, "ResNet50": 23_587_712, "VGG16": 14_714_688,
                    "EfficientNetB0": 4_049_571}


def test_the_registry_lists_the_five_reference_cnns_then_todays_keras_applications():
    assert CNNS == ["mobilenet_v2", "resnet50", "vgg16", "inception_resnet_v2", "efficientnet_b0",
                    "convnext_tiny", "convnext_small", "efficientnetv2_b0", "efficientnetv2_s"]


@pytest.fixture(scope="module", params=CNNS)
def built(request):
    """(spec, classifier at a small size), each CNN built once per module with random weights."""
    spec = MODELS[request.param]
    model = build(spec.name, CLASSES, SIZES.get(spec.name, 32), "none")
    freeze_backbone(model)
    return spec, model


def pixels(model: keras.Model, n: int = 2, seed: int = 0) -> np.ndarray:
    size = model.input_shape[1]
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype(np.float32)


def frozen_by_architecture(backbone: keras.Model, index: int) -> int:
    """Parameters frozen in phase 2: every weight of layers[:index], plus BatchNormalization above the cutoff."""
    below = sum(count_params(layer.weights) for layer in backbone.layers[:index])
    batchnorm_above = sum(count_params(layer.weights) for layer in backbone.layers[index:]
                          if isinstance(layer, keras.layers.BatchNormalization))
    return below + batchnorm_above


def test_forward_gives_finite_probabilities(built):
    spec, model = built
    probs = np.asarray(model(pixels(model), training=False))
    assert probs.shape == (2, CLASSES)
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_phase_one_trains_only_the_head(built):
    spec, model = built
    features = model.get_layer("backbone").output.shape[-1]
    assert trainable_count(model) == features * CLASSES + CLASSES
    assert [w.path for w in model.trainable_weights] == ["head/kernel", "head/bias"]


@pytest.mark.parametrize("which", ["default", "other"])
def test_cutoff_freezes_exactly_the_layers_below_it_and_batchnorm(built, which):
    spec, model = built
    backbone = model.get_layer("backbone")
    choices = {c.value: c for c in cutoff_choices(model, spec)}
    assert trainable_count(model) == backbone.output.shape[-1] * CLASSES + CLASSES  # back in phase 1
    if which == "default":
        value = spec.default_cutoff
        assert value in choices, f"{spec.name}'s default cutoff {value} is not among its offered choices"
    else:  # a second choice strictly between "train all" and "freeze all"
        inner = [v for v, c in choices.items() if 0 < c.frozen_layers < len(backbone.layers)]
        value = inner[len(inner) // 3]
    index = resolve_cutoff(backbone, value, spec)
    assert index == choices[value].frozen_layers
    unfreeze_from(model, index)
    try:
        frozen = model.count_params() - trainable_count(model)
        assert frozen == frozen_by_architecture(backbone, index)
        assert choices[value].trainable_params == trainable_count(model)
        batchnorm = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
        assert not any(layer.trainable for layer in batchnorm)
        assert all(layer.trainable for layer in backbone.layers[index:]
                   if not isinstance(layer, keras.layers.BatchNormalization))
    finally:
        freeze_backbone(model)


def test_every_offered_cutoff_is_a_clean_cut(built):
    """Training "from X" must not split a block: the frozen weighted layers hand a single tensor upwards."""
    spec, model = built
    backbone = model.get_layer("backbone")
    for choice in cutoff_choices(model, spec):
        if not 0 < choice.frozen_layers < len(backbone.layers):
            continue
        # Weightless layers (concat, activation) train or not to no effect: cut at the next weighted layer.
        index = next(i for i in range(choice.frozen_layers, len(backbone.layers)) if backbone.layers[i].weights)
        assert len(tensors_crossing(backbone, index)) == 1, choice.value


def tensors_crossing(backbone: keras.Model, index: int) -> set:
    """The distinct tensors made by layers[:index] and consumed by layers[index:], counting the graph's plain
    operations (ConvNeXt's residual `x + y`) on the side of the cut where they run."""
    operations = backbone.operations  # layers and plain operations, in the order they run
    cut = operations.index(backbone.layers[index])
    frozen = {id(op) for op in operations[:cut]}
    crossing = set()
    for layer in operations[cut:]:
        for node in layer._inbound_nodes:
            for tensor in node.input_tensors:
                history = tensor._keras_history
                if id(history.operation) in frozen:
                    crossing.add((history.operation.name, history.node_index, history.tensor_index))
    return crossing


def test_gradcam_target_is_the_last_feature_map(built):
    spec, model = built
    backbone = model.get_layer("backbone")
    target = backbone.get_layer(spec.last_conv)  # raises if the registry names a missing layer
    assert len(target.output.shape) == 4  # (B, h, w, K)
    after = backbone.layers[backbone.layers.index(target) + 1:]
    spatial = [layer.name for layer in after if layer.weights and len(layer.output.shape) == 4]
    assert not spatial  # ConvNeXt's pooled features keep their LayerNorm, after the pooling


@pytest.mark.parametrize("value, quoted", [("100000", "100000"), ("no_such_layer", "no_such_layer"),
                                           ("blocks:3", "blocks:3"), ("-1", "-1")])
def test_invalid_cutoff_is_rejected_naming_it(built, value, quoted):
    spec, model = built
    with pytest.raises(UserError, match=quoted):
        resolve_cutoff(model.get_layer("backbone"), value, spec)


# With the 1000-class top (features x 1000 + 1000), in millions as https://keras.io/api/applications/ lists them.
PUBLISHED_WITH_TOP_M = {"ConvNeXtTiny": 28.6, "ConvNeXtSmall": 50.2, "EfficientNetV2B0": 7.2, "EfficientNetV2S": 21.6}


@pytest.mark.parametrize("app", sorted(PUBLISHED_WITH_TOP_M))
def test_todays_backbones_have_the_published_parameter_count(app):
    name = next(n for n in CNNS if MODELS[n].app == app)
    backbone = build(name, CLASSES, 224, "none").get_layer("backbone")
    features = backbone.output.shape[-1]
    assert round((backbone.count_params() + features * 1000 + 1000) / 1e6, 1) == PUBLISHED_WITH_TOP_M[app]


@pytest.mark.parametrize("app", sorted(PUBLISHED_NO_TOP))
def test_backbone_has_the_published_parameter_count_at_224(app):
    name = next(n for n in CNNS if MODELS[n].app == app)
    backbone = build(name, CLASSES, 224, "none").get_layer("backbone")
    assert backbone.count_params() == PUBLISHED_NO_TOP[app]


def test_inception_resnet_v2_matches_the_trash_study_counts():
    """Reference study (6-class head on a frozen InceptionResNetV2): 54,345,958 parameters, 9,222 trainable.

    Built at its 75 px minimum: with global average pooling no parameter depends on the input size."""
    model = build("inception_resnet_v2", 6, SIZES["inception_resnet_v2"], "none")
    freeze_backbone(model)
    assert model.count_params() == 54_345_958
    assert trainable_count(model) == 9_222
