"""KerasHub image backbones (`keras_hub:<preset>`) as a ViTrine backbone and its preprocessing.

    build_keras_hub    the backbone "backbone": the preset's weights (--weights imagenet, the default) or its
                       config with random weights (--weights none), at --image-size
    build_preprocess   the classifier's "preprocess" layer: the preset's image converter (rescale, normalise)
    cnn_cutoffs        a CNN preset's cutoff choices (stage starts), read from its layer names

Transformers (ViT, DeiT, DINOv2/v3, SigLIP and CLIP image towers) are rewired block by block
(poc.models.kerashub_blocks), so `blocks:K` cutoffs and attention rollout work as for the project's own ViT.
CNNs keep KerasHub's own layer graph, extended by a `feature_map` layer (Grad-CAM reads it) and global average
pooling; their top-level layers are KerasHub's, so cutoffs name them.

Image size: DINOv3 has no learned position embeddings (RoPE); for ViT, DeiT, DINOv2, SigLIP and CLIP at a size
other than the preset's, the backbone is rebuilt at the new size and its position embeddings resized bicubically
(as timm and DINOv2 itself do). A CNN takes any size.
"""

from __future__ import annotations

import contextlib
import re

import keras
import numpy as np
from keras import ops

from poc.errors import UserError
from poc.models.kerashub_blocks import transformer_backbone
from poc.models.kerashub_presets import PREFIX, SIZE_FREE, PresetInfo, describe, not_downloaded

CNN_SIZE_KEYS = ("image_shape", "input_shape")  # EfficientNet names it input_shape
_STAGE = re.compile(r"^([A-Za-z]+_?\d+)")  # stack2_block0_1_conv -> stack2, block6a_ -> block6, block_3_0 -> block_3


def preset_info(spec) -> PresetInfo:
    return describe(spec.name[len(PREFIX):])


def build_keras_hub(spec, image_size: int, weights: str) -> keras.Model:
    """Backbone "backbone": (B, S, S, 3) converted pixels -> (B, D) pooled features (class token, else global
    average pooling). `weights`: "imagenet" (the preset's own pretrained weights) or "none" (random)."""
    if weights not in ("none", "imagenet"):
        raise UserError(f"--weights {weights} is not used by {spec.name}: a KerasHub preset brings its own weights "
                        "(the default) or none (--weights none); save other weights as a preset directory")
    info = preset_info(spec)
    hub = image_backbone(info, image_size, load_weights=weights != "none")
    if info.family == "vit":
        return transformer_backbone(hub, info, image_size)
    return cnn_backbone(hub)


def image_backbone(info: PresetInfo, image_size: int, load_weights: bool):
    """The preset's image backbone (a SigLIP / CLIP preset's vision tower) taking `image_size` px images."""
    import keras_hub

    size = (image_size, image_size, 3)
    overrides = {}
    if info.class_name in SIZE_FREE:
        overrides["image_shape"] = size
    elif info.family == "cnn":
        overrides = {key: size for key in CNN_SIZE_KEYS if key in info.config}
    with _load_errors(info):
        full = keras_hub.models.Backbone.from_preset(info.source, load_weights=load_weights, **overrides)
    hub = getattr(full, "vision_encoder", full)
    if info.family == "vit" and info.class_name not in SIZE_FREE and _built_sizes(hub) != {image_size}:
        hub = resized(hub, image_size)
    return hub


def _built_sizes(hub) -> set:
    """The image sizes a transformer was built for: its input, and its position embeddings' (DINOv2 keeps those
    at 518 px in its presets and interpolates at every call)."""
    config = hub.get_config()
    return {int(config[key][0]) for key in ("image_shape", "position_embedding_shape") if config.get(key)}


def resized(hub, image_size: int):
    """The same backbone built for `image_size` px, every weight copied; position embeddings (N, D) or
    (1, N, D) over prefix tokens + a g x g grid resized bicubically to the new grid, integer position ids renumbered.
    DINOv2 could interpolate at every call instead, but it then saves its weights interpolated back to its own
    grid and forward again when loading: a fine-tuned run would not reload exactly."""
    config = {**hub.get_config(), "image_shape": [image_size, image_size, 3]}
    if "position_embedding_shape" in config:  # DINOv2: its grid is the new one, nothing left to interpolate
        config["position_embedding_shape"] = [image_size, image_size, 3]
    new = type(hub).from_config(config)
    old_weights, new_weights = hub.weights, new.weights
    if [w.name for w in old_weights] != [w.name for w in new_weights]:
        raise UserError(f"cannot resize {type(hub).__name__} to {image_size} px: its weights differ in structure")
    for old, target in zip(old_weights, new_weights):
        if tuple(old.shape) == tuple(target.shape):
            target.assign(old)
        elif "int" in str(target.dtype):
            target.assign(np.arange(int(np.prod(target.shape))).reshape(target.shape))
        else:
            target.assign(_resize_positions(np.asarray(old), tuple(target.shape)))
    return new


