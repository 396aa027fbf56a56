"""KerasHub image-backbone presets as ViTrine models (`--model keras_hub:<preset>`): which presets are accepted,
and what the registry needs to know about one, read from the preset's config.json alone (no weights).

A preset is either a KerasHub preset name (`dinov2_small`; KerasHub downloads it once into its own cache), a
Kaggle handle (`kaggle://keras/dinov2/keras/dinov2_small/1`), or a local directory written by
`Backbone.save_to_preset`. A local directory is read without TensorFlow; a name needs keras_hub (its table of
built-in presets) and one small download, config.json, given DOWNLOAD_TIMEOUT seconds so that an offline
machine hears why within seconds.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from poc.errors import UserError

PREFIX = "keras_hub:"
DOWNLOAD_TIMEOUT = 15.0  # seconds for config.json of a named preset; the sidebar promises an answer within 30 s
DEFAULT_SIZE = 224  # px: a preset trained larger (DINOv2: 518) runs here, position embeddings interpolated
EXAMPLES = ("dinov2_small", "dinov2_with_registers_small", "dinov3_vit_small_lvd1689m", "siglip_base_patch16_224",
            "vit_base_patch32_224_imagenet21k", "deit_small_distilled_patch16_224_imagenet", "resnet_50_imagenet",
            "efficientnet_b0_ra_imagenet", "mobilenet_v3_large_100_imagenet", "hgnetv2_b4_ssld_stage2_ft_in1k")

# Transformer backbones: the tokens before the patch tokens (class, distillation and register tokens) and whether
# the first is a class token. SigLIP and CLIP presets hold an image and a text tower: the image tower is used.
TRANSFORMERS = ("ViTBackbone", "DeiTBackbone", "DINOV2Backbone", "DINOV3Backbone", "SigLIPBackbone",
                "SigLIPVisionEncoder", "CLIPBackbone", "CLIPVisionEncoder")
CNNS = ("ResNetBackbone", "EfficientNetBackbone", "MobileNetBackbone", "HGNetV2Backbone", "CSPNetBackbone",
        "DenseNetBackbone", "VGGBackbone", "XceptionBackbone")
TOWERS = {"SigLIPBackbone": "SigLIPVisionEncoder", "CLIPBackbone": "CLIPVisionEncoder"}
SIZE_FREE = ("DINOV3Backbone",)  # rotary position embeddings: any patch-multiple image_shape, same weights


@dataclass(frozen=True)
class PresetInfo:
    """What a preset's config.json says about its image backbone."""

    preset: str  # as given after keras_hub: (a name, a handle, or a directory)
    source: str  # what KerasHub loads: the name or handle, or the directory's absolute path
    class_name: str  # the image backbone's class (for SigLIP / CLIP: the vision tower's)
    family: str  # "vit" | "cnn"
    config: dict = field(compare=False, hash=False)  # the image backbone's constructor arguments
    native_size: int | None = None  # the image size the preset was built at, when fixed
    patch: int = 1
    depth: int = 0  # encoder blocks (transformers)
    prefix_tokens: int = 0  # tokens before the patch tokens
    class_token: bool = False  # the first token is a class token (pooled, and the rollout's row)

    @property
    def default_image_size(self) -> int:
        """The preset's own size up to DEFAULT_SIZE, else DEFAULT_SIZE rounded down to a patch multiple."""
        size = self.native_size if self.native_size and self.native_size <= DEFAULT_SIZE else DEFAULT_SIZE
        return max(self.patch, size // self.patch * self.patch)


def accepted_classes() -> str:
    return ", ".join(TRANSFORMERS + CNNS)


def format_problem(text: str) -> str | None:
    """Why `text` (what follows keras_hub:) cannot name a preset, or None: checked without a download."""
    text = text.strip()
    if not text:
        return (f"{PREFIX} needs a KerasHub preset name (e.g. {', '.join(EXAMPLES[:3])}) or a local preset "
                f"directory (keras_hub:/path/to/preset)")
    if "://" in text and not text.startswith("kaggle://"):
        return (f"{PREFIX}{text}: only KerasHub preset names, kaggle:// handles and local preset directories are "
                "accepted")
    if text.startswith("kaggle://") or _looks_like_path(text):
        return None
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", text):
        return (f"{PREFIX}{text} is not a preset name (letters, digits and _ . -) nor a directory; e.g. "
                f"{PREFIX}{EXAMPLES[0]} or {PREFIX}/path/to/preset")
    return None


@functools.lru_cache(maxsize=32)
def describe(text: str) -> PresetInfo:
    """The image backbone a preset holds; UserError for a bad name, a missing directory, a preset that could not
    be downloaded, or a preset that is not an image backbone (a text model, say)."""
    text = text.strip()
    problem = format_problem(text)
    if problem:
        raise UserError(problem)
    if _looks_like_path(text):
        source = str(Path(text).expanduser().resolve())
        config = _local_config(text, Path(source))
    else:
        source, config = text, _remote_config(text)
    return _info(text, source, config)


# ---------------------------------------------------------------- reading config.json

def _looks_like_path(text: str) -> bool:
    return "://" not in text and "/" in text or text.startswith((".", "~")) or Path(text).expanduser().is_dir()


def _local_config(text: str, path: Path) -> dict:
    if not path.is_dir():
        raise UserError(f"{PREFIX}{text}: no such preset directory {path}; give a directory written by "
                        "Backbone.save_to_preset, or a KerasHub preset name")
    config = path / "config.json"
    try:
        return json.loads(config.read_text())
    except FileNotFoundError:
        raise UserError(f"{PREFIX}{text}: {path} holds no config.json; it is not a KerasHub preset directory "
                        "(write one with Backbone.save_to_preset)") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{PREFIX}{text}: {config} cannot be read ({exc})") from None


def _remote_config(text: str) -> dict:
    """config.json of a built-in preset name or a kaggle:// handle, through KerasHub's table and kagglehub."""
    handle = text
    if not text.startswith("kaggle://"):
        import keras_hub  # only here: a name needs KerasHub's table of built-in presets

        presets = keras_hub.models.Backbone.presets
        if text not in presets:
            raise UserError(f"{PREFIX}{text}: KerasHub has no preset of that name (e.g. {', '.join(EXAMPLES[:4])}); "
                            "or give a local preset directory")
        kind = _builtin_class(keras_hub, text)
        if kind not in TRANSFORMERS + CNNS:
            raise UserError(_refusal(text, kind))
        handle = presets[text]["kaggle_handle"]
    path = fetch(handle, "config.json", text)
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{PREFIX}{text}: its config.json cannot be read ({exc})") from None


def fetch(handle: str, filename: str, preset: str, timeout: float | None = None) -> str:
    """Local path of one file of a kaggle:// preset, downloaded (or found in kagglehub's cache) within `timeout`
    seconds; UserError naming the preset and the offline alternative otherwise. The download runs in a daemon
    thread, so a hung connection cannot hold the caller past the timeout."""
    import kagglehub

    timeout = DOWNLOAD_TIMEOUT if timeout is None else timeout
    result: dict = {}

    def download():
        try:
            result["path"] = kagglehub.model_download(handle.removeprefix("kaggle://"), filename)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller below
            result["error"] = exc

    worker = threading.Thread(target=download, name=f"fetch {preset}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise UserError(not_downloaded(preset, f"no answer within {timeout:g} s"))
    if "error" in result:
        exc = result["error"]
        raise UserError(not_downloaded(preset, f"{type(exc).__name__}: {str(exc)[:200]}"))
    return result["path"]


def not_downloaded(preset: str, reason: str) -> str:
    return (f"preset {preset} could not be downloaded (offline?): give a local preset directory "
            f"(keras_hub:/path/to/preset, written by Backbone.save_to_preset on a machine with internet) [{reason}]")


def _builtin_class(keras_hub, name: str) -> str:
    """The backbone class a built-in preset belongs to (accepted classes first: a base class lists its
    subclasses' presets too)."""
    classes = [c for c in dir(keras_hub.models) if c.endswith(("Backbone", "Encoder"))
               and c not in ("Backbone", "FeaturePyramidBackbone")]
    for class_name in sorted(classes, key=lambda c: c not in TRANSFORMERS + CNNS):
        if name in getattr(getattr(keras_hub.models, class_name), "presets", {}):
            return class_name
    return "unknown"


def _refusal(preset: str, class_name: str) -> str:
    return (f"{PREFIX}{preset} is a {class_name} preset, not an image backbone ViTrine can classify with; "
            f"accepted backbone classes: {accepted_classes()}")


# ---------------------------------------------------------------- what config.json says

def _info(text: str, source: str, saved: dict) -> PresetInfo:
    class_name, config = saved.get("class_name"), saved.get("config")
    if not isinstance(class_name, str) or not isinstance(config, dict):
        raise UserError(f"{PREFIX}{text}: config.json names no Keras class; it is not a KerasHub preset written "
                        "by save_to_preset")
    if class_name not in TRANSFORMERS + CNNS:
        raise UserError(_refusal(text, class_name))
    if class_name in TOWERS:
        tower = config.get("vision_encoder") or {}
        class_name, config = tower.get("class_name", TOWERS[class_name]), tower.get("config") or {}
    size = _fixed_size(config.get("image_shape") or config.get("input_shape"))
    if class_name in CNNS:
        return PresetInfo(text, source, class_name, "cnn", config, native_size=size)
    patch = config.get("patch_size")
    patch = int(patch[0] if isinstance(patch, (list, tuple)) else patch)
    prefix = {"ViTBackbone": 1 if config.get("use_class_token", True) else 0,
              "DeiTBackbone": 2,  # class and distillation tokens
              "DINOV2Backbone": 1 + int(config.get("num_register_tokens", 0)),
              "DINOV3Backbone": 1 + int(config.get("num_register_tokens", 4)),
              "SigLIPVisionEncoder": 0, "CLIPVisionEncoder": 1}[class_name]
    return PresetInfo(text, source, class_name, "vit", config, native_size=size, patch=patch,
                      depth=int(config["num_layers"]), prefix_tokens=prefix, class_token=prefix > 0)


def _fixed_size(shape) -> int | None:
    if isinstance(shape, (list, tuple)) and len(shape) == 3 and isinstance(shape[0], int):
        return shape[0]
    return None
