"""Frozen-layer cutoffs: which backbone layers train in each phase.

A cutoff is a position in the backbone's top-level layer list; everything before it stays frozen in phase 2.
Users name it as a layer index ("100"), a layer name ("block_13_expand"), or for ViTs a block count
("blocks:8" = patch embedding, class token, position embedding and encoder blocks 0-7 frozen).
BatchNormalization layers always stay frozen, which in Keras 3 also keeps them in inference mode.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import keras
import numpy as np

from poc.errors import UserError
from poc.models.registry import ModelSpec


@dataclass(frozen=True)
class CutoffChoice:
    value: str  # what --fine-tune-at takes
    label: str  # what the dashboard shows
    frozen_layers: int
    trainable_params: int  # of the whole classifier in phase 2 with this cutoff


def resolve_cutoff(backbone: keras.Model, cutoff: str | int | None, spec: ModelSpec) -> int:
    """Index into backbone.layers: layers[:index] stay frozen."""
    layers = backbone.layers
    value = cutoff_text(cutoff, spec)
    if re.fullmatch(r"-?\d+", value):
        index = int(value)
        if not 0 <= index <= len(layers):
            raise UserError(f"--fine-tune-at {index} is out of range: {spec.name}'s backbone has {len(layers)} "
                            f"layers, so use 0 (train all) to {len(layers)} (freeze all)")
        return index
    if value.startswith("blocks:"):
        blocks = [i for i, layer in enumerate(layers) if re.fullmatch(r"encoderblock_\d+", layer.name)]
        if not blocks:
            raise UserError(f"--fine-tune-at {value}: {spec.name} has no encoder blocks; "
                            "use a layer index or name")
        k = value.split(":", 1)[1]
        if not k.isdigit() or int(k) > len(blocks):
            raise UserError(f"--fine-tune-at {value} is out of range; {spec.name} has {len(blocks)} encoder "
                            f"blocks, so use blocks:0 to blocks:{len(blocks)}")
        k = int(k)
        return blocks[k] if k < len(blocks) else blocks[-1] + 1
    names = [layer.name for layer in layers]
    if value in names:
        return names.index(value)
    close = [n for n in names if value.lower() in n.lower()][:5]
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise UserError(f"--fine-tune-at {value!r} is not a layer of {spec.name}'s backbone{hint}; use a layer index "
                    f"0-{len(layers)}, a layer name, or blocks:K for ViTs")


def cutoff_text(cutoff: str | int | None, spec: ModelSpec) -> str:
    """The cutoff as the user wrote it, or the model's default: the one place the default is applied."""
    return spec.default_cutoff if cutoff is None else str(cutoff).strip()


class _InferenceCall(keras.layers.Layer):
    """Calls the wrapped backbone with training=False whatever `fit` asks: Keras 3 functional models pass
    fit's training=True to every nested call, overriding a training=False written into the graph."""

    def __init__(self, backbone: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone

    def call(self, x):
        return self.backbone(x, training=False)

    def compute_output_shape(self, input_shape):
        return self.backbone.compute_output_shape(input_shape)


def frozen_view(model: keras.Model) -> keras.Model:
    """The classifier for phase-1 `fit`, sharing every weight with `model`, with the frozen backbone in
    inference mode (as the Keras transfer-learning guide does): BatchNorm uses its moving statistics, and
    Dropout / stochastic depth inside the backbone (EfficientNet) are off. Save weights from `model`."""
    pixels = keras.Input(model.input_shape[1:], name="pixels")
    x = model.get_layer("preprocess")(pixels)
    x = _InferenceCall(model.get_layer("backbone"), name="frozen_backbone")(x)
    x = model.get_layer("dropout")(x)
    return keras.Model(pixels, model.get_layer("head")(x), name=f"{model.name}_frozen"[:64])


def freeze_backbone(model: keras.Model) -> None:
    """Phase 1: the whole backbone frozen, only the head trains."""
    model.get_layer("backbone").trainable = False


def unfreeze_from(model: keras.Model, index: int) -> None:
    """Phase 2: backbone layers from `index` on train, except BatchNormalization (stays in inference mode)."""
    backbone = model.get_layer("backbone")
    backbone.trainable = True
    for i, layer in enumerate(backbone.layers):
        layer.trainable = i >= index
    for layer in _all_layers(backbone):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def count_params(weights) -> int:
    return int(sum(np.prod(w.shape) for w in weights))


def trainable_count(model: keras.Model) -> int:
    return count_params(model.trainable_weights)


def cutoff_choices(model: keras.Model, spec: ModelSpec) -> list[CutoffChoice]:
    """The cutoffs worth offering (block boundaries) with the phase-2 trainable count of each.

    Each count is measured by applying the cutoff exactly as training does, then the model is put back in its
    phase-1 state (backbone frozen).
    """
    backbone = model.get_layer("backbone")
    layers = backbone.layers
    pattern = re.compile(spec.cutoff_pattern)
    blocks = [i for i, layer in enumerate(layers) if layer.name.startswith("encoderblock_")]
    if blocks:
        candidates = [(f"blocks:{k}", _vit_label(k, len(blocks)), i) for k, i in enumerate(blocks)]
        candidates.append((f"blocks:{len(blocks)}", f"freeze embedding + all {len(blocks)} blocks "
                           "(train the final norm)", blocks[-1] + 1))
    else:
        candidates = [("0", "train the whole backbone", 0)]
        candidates += [(layer.name, f"freeze {i} layers, train from {layer.name}", i)
                       for i, layer in enumerate(layers) if i > 0 and pattern.match(layer.name)]
    candidates.append((str(len(layers)), "freeze the whole backbone (head only)", len(layers)))
    choices = []
    for value, label, index in candidates:
        unfreeze_from(model, index)
        choices.append(CutoffChoice(value, label, index, trainable_count(model)))
    freeze_backbone(model)
    return choices


def _vit_label(k: int, depth: int) -> str:
    if k == 0:
        return f"train all {depth} blocks (patch + position embedding frozen)"
    return f"freeze embedding + blocks 0-{k - 1}, train blocks {k}-{depth - 1}"


def _all_layers(layer: keras.layers.Layer, seen: set[int] | None = None):
    """The layer and every layer nested in it through models (a ViT's encoder blocks, their MLP), depth first,
    each once. Sublayers that a plain layer keeps for itself (MultiHeadAttention's projections) have no public
    listing; none of them holds a BatchNormalization in the registered models."""
    seen = set() if seen is None else seen
    if id(layer) in seen:
        return
    seen.add(id(layer))
    yield layer
    if isinstance(layer, keras.Model):
        for inner in layer.layers:
            yield from _all_layers(inner, seen)
