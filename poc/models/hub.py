"""TF-Hub image feature-vector models (or any local SavedModel) as a ViTrine backbone.

`tensorflow_hub.KerasLayer` does not work under Keras 3, so the SavedModel is loaded with a `TFSMLayer`
through its `serving_default` signature. The backbone's top-level layers are [input, hub layer]: the SavedModel
is one opaque layer, so the only cutoffs are "0"/"1" (train it whole) and "2" (keep it frozen).
"""

from __future__ import annotations

from pathlib import Path

import keras

from poc.errors import UserError
from poc.models.registry import HUB_PREFIX, ModelSpec

ENDPOINT = "serving_default"
# Output keys of a serving signature tried in this order when it returns more than one tensor.
FEATURE_KEYS = ("feature_vector", "output_0", "default", "pooled_output")


class HubFeatureLayer(keras.layers.TFSMLayer):
    """A `TFSMLayer` that trains with Keras optimizers and returns a single (B, D) feature tensor.

    TFSMLayer re-tracks the SavedModel's variables under names that keep TensorFlow's ':0' suffix; Adam then
    fails creating '<name>:0_momentum' ("not a valid scope name"), so ':' is replaced like '/' is.
    """

    def __init__(self, filepath, output_key: str | None = None, **kwargs):
        super().__init__(filepath, call_endpoint=ENDPOINT, **kwargs)
        self.output_key = output_key

    def _add_existing_weight(self, weight):
        variable = keras.Variable(
            initializer=weight,  # wraps the SavedModel's own variable: training it changes the signature's output
            trainable=weight.trainable,
            dtype=weight.dtype,
            shape=weight.shape,
            name=weight.name.replace("/", "_").replace(":", "_"),
        )
        self._track_variable(variable)

    def call(self, inputs, training=False):
        outputs = super().call(inputs, training=training)
        if isinstance(outputs, dict):
            outputs = outputs[self.output_key]
        return outputs  # (B, D)

    def get_config(self):
        return {**super().get_config(), "output_key": self.output_key}


def build_hub(spec: ModelSpec, image_size: int, weights: str) -> keras.Model:
    """Backbone "backbone": (B, S, S, 3) pixels in [0, 1] -> (B, D) features of the SavedModel's signature.

    The weights are the SavedModel's own; `weights` other than "none" / "imagenet" are rejected because a hub
    model brings its weights with it.
    """
    handle = spec.name[len(HUB_PREFIX):]
    if weights not in ("none", "imagenet"):
        raise UserError(f"--weights {weights} is not used by {spec.name}: a TF-Hub model brings its own weights; "
                        "leave --weights at its default")
    path = resolve_handle(handle)
    try:
        # float32 even under mixed precision: the signature's input dtype is fixed when it was exported.
        layer = HubFeatureLayer(path, trainable=True, name="hub", dtype="float32")
    except ValueError as exc:  # no serving_default signature
        raise UserError(f"{spec.name}: the SavedModel at {path} has no '{ENDPOINT}' signature ({exc})") from exc
    signature = layer.call_endpoint_fn
    layer.output_key = _feature_key(spec.name, signature.structured_outputs)
    _check_input(spec.name, signature.structured_input_signature, image_size)

    images = keras.Input((image_size, image_size, 3), name="images")  # (B, S, S, 3) in [0, 1]
    features = layer(images)
    if len(features.shape) != 2:
        raise UserError(f"{spec.name} returns {layer.output_key!r} of shape {tuple(features.shape)}, not a "
                        "(batch, features) vector; use an image feature-vector model")
    return keras.Model(images, features, name="backbone")  # (B, D)


def resolve_handle(handle: str) -> str:
    """A local SavedModel directory, or a TF-Hub / Kaggle handle downloaded (once, cached) by tensorflow_hub."""
    if "://" not in handle:
        path = Path(handle).expanduser()
        if not path.is_dir():
            raise UserError(f"hub:{handle}: no such SavedModel directory {path}; give a directory holding "
                            "saved_model.pb or a https:// TF-Hub / Kaggle model handle")
        if not (path / "saved_model.pb").is_file():
            raise UserError(f"hub:{handle}: {path} holds no saved_model.pb; it is not a SavedModel directory")
        return str(path)
    import tensorflow_hub

    try:
        return tensorflow_hub.resolve(handle)
    except Exception as exc:  # URLError, HTTPError, OSError, ValueError: all mean "could not fetch"
        raise UserError(f"could not download hub:{handle} ({type(exc).__name__}: {exc}); TF-Hub models need "
                        "internet access on first use. Offline, download the SavedModel elsewhere and pass "
                        "hub:/local/path") from exc


def _feature_key(name: str, outputs) -> str | None:
    """The serving signature's feature output: the only one, else the first of FEATURE_KEYS present."""
    if not isinstance(outputs, dict):
        return None
    if len(outputs) == 1:
        return next(iter(outputs))
    for key in FEATURE_KEYS:
        if key in outputs:
            return key
    raise UserError(f"{name}: the '{ENDPOINT}' signature returns {sorted(outputs)}; none is a feature vector "
                    f"named {' / '.join(FEATURE_KEYS)}")


def _check_input(name: str, input_signature, image_size: int) -> None:
    """One float image input; a fixed spatial size must equal --image-size."""
    args, kwargs = input_signature
    specs = list(args) + list(kwargs.values())
    if len(specs) != 1:
        raise UserError(f"{name}: the '{ENDPOINT}' signature takes {len(specs)} inputs; an image model takes one")
    spec = specs[0]
    shape = tuple(spec.shape)
    if len(shape) != 4 or shape[-1] not in (3, None):
        raise UserError(f"{name}: the '{ENDPOINT}' signature takes {shape}, not (batch, height, width, 3) images")
    if not spec.dtype.is_floating:
        raise UserError(f"{name}: the '{ENDPOINT}' signature takes {spec.dtype.name} images; ViTrine feeds "
                        "float32 in [0, 1]")
    fixed = [d for d in shape[1:3] if d is not None]
    if fixed and any(d != image_size for d in fixed):
        raise UserError(f"--image-size {image_size} does not fit {name}, which takes {shape[1]}x{shape[2]} "
                        f"images; use --image-size {fixed[0]}")
