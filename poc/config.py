"""One typed config for a training run: defaults live here, the CLI and the sidebar launcher both build it.

The values' own checks (ranges, known names) live here (`RunConfig.check_values`); `poc.train.plan.validate`,
the one validation the CLI, the sidebar launcher and sweeps call, starts with them and adds what needs the model
or the run store (the --from-run source, image size, weights, the cutoff against the model's structure).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poc.errors import UserError
from poc.models.builders import DROPOUT
from poc.models.registry import get_spec

AUGMENTATIONS = ("flip", "rotation", "shift", "brightness", "zoom")
DISTRIBUTE = ("none", "mirrored", "multiworker")


def default_data_root() -> Path:
    """$VITRINE_DATA_ROOT or data/: where the demo data lives and the only place the launcher takes datasets from."""
    return Path(os.environ.get("VITRINE_DATA_ROOT", "data"))


@dataclass
class RunConfig:
    data: str
    model: str = "mobilenet_v2"
    weights: str = "imagenet"  # "none" freezes a random backbone in phase 1: an explicit choice, warned about
    image_size: int | None = None  # None: the model's default
    tl_epochs: int = 50
    ft_epochs: int = 50
    fine_tune_at: str | None = None  # None: the model's default cutoff
    batch_size: int = 32
    lr_tl: float = 1e-3
    lr_ft: float = 1e-5
    patience: int = 5
    augment: list[str] = field(default_factory=lambda: list(AUGMENTATIONS))
    dropout: float = DROPOUT  # the classifier's own default (poc.models.builders)
    val: float = 0.1
    test: float = 0.1
    seed: int = 0
    name: str | None = None
    from_run: str | None = None
    mixed_precision: str = "auto"  # auto | on | off
    jit_compile: str = "auto"
    feature_cache: bool = True  # phase 1 on cached backbone features (False: the backbone runs every epoch)
    tl_views: int = 3  # augmented copies per training image in the feature cache (plus the image itself)
    distribute: str = "none"  # none | mirrored | multiworker (tf.distribute)
    train_fraction: float = 1.0  # share of the training split used (stratified, seeded): data-size studies

    def check_values(self) -> "RunConfig":
        """The values on their own: ranges and known names (UserError naming the flag). The full check of a run's
        settings, model and source run included, is poc.train.plan.validate, which starts here."""
        get_spec(self.model)
        if self.image_size is not None and not 16 <= self.image_size <= 1024:
            raise UserError(f"--image-size {self.image_size} is out of range; use 16 to 1024 pixels")
        for flag, value in (("--tl-epochs", self.tl_epochs), ("--ft-epochs", self.ft_epochs)):
            if value < 0 or value > 10_000:
                raise UserError(f"{flag} {value} is out of range; use 0 to 10000")
        if self.tl_epochs == 0 and not self.from_run:
            raise UserError("--tl-epochs must be at least 1 (the new head needs training), "
                            "unless --from-run reuses an earlier run's phase-1 weights")
        if self.batch_size < 1 or self.batch_size > 4096:
            raise UserError(f"--batch-size {self.batch_size} is out of range; use 1 to 4096")
        for flag, lr in (("--lr-tl", self.lr_tl), ("--lr-ft", self.lr_ft)):
            if not 0 < lr < 1:
                raise UserError(f"{flag} {lr} is out of range; a learning rate is between 0 and 1 (e.g. 1e-3)")
        if self.patience < 1:
            raise UserError(f"--patience {self.patience} must be at least 1")
        unknown = sorted(set(self.augment) - set(AUGMENTATIONS))
        if unknown:
            raise UserError(f"unknown augmentation {', '.join(unknown)}; choose from {', '.join(AUGMENTATIONS)} "
                            "or 'none'")
        if not 0 <= self.dropout < 1:
            raise UserError(f"--dropout {self.dropout} must be in [0, 1)")
        for flag in ("mixed_precision", "jit_compile"):
            if getattr(self, flag) not in ("auto", "on", "off"):
                raise UserError(f"--{flag.replace('_', '-')} must be auto, on or off")
        if not 0 <= self.tl_views <= 64:
            raise UserError(f"--tl-views {self.tl_views} is out of range; use 0 (only the un-augmented image) to 64")
        if not 0 < self.train_fraction <= 1:
            raise UserError(f"--train-fraction {self.train_fraction} is out of range; use a share in (0, 1]")
        if self.distribute not in DISTRIBUTE:
            raise UserError(f"--distribute {self.distribute!r}: choose from {', '.join(DISTRIBUTE)}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def frozen_random(self) -> bool:
        """Phase 1 would freeze a randomly initialised backbone: near-constant features, near-chance accuracy."""
        return self.weights == "none" and not self.from_run and self.tl_epochs > 0

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        """Rejects unknown keys and ill-typed values with a message (a run.json or a launcher form)."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise UserError(f"unknown config key(s): {', '.join(unknown)}")
        cleaned = {}
        for key, value in values.items():
            cleaned[key] = _coerce(key, known[key].type, value)
        return cls(**cleaned)


