"""Classifiers: raw pixels in [0, 255] -> backbone preprocessing -> backbone -> dropout -> softmax head.

`build` is the one constructor used by training, evaluation, the dashboard and the tests; a finished run is
rebuilt from its run.json with it and then given its saved weights.
"""

from __future__ import annotations

import contextlib
import functools

from poc.models.registry import VIT_BUILDER, ModelSpec, get_spec


# Google's published ViT checkpoints: ImageNet-21k pretraining, ImageNet-1k fine-tuning. The fine-tuning size is
# 224 px for B/16 ("-224"), S/16 and Ti/16 ("res_224"), but 384 px for B/32 (ViT-B_32.npz: a 12 x 12 patch grid);
# the loader resizes the position embedding to the run's --image-size (7 x 7 at 224 px), as the paper's code does.
VIT_IMAGENET_CHECKPOINTS = {
    "vit_b32": "https://storage.googleapis.com/vit_models/imagenet21k+imagenet2012/ViT-B_32.npz",
    "vit_b16": "https://storage.googleapis.com/vit_models/imagenet21k+imagenet2012/ViT-B_16-224.npz",
    "vit_s16": "https://storage.googleapis.com/vit_models/augreg/"
               "S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_224.npz",
    "vit_ti16": "https://storage.googleapis.com/vit_models/augreg/"
                "Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_224.npz",
}


def resolve_image_size(spec: ModelSpec, image_size: int | None) -> int:
    from poc.errors import UserError

    size = image_size or spec.default_image_size
    if size < spec.min_image_size:
        raise UserError(f"--image-size {size} is too small for {spec.name}; it needs at least "
                        f"{spec.min_image_size} px")
    if size % spec.patch:
        raise UserError(f"--image-size {size} is not a multiple of {spec.name}'s patch size {spec.patch}; "
                        f"try {max(spec.patch, size // spec.patch * spec.patch)}")
    return size


def resolve_weights(name: str, weights: str, image_size: int) -> str:
    """What `--weights` names for `name` at `image_size`: "none", "imagenet", a URL, or an existing file (the
    project's offline-pretrained demo backbones, `demo`, resolve to theirs). UserError when there is none."""
    from pathlib import Path

    from poc.errors import UserError

    if weights in ("none", "imagenet") or "://" in weights:
        return weights
    if weights == "demo":  # the project's own offline-pretrained backbones (poc/pretrained/), not ImageNet
        from poc.models.pretrained import demo_weights_path

        return str(demo_weights_path(name, image_size))
    if not Path(weights).exists():
        raise UserError(f"--weights {weights}: no such file; use none, imagenet or a checkpoint path")
    return weights


DROPOUT = 0.2  # before the softmax head, unless a run sets its own (RunConfig.dropout defaults to this)


def build(name: str, num_classes: int, image_size: int | None = None, weights: str = "none",
          dropout: float = DROPOUT):
    """The full classifier as a Keras model: (N, S, S, 3) float pixels in [0, 255] -> (N, C) probabilities."""
    import keras

    from poc.errors import UserError
    from poc.models.layers import Preprocess

    spec = get_spec(name)
    if num_classes < 2:
        raise UserError(f"a classifier needs at least 2 classes, got {num_classes}")
    size = resolve_image_size(spec, image_size)
    weights = resolve_weights(spec.name, weights, size)
    backbone_weights = weights
    google_vit = spec.family == "vit" and spec.builder == VIT_BUILDER  # not a KerasHub transformer
    if google_vit and weights not in ("none",):
        backbone_weights = "none"  # the checkpoint also holds the head: loaded below
    with _download_errors(spec.name, weights):
        backbone = spec.load_builder()(spec, size, backbone_weights)

    pixels = keras.Input((size, size, 3), name="pixels")  # (B, S, S, 3) in [0, 255]
    if spec.preprocessing == "keras_hub":  # the preset's own image converter
        from poc.models.kerashub import build_preprocess

        x = build_preprocess(spec, size)(pixels)
    else:
        x = Preprocess(spec.preprocessing, name="preprocess")(pixels)
    features = backbone(x)  # (B, D)
    x = keras.layers.Dropout(dropout, name="dropout")(features)
    probs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="head")(x)  # (B, C)
    model = keras.Model(pixels, probs, name=f"{spec.name.replace(':', '_').replace('/', '_')}_classifier"[:64])

    if google_vit and weights != "none":
        from poc.models.vit_checkpoint import load_vit_checkpoint

        source = VIT_IMAGENET_CHECKPOINTS[spec.name] if weights == "imagenet" else weights
        with _download_errors(spec.name, weights):
            load_vit_checkpoint(backbone, source, head=model.get_layer("head"))
    return model


@functools.lru_cache(maxsize=4)
def probe(name: str, image_size: int):
    """A 2-class classifier with random weights, built once per (model, size): enough to list layers and count
    parameters (the sidebar's cutoffs, a sweep's cutoffs). Shared: whoever toggles its trainable flags restores
    them (phase-1 frozen)."""
    return build(name, 2, image_size, "none")


def pretraining_kind(weights: str) -> str:
    """What a run's backbone started from, in kinds a comparison can name: imagenet, demo, none, checkpoint."""
    return weights if weights in ("imagenet", "demo", "none") else "checkpoint"


@contextlib.contextmanager
def _download_errors(name: str, weights: str):
    """A failed weights download (offline, proxy, 404) becomes a message with the offline alternatives.
    keras.utils.get_file shows the download's progress bar; it raises a bare Exception on failure."""
    from poc.errors import UserError

    try:
        yield
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - narrowed by the message below
        text = f"{type(exc).__name__}: {exc}"
        if not any(s in text for s in ("URL fetch failure", "urlopen", "HTTP Error", "Name or service",
                                        "Temporary failure in name resolution", "Network is unreachable",
                                        "Connection refused", "timed out", "URLError")):
            raise
        raise UserError(f"--weights {weights}: could not download the {name} weights ({exc}). Without internet "
                        f"use --weights demo (the project's offline-pretrained backbones, 64 px: mobilenet_v2, "
                        f"and the demo ViT), --weights none (random; phase 1 then freezes a random backbone), or "
                        f"a local checkpoint path") from None

