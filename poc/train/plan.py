"""The plan of a run: its settings checked (`validate`), the phases to train (data, not code), and everything
resolved before a run directory exists.

Phase 1 (transfer learning) trains the new head on a frozen backbone; phase 2 (fine-tuning) unfreezes the
backbone above the cutoff at a low learning rate. One loop (poc.train.phases) runs the list.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from poc.config import RunConfig
from poc.errors import UserError
from poc.models.builders import probe as build_probe, resolve_image_size, resolve_weights
from poc.models.registry import ModelSpec, get_spec
from poc.runs import store
from poc.runs.run_info import recorded_image_size
from poc.runs.store import RunDir


@dataclass(frozen=True)
class Phase:
    stage: str  # "tl" | "ft"
    epochs: int
    learning_rate: float
    cutoff_index: int | None  # None: the whole backbone frozen


@dataclass(frozen=True)
class Checked:
    """A run's settings with every check of `validate` passed, and what the checks resolved."""

    config: RunConfig  # a copy; with --from-run, `from_run` is the source's id and `image_size` its size
    spec: ModelSpec
    image_size: int
    source: RunDir | None = None  # the --from-run run
    source_info: dict = field(default_factory=dict)  # its run.json
    probe: object = None  # the model's probe (random weights) the cutoff was resolved on; None when not built
    cutoff_index: int | None = None  # None: left to the caller (probe=False) or a hub model


def validate(config: RunConfig, runs_dir: Path | str | None = None, probe: bool = True) -> Checked:
    """The one check of a run's settings, for `train`, `sweep` and the sidebar launcher (UserError with the
    reason; nothing is written): the values (`RunConfig.check_values`), the --from-run source (it exists, trained
    this model and kept its phase-1 weights; its image size is the run's), the image size for the model, the
    starting weights, then the cutoff against the model's structure: its probe (`poc.models.probe`, random
    weights, built once per model and size). probe=False leaves the cutoff to a caller that builds the model
    anyway; a hub model is never probed here (listing its layers needs a download)."""
    config = RunConfig.from_dict(config.to_dict()).check_values()
    spec = get_spec(config.model)
    source, info = None, {}
    if config.from_run:
        source, info = source_run(config.from_run, config.model, Path(runs_dir or store.default_runs_dir()))
        size = recorded_image_size(info)
        if size is None:
            raise UserError(f"--from-run {source.id}: its run.json does not say which image size it trained")
        if config.image_size and config.image_size != size:
            raise UserError(f"--image-size {config.image_size} differs from run {source.id}'s {size} px")
        config.from_run, config.image_size = source.id, size
    size = resolve_image_size(spec, config.image_size)
    if source is None:  # with --from-run every weight comes from the source run
        resolve_weights(config.model, config.weights, size)
    checked = Checked(config, spec, size, source, info)
    if not probe or spec.family == "hub":
        return checked
    from poc.models.cutoffs import resolve_cutoff  # imports TensorFlow: only once the cheap checks pass

    model = build_probe(config.model, size)
    return dataclasses.replace(checked, probe=model,
                               cutoff_index=resolve_cutoff(model.get_layer("backbone"), config.fine_tune_at, spec))


def source_run(ref: str, model: str, runs_dir: Path) -> tuple[RunDir, dict]:
    """The run `--from-run` names, checked: it exists, trained `model`, and kept its phase-1 weights."""
    source = store.find_run(ref, runs_dir)
    info = store.read_json(source.run_json) if source else None
    if not info:
        raise UserError(f"--from-run {ref}: no such run in {runs_dir}")
    if info.get("model") != model:
        raise UserError(f"--from-run {source.id} trained {info.get('model')!r}, not {model!r}; "
                        f"use --model {info.get('model')}")
    if not source.stage_weights("tl").exists():
        raise UserError(f"--from-run {source.id} has no phase-1 weights (status {info.get('status')!r})")
    return source, info


@dataclass
class Prepared:
    """Everything that can fail on user input, resolved before a run directory is written."""

    config: RunConfig
    spec: object
    image_size: int
    split: pd.DataFrame
    class_names: list[str]
    model: object
    cutoff_index: int
    cutoff_value: str
    source_run: RunDir | None
    data_root: str
    pretraining: str  # imagenet | demo | none | checkpoint: what the backbone started from
    strategy: object = None  # a tf.distribute strategy, or None for the default device
    split_seed: int | None = None  # what seeded the split (None: the source run's split, --from-run)


def plan_phases(config: RunConfig, cutoff_index: int) -> list[Phase]:
    phases = []
    if not config.from_run:
        phases.append(Phase("tl", config.tl_epochs, config.lr_tl, None))
    if config.ft_epochs > 0:
        phases.append(Phase("ft", config.ft_epochs, config.lr_ft, cutoff_index))
    return phases
