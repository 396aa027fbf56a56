"""One typed config for a training run: defaults live here, the CLI and the sidebar launcher both build it.

Validation that needs no model (ranges, known names) happens here, up front, so a bad value is rejected
before a run directory exists. Cutoffs are checked against the built model by `poc.models.cutoffs`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poc.errors import UserError

AUGMENTATIONS = ("flip", "rotation", "shift", "brightness", "zoom")


def default_data_root() -> Path:
    """$VITRINE_DATA_ROOT or data/: where the demo data lives and the only place the launcher takes datasets from."""
    return Path(os.environ.get("VITRINE_DATA_ROOT", "data"))


@dataclass
class RunConfig:
    data: str
    model: str = "mobilenet_v2"
    weights: str = "none"
    image_size: int | None = None  # None: the model's default
    tl_epochs: int = 50
    ft_epochs: int = 50
    fine_tune_at: str | None = None  # None: the model's default cutoff
    batch_size: int = 32
    lr_tl: float = 1e-3
    lr_ft: float = 1e-5
    patience: int = 5
    augment: list[str] = field(default_factory=lambda: list(AUGMENTATIONS))
    dropout: float = 0.2
    val: float = 0.1
    test: float = 0.1
    seed: int = 0
    name: str | None = None
    from_run: str | None = None
    mixed_precision: str = "auto"  # auto | on | off
    jit_compile: str = "auto"

    def validate(self) -> "RunConfig":
        from poc.models.registry import get_spec  # late: registry imports TensorFlow-free specs only

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
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

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
