"""The plan of a run: the phases to train (data, not code) and everything resolved before a run directory exists.

Phase 1 (transfer learning) trains the new head on a frozen backbone; phase 2 (fine-tuning) unfreezes the
backbone above the cutoff at a low learning rate. One loop (poc.train.phases) runs the list.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from poc.config import RunConfig
from poc.runs.store import RunDir


@dataclass(frozen=True)
class Phase:
    stage: str  # "tl" | "ft"
    epochs: int
    learning_rate: float
    cutoff_index: int | None  # None: the whole backbone frozen


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
