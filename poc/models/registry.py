"""One registry: model name -> builder, preprocessing, default size, cutoff choices, explanation method.

A new backbone is one entry here. Importing this module does not import TensorFlow (the CLI validates names
before paying for it); builders import lazily.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from poc.errors import UserError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str  # "cnn" | "vit" | "hub"
    description: str
    default_image_size: int
    min_image_size: int
    preprocessing: str  # a key of poc.models.layers.PREPROCESSING
    builder: str  # "module:function" called as f(spec, image_size, weights) -> backbone keras.Model
    default_cutoff: str  # phase-2 cutoff when --fine-tune-at is not given
    cutoff_pattern: str  # regex over backbone layer names: the layers offered as cutoff choices
    explanation: str  # "attention_rollout" | "gradcam" | "none"
    last_conv: str | None = None  # Grad-CAM target layer inside the backbone
    app: str | None = None  # keras.applications constructor name
    patch: int = 1  # image size must be a multiple of this

    def load_builder(self) -> Callable:
        import importlib

        module, func = self.builder.split(":")
        return getattr(importlib.import_module(module), func)


_APPS = "poc.models.cnn:build_application"
_VIT = "poc.models.vit_backbones:build_vit"
_HUB = "poc.models.hub:build_hub"

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec("mobilenet_v2", "cnn", "MobileNetV2 + global average pooling (Sandler et al. 2018)", 224, 32,
                  "tf", _APPS, "block_13_expand", r"^(block_\d+_expand|Conv_1)$", "gradcam", "out_relu",
                  app="MobileNetV2"),
        ModelSpec("resnet50", "cnn", "ResNet50 + global average pooling", 224, 32, "caffe", _APPS,
                  "conv5_block1_1_conv", r"^conv\d_block\d+_1_conv$", "gradcam", "conv5_block3_out",
                  app="ResNet50"),
        ModelSpec("vgg16", "cnn", "VGG16 + global average pooling", 224, 32, "caffe", _APPS,
                  "block5_conv1", r"^block\d_conv1$", "gradcam", "block5_conv3", app="VGG16"),
        ModelSpec("inception_resnet_v2", "cnn", "InceptionResNetV2 + global average pooling", 299, 75, "tf",
                  _APPS, "mixed_7a", r"^(mixed_(5b|6a|7a)|block(35|17|8)_\d+_ac|conv_7b)$", "gradcam",
                  "conv_7b_ac", app="InceptionResNetV2"),
        ModelSpec("efficientnet_b0", "cnn", "EfficientNetB0 + global average pooling", 224, 32, "raw", _APPS,
                  "block6a_expand_conv", r"^block\d+a_(expand_conv|dwconv)$", "gradcam", "top_activation",
                  app="EfficientNetB0"),
        ModelSpec("vit_b32", "vit", "ViT-B/32 (Dosovitskiy et al. 2020), 12 blocks, width 768", 224, 32, "tf",
                  _VIT, "blocks:8", r"^encoderblock_\d+$", "attention_rollout", patch=32),
        ModelSpec("vit_b16", "vit", "ViT-B/16, 12 blocks, width 768", 224, 32, "tf", _VIT, "blocks:8",
                  r"^encoderblock_\d+$", "attention_rollout", patch=16),
        ModelSpec("vit_s16", "vit", "ViT-S/16, 12 blocks, width 384", 224, 32, "tf", _VIT, "blocks:8",
                  r"^encoderblock_\d+$", "attention_rollout", patch=16),
        ModelSpec("vit_ti16", "vit", "ViT-Ti/16, 12 blocks, width 192 (fast CPU demos)", 224, 32, "tf", _VIT,
                  "blocks:8", r"^encoderblock_\d+$", "attention_rollout", patch=16),
    ]
}

HUB_PREFIX = "hub:"


def hub_spec(name: str) -> ModelSpec:
    """A TF-Hub image feature-vector SavedModel: frozen whole in phase 1, trainable whole in phase 2."""
    return ModelSpec(name, "hub", f"TF-Hub feature vector {name[len(HUB_PREFIX):]}", 224, 32, "unit", _HUB,
                     "0", r"^$", "none")


def get_spec(name: str) -> ModelSpec:
    if name.startswith(HUB_PREFIX):
        if len(name) == len(HUB_PREFIX):
            raise UserError("--model hub: needs a handle or a local SavedModel path, e.g. hub:/path/to/model")
        return hub_spec(name)
    try:
        return MODELS[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}; choose from {', '.join(MODELS)} or hub:<handle-or-path>") \
            from None


def model_names() -> list[str]:
    return list(MODELS)
