"""Models: the registry of specs, the one classifier constructor, cutoffs, checkpoint ports, pretraining.

Re-exports the public API (`poc.models.build`, `poc.models.MODELS`, ...); the code lives in the submodules.
"""

from poc.models.builders import VIT_IMAGENET_CHECKPOINTS, build, pretraining_kind, probe, resolve_image_size, resolve_weights
from poc.models.registry import HUB_PREFIX, MODELS, ModelSpec, get_spec, model_names

__all__ = ["HUB_PREFIX", "MODELS", "ModelSpec", "VIT_IMAGENET_CHECKPOINTS", "build", "get_spec", "model_names",
           "pretraining_kind", "probe", "resolve_image_size", "resolve_weights"]