def parse_augment(text: str) -> list[str]:
    text = text.strip().lower()
    if text in ("", "none", "off"):
        return []
    if text in ("all", "default"):
        return list(AUGMENTATIONS)
    return [part.strip() for part in text.split(",") if part.strip()]


def _coerce(key: str, type_name: Any, value: Any) -> Any:
    kind = str(type_name)
    if value is None:
        if "None" in kind:
            return None
        raise UserError(f"config {key} cannot be empty")
    try:
        if kind.startswith("bool"):
            if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.strip().lower() in ("true", "1", "yes")
            if not isinstance(value, (bool, int)):
                raise ValueError
            return bool(value)
        if kind.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind.startswith("float"):
            return float(value)
        if kind.startswith("list"):
            return parse_augment(value) if isinstance(value, str) else [str(v) for v in value]
        return str(value)
    except (TypeError, ValueError):
        raise UserError(f"config {key}={value!r} is not a valid {kind.split(' ')[0]}") from None


# ---------------------------------------------------------------- the command line, derived from RunConfig

@dataclass(frozen=True)
class Flag:
    help: str = ""
    choices: tuple[str, ...] | None = None
    required: bool = False
    many: bool = False  # the CLI also takes a comma list: one run per value (a study, see poc.train.studies)


# One row per RunConfig field: the flag is --<field-with-dashes>; type and default come from the dataclass.
FLAGS: dict[str, Flag] = {
    "data": Flag("dataset folder: one sub-folder per class, or train/ validation/ test/ folders (required "
                 "unless --resume)"),
    "model": Flag("model name (see the README's model table) or hub:<handle-or-path>"),
    "weights": Flag("imagenet (download) | demo (the project's offline backbones, 64 px) | none (random; "
                    "phase 1 then freezes a random backbone) | a checkpoint path or URL"),
    "image_size": Flag("input size in pixels (default: the model's, 224 for most)"),
    "tl_epochs": Flag("phase 1 (transfer learning, frozen backbone) epochs at most"),
    "ft_epochs": Flag("phase 2 (fine-tuning) epochs at most; 0 skips phase 2"),
    "fine_tune_at": Flag("phase-2 cutoff: layer index, layer name, or blocks:K for ViTs (default: the model's)"),
    "batch_size": Flag("images per batch"),
    "lr_tl": Flag("phase-1 learning rate (Adam)"),
    "lr_ft": Flag("phase-2 learning rate (Adam)"),
    "patience": Flag("early-stopping patience in epochs, on validation loss"),
    "augment": Flag(f"comma list of {','.join(AUGMENTATIONS)}, or none / all"),
    "dropout": Flag("dropout before the softmax head"),
    "val": Flag("validation share when the dataset has no validation/ folder"),
    "test": Flag("test share when the dataset has no test/ folder"),
    "seed": Flag("seed for the split, the model's initial weights and the augmentations"),
    "name": Flag("a name for the run (default: its id)"),
    "from_run": Flag("start phase 2 from this run's phase-1 weights and split"),
    "mixed_precision": Flag("mixed float16 on a GPU", choices=("auto", "on", "off")),
    "jit_compile": Flag("XLA compilation on a GPU", choices=("auto", "on", "off")),
    "feature_cache": Flag("phase 1 trains the head on backbone features computed once (--no-feature-cache: the "
                          "frozen backbone runs again in every epoch, for comparison)"),
    "tl_views": Flag("augmented copies of each training image in the phase-1 feature cache, besides the image "
                     "itself"),
    "train_fraction": Flag("share of the training split to train on (stratified, seeded; validation and test "
                           "unchanged); a comma list (0.1,0.25,0.5,1.0) trains one run per share, a data-size "
                           "study on one split", many=True),
    "distribute": Flag("tf.distribute strategy: mirrored (all local GPUs) or multiworker (machines listed in "
                       "TF_CONFIG); batch size is per replica", choices=DISTRIBUTE),
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_arguments(parser) -> None:
    """The `train` flags, one per RunConfig field, typed and defaulted by the dataclass."""
    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    missing = set(fields) ^ set(FLAGS)
    assert not missing, f"RunConfig fields and FLAGS differ: {sorted(missing)}"  # a programming error
    defaults = RunConfig(data="")
    for name, flag in FLAGS.items():
        kind = str(fields[name].type)
        kwargs: dict[str, Any] = {"help": flag.help, "dest": name}
        if kind.startswith("bool"):  # --name when off by default, --no-name when on by default
            on = getattr(defaults, name)
            parser.add_argument(_bool_flag(name, on), action="store_false" if on else "store_true", **kwargs)
            continue
        if flag.required:
            kwargs["required"] = True
        else:
            default = getattr(defaults, name)
            if isinstance(default, list):
                default = ",".join(default)
            kwargs["default"] = [default] if flag.many else default  # a many flag parses to a list
        if flag.choices:
            kwargs["choices"] = flag.choices
        elif kind.startswith("float"):
            kwargs["type"] = number_list(float, _flag(name)) if flag.many else float
        elif kind.startswith("int"):
            kwargs["type"] = int
        parser.add_argument(_flag(name), **kwargs)


def _bool_flag(name: str, default: bool) -> str:
    return "--no-" + name.replace("_", "-") if default else _flag(name)


def config_from_namespace(namespace) -> RunConfig:
    """The RunConfig an argparse namespace from `add_config_arguments` describes. A `many` flag given as a
    list must hold one value here; `poc.train.studies` expands longer lists into one config per value."""
    values = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(RunConfig)}
    for name, flag in FLAGS.items():
        if flag.many and isinstance(values[name], list):
            if len(values[name]) != 1:
                raise UserError(f"{_flag(name)} lists {len(values[name])} values; one run takes one "
                                "(python -m poc train runs one per value)")
            values[name] = values[name][0]
    return RunConfig.from_dict(values)


def number_list(kind: type, flag: str):
    """An argparse type: "0.1,0.25" -> [0.1, 0.25] (one value -> a one-element list); a bad item names the flag."""
    def parse(text: str) -> list:
        items = [part.strip() for part in str(text).split(",")]
        if not items or "" in items:
            raise argparse.ArgumentTypeError(f"{flag} {text!r}: give a value or a comma list without gaps")
        try:
            return [kind(item) for item in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} {text!r}: {kind.__name__} values expected") from None

    parse.__name__ = f"{kind.__name__} list"  # what argparse names in its own messages
    return parse


def config_to_argv(config: RunConfig) -> list[str]:
    """The `python -m poc train` flags for `config`: --data and --model always, the rest where not default."""
    default = RunConfig(data=config.data)
    argv = [_flag("data"), str(config.data), _flag("model"), config.model]
    for name, value in config.to_dict().items():
        if name in ("data", "model") or value == getattr(default, name):
            continue
        if isinstance(value, bool):
            argv.append(_bool_flag(name, getattr(default, name)))
            continue
        if isinstance(value, list):
            value = ",".join(value) if value else "none"
        argv += [_flag(name), str(value)]
    return argv