def _resize_positions(table: np.ndarray, shape: tuple) -> np.ndarray:
    """(..., N_old, D) -> `shape` (..., N_new, D): the prefix tokens kept, the square grid resized bicubically."""
    old, new, width = table.shape[-2], shape[-2], table.shape[-1]
    grid = int(np.sqrt(old))
    prefix = old - grid * grid
    new_grid = int(round(np.sqrt(new - prefix)))
    if new_grid * new_grid != new - prefix or table.shape[-1] != shape[-1]:
        raise UserError(f"cannot resize a position embedding of shape {table.shape} to {shape}")
    flat = table.reshape(old, width)
    patches = flat[prefix:].reshape(1, grid, grid, width).astype(np.float32)
    resized = ops.image.resize(patches, (new_grid, new_grid), interpolation="bicubic")  # (1, g', g', D)
    rows = np.concatenate([flat[:prefix], np.asarray(resized).reshape(-1, width)])  # (N_new, D)
    return rows.reshape(shape).astype(table.dtype)


def cnn_backbone(hub) -> keras.Model:
    """KerasHub's CNN graph + `feature_map` (its last spatial output; HGNetV2's deepest stage) + average pooling."""
    out = hub.output
    if isinstance(out, dict):
        out = list(out.values())[-1]
    fmap = keras.layers.Identity(name="feature_map")(out)  # (B, h, w, K)
    features = keras.layers.GlobalAveragePooling2D(name="global_pool")(fmap)  # (B, K)
    return keras.Model(hub.inputs[0], features, name="backbone")


def cnn_cutoffs(info: PresetInfo) -> list[str]:
    """The first layer of each stage (stack2, block6, transition1 ... by the leading word and number of the layer
    names) that holds weights and follows a layer with weights; for a backbone without such names (HGNetV2: an
    embedder and an encoder) every top-level layer with weights but the first. Built from the config alone."""
    layers = cnn_backbone(image_backbone(info, info.default_image_size, load_weights=False)).layers
    weighted = {}
    for layer in layers:
        match = _STAGE.match(layer.name)
        if match:
            weighted[match.group(1)] = weighted.get(match.group(1), False) or bool(layer.weights)
    names, seen, before = [], set(), False
    for layer in layers:
        match = _STAGE.match(layer.name)
        key = match.group(1) if match else None
        if key and key not in seen and weighted[key] and before:
            names.append(layer.name)
        seen.add(key)
        before = before or bool(layer.weights)
    if not names:
        names = [layer.name for layer in layers if layer.weights][1:]
    return names


@keras.saving.register_keras_serializable(package="vitrine")
class PresetRescale(keras.layers.Layer):
    """The arithmetic of a KerasHub image converter: pixels * scale + offset, per channel or for all. The input
    is already at the run's size (the pipeline resizes), so the converter's resize is the identity here."""

    def __init__(self, scale=None, offset=None, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.offset = scale, offset

    def call(self, x):  # (B, S, S, 3) in [0, 255]
        x = ops.cast(x, self.compute_dtype)
        if self.scale is not None:
            x = x * ops.convert_to_tensor(np.asarray(self.scale, np.float32), dtype=self.compute_dtype)
        if self.offset is not None:
            x = x + ops.convert_to_tensor(np.asarray(self.offset, np.float32), dtype=self.compute_dtype)
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}


UNIT_SCALE = 1 / 255.0  # a preset saved without an image converter: pixels to [0, 1]


def build_preprocess(spec, image_size: int) -> keras.layers.Layer:
    """The classifier's "preprocess" layer from the preset's image converter (image_converter.json); a preset
    without one (a bare `Backbone.save_to_preset`) scales pixels to [0, 1]."""
    import keras_hub

    info = preset_info(spec)
    try:
        with _load_errors(info):
            converter = keras_hub.layers.ImageConverter.from_preset(info.source)
        scale, offset = converter.scale, converter.offset
    except FileNotFoundError:  # no image_converter.json in the preset
        scale, offset = UNIT_SCALE, None
    return PresetRescale(_plain(scale), _plain(offset), name="preprocess")


def _plain(value):
    """A converter's scale / offset as JSON-able floats (a number or one per channel)."""
    if value is None:
        return None
    array = np.asarray(value, np.float64).reshape(-1)
    return float(array[0]) if array.size == 1 else [float(v) for v in array]


@contextlib.contextmanager
def _load_errors(info: PresetInfo):
    """A download that fails while loading a named preset (config, converter or weights) becomes the offline
    message; a missing optional file (FileNotFoundError) passes through to the caller."""
    try:
        yield
    except (UserError, FileNotFoundError):
        raise
    except Exception as exc:  # noqa: BLE001 - narrowed below
        text = f"{type(exc).__name__}: {exc}"
        if info.source == info.preset and any(s in text for s in (
                "ConnectionError", "Max retries", "Name or service", "Temporary failure in name resolution",
                "Network is unreachable", "Connection refused", "timed out", "NameResolution")):
            raise UserError(not_downloaded(info.preset, text[:200])) from None
        raise
