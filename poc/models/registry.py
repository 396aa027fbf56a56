"""One registry: model name -> builder, preprocessing, default size, cutoff choices, explanation method.

A new backbone is one entry here. Importing this module does not import TensorFlow (the CLI validates names
before paying for it); builders import lazily. `keras_hub:<preset>` specs are made from the preset's config
(poc.models.kerashub_presets); a CNN preset's cutoffs need its layer names, so that one builds it (random weights).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Callable

from poc.errors import UserError
from poc.models import kerashub_presets
from poc.models.vit_variants import VIT_VARIANTS, describe


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    name: str
    family: str  # "cnn" | "vit" | "hub" (a KerasHub preset is "cnn" or "vit")
    description: str
    default_image_size: int
    min_image_size: int
    preprocessing: str  # a key of poc.models.layers.PREPROCESSING, or "keras_hub": the preset's image converter
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
VIT_BUILDER = _VIT = "poc.models.vit_backbones:build_vit"  # the project's ViT (Google checkpoints)
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
        *(ModelSpec(name=name, family="cnn", description=f"{app} (Liu et al. 2022) + global average pooling",
                    default_image_size=224, min_image_size=32, preprocessing="raw", builder=_APPS,
                    default_cutoff="backbone_downsampling_block_2",  # train the last stage
                    cutoff_pattern=r"^backbone_(downsampling_block_\d+|stage_\d+_block_\d+_depthwise_conv)$",
                    explanation="gradcam", last_conv="backbone_stage_3_block_2_identity", app=app)
          for name, app in [("convnext_tiny", "ConvNeXtTiny"), ("convnext_small", "ConvNeXtSmall")]),
        *(ModelSpec(name=name, family="cnn", description=f"{app} (Tan & Le 2021) + global average pooling",
                    default_image_size=224, min_image_size=32, preprocessing="raw", builder=_APPS,
                    default_cutoff="block6a_expand_conv",  # train the last stage
                    cutoff_pattern=r"^(block1a_project_conv|block\d+a_expand_conv)$",
                    explanation="gradcam", last_conv="top_activation", app=app)
          for name, app in [("efficientnetv2_b0", "EfficientNetV2B0"), ("efficientnetv2_s", "EfficientNetV2S")]),
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
KERAS_HUB_PREFIX = kerashub_presets.PREFIX  # "keras_hub:"


def hub_spec(name: str) -> ModelSpec:
    """A TF-Hub image feature-vector SavedModel: frozen whole in phase 1, trainable whole in phase 2."""
    return ModelSpec(name=name, family="hub", description=f"TF-Hub feature vector {name[len(HUB_PREFIX):]}",
                     default_image_size=224, min_image_size=32, preprocessing="unit", builder=_HUB,
                     default_cutoff="0", cutoff_pattern=r"^$", explanation="none")


@functools.lru_cache(maxsize=32)
def keras_hub_spec(name: str) -> ModelSpec:
    """A KerasHub image-backbone preset: family, sizes and explanation from its config.json; cutoffs `blocks:K`
    for a transformer (2/3 of its blocks frozen by default), stage starts for a CNN (the last stage trains)."""
    info = kerashub_presets.describe(name[len(KERAS_HUB_PREFIX):])
    common = dict(name=name, family=info.family, default_image_size=info.default_image_size,
                  preprocessing="keras_hub", builder="poc.models.kerashub:build_keras_hub")
    if info.family == "vit":
        tokens = "class token" if info.class_token else "average of the patch tokens"
        return ModelSpec(**common, description=f"KerasHub {info.class_name} ({info.depth} blocks, patch {info.patch}; "
                                               f"{tokens}) from {info.preset}",
                         min_image_size=info.patch, patch=info.patch, default_cutoff=f"blocks:{info.depth * 2 // 3}",
                         cutoff_pattern=r"^encoderblock_\d+$",
                         explanation="attention_rollout" if info.class_token else "gradcam",
                         last_conv=None if info.class_token else "patch_grid")
    from poc.models.kerashub import cnn_cutoffs  # imports TensorFlow: a CNN's stages come from its layer names

    stages = cnn_cutoffs(info)
    return ModelSpec(**common, description=f"KerasHub {info.class_name} + global average pooling from {info.preset}",
                     min_image_size=32, default_cutoff=stages[-1] if stages else "0",
                     cutoff_pattern="^(" + "|".join(re.escape(n) for n in stages) + ")$" if stages else r"^$",
                     explanation="gradcam", last_conv="feature_map")


def get_spec(name: str) -> ModelSpec:
    if name.startswith(KERAS_HUB_PREFIX):
        return keras_hub_spec(name.strip())
    if name.startswith(HUB_PREFIX):
        if len(name) == len(HUB_PREFIX):
            raise UserError("--model hub: needs a handle or a local SavedModel path, e.g. hub:/path/to/model")
        return hub_spec(name)
    try:
        return MODELS[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}; choose from {', '.join(MODELS)}, hub:<handle-or-path> or "
                        f"keras_hub:<preset-or-dir>") \
            from None


def model_names() -> list[str]:
    return list(MODELS)
