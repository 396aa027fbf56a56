"""One registry: model name -> builder, preprocessing, default size, cutoff choices, explanation method.

A new backbone is one entry here. Importing this module does not import TensorFlow (the CLI validates names
before paying for it); builders import lazily.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from poc.errors import UserError
from poc.models.vit_variants import VIT_VARIANTS, describe


@dataclass(frozen=True, kw_only=True)
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
        ModelSpec(name="mobilenet_v2", family="cnn", description="MobileNetV2 + global average pooling "
                  "(Sandler et al. 2018)", default_image_size=224, min_image_size=32, preprocessing="tf",
                  builder=_APPS, default_cutoff="block_13_expand", cutoff_pattern=r"^(block_\d+_expand|Conv_1)$",
                  explanation="gradcam", last_conv="out_relu", app="MobileNetV2"),
        ModelSpec(name="resnet50", family="cnn", description="ResNet50 + global average pooling",
                  default_image_size=224, min_image_size=32, preprocessing="caffe", builder=_APPS,
                  default_cutoff="conv5_block1_1_conv", cutoff_pattern=r"^conv\d_block\d+_1_conv$",
                  explanation="gradcam", last_conv="conv5_block3_out", app="ResNet50"),
        ModelSpec(name="vgg16", family="cnn", description="VGG16 + global average pooling", default_image_size=224,
                  min_image_size=32, preprocessing="caffe", builder=_APPS, default_cutoff="block5_conv1",
                  cutoff_pattern=r"^block\d_conv1$", explanation="gradcam", last_conv="block5_conv3", app="VGG16"),
        ModelSpec(name="inception_resnet_v2", family="cnn", description="InceptionResNetV2 + global average "
                  "pooling", default_image_size=299, min_image_size=75, preprocessing="tf", builder=_APPS,
                  default_cutoff="mixed_7a", cutoff_pattern=r"^(mixed_(5b|6a|7a)|block(35|17|8)_\d+_ac|conv_7b)$",
                  explanation="gradcam", last_conv="conv_7b_ac", app="InceptionResNetV2"),
        ModelSpec(name="efficientnet_b0", family="cnn", description="EfficientNetB0 + global average pooling",
                  default_image_size=224, min_image_size=32, preprocessing="raw", builder=_APPS,
                  default_cutoff="block6a_expand_conv", cutoff_pattern=r"^block\d+a_(expand_conv|dwconv)$",
                  explanation="gradcam", last_conv="top_activation", app="EfficientNetB0"),
        *(ModelSpec(name=name, family="vit", description=describe(name, template), default_image_size=224,
                    min_image_size=32, preprocessing="tf", builder=_VIT, default_cutoff="blocks:8",
                    cutoff_pattern=r"^encoderblock_\d+$", explanation="attention_rollout",
                    patch=VIT_VARIANTS[name].patch)
          for name, template in [  # sizes from the variant table
              ("vit_b32", "ViT-{variant} (Dosovitskiy et al. 2020), {depth} blocks, width {width}"),
              ("vit_b16", "ViT-{variant}, {depth} blocks, width {width}"),
              ("vit_s16", "ViT-{variant}, {depth} blocks, width {width}"),
              ("vit_ti16", "ViT-{variant}, {depth} blocks, width {width} (fast CPU demos)"),
              ("vit_ti8", "ViT-{variant}, {depth} blocks, width {width}, {patch} px patches (the offline demo ViT)"),
          ]),
    ]
}

HUB_PREFIX = "hub:"


def hub_spec(name: str) -> ModelSpec:
    """A TF-Hub image feature-vector SavedModel: frozen whole in phase 1, trainable whole in phase 2."""
    return ModelSpec(name=name, family="hub", description=f"TF-Hub feature vector {name[len(HUB_PREFIX):]}",
                     default_image_size=224, min_image_size=32, preprocessing="unit", builder=_HUB,
                     default_cutoff="0", cutoff_pattern=r"^$", explanation="none")


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
