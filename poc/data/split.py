"""Turn a scanned dataset into a train/val/test manifest that every run of a comparison shares.

Models are compared fairly only on the same test images, so the split is a file (`split.csv`) with a
content fingerprint recorded in each run. Two rules guard the test split: it is stratified (every class
in every split), and byte-identical copies move together, so a duplicate can never be trained on and then
"predicted" in the test set. Folders already split by the user (`train/ validation/ test/`) are honoured;
a missing validation/ or test/ folder is carved from train/ by the same stratified, seeded dealing, so
that early stopping always has a validation split and the final evaluation always has a test split.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter, defaultdict

import numpy as np
import pandas as pd

from poc.data.scan import (
    SPLIT_TITLES, ImageRecord, ScanReport, carve_shortfall, carve_sentence, folder_label, scan_dataset,
    splits_to_carve,
)
from poc.errors import UserError

COLUMNS = ["path", "label", "split", "sha256"]
SPLITS = ("train", "val", "test")
_log = logging.getLogger(__name__)


def scan_and_split(data, val: float = 0.1, test: float = 0.1, seed: int = 0) -> pd.DataFrame:
    """Scan the dataset folder `data` and split it (`split_dataset`): the manifest, its class names (the scan's,
    in order) in `attrs["class_names"]`. UserError listing the scan's problems when the dataset is not usable;
    the one refusal of an unusable dataset for `train`, `baseline` and `split`."""
    report = scan_dataset(data)
    if not report.usable:
        raise UserError(f"dataset {data} is not usable:\n  " + "\n  ".join(report.problems))
    df = split_dataset(report, val=val, test=test, seed=seed)
    df.attrs["class_names"] = list(report.class_names)
    return df


def split_dataset(report: ScanReport, val: float = 0.1, test: float = 0.1, seed: int = 0) -> pd.DataFrame:
    """A manifest with columns `path` (absolute, posix), `label`, `split`, `sha256`, sorted by path.

    Class-folder layout: per class, groups of identical files are shuffled with `seed` and dealt into
    round(n * val) val and round(n * test) test groups (at least one each), the rest train.
    Split-folder layout: the folder decides; a duplicate group spread over several split folders goes
    wholly to the earliest of train, val, test (listed in `df.attrs["warnings"]` and logged). A split
    without a folder (or without usable images in it) is carved from train/ as above with its fraction,
    and `df.attrs["carved"]` maps it to a sentence saying so (an empty dict when nothing was carved).
    Guarantees train, val and test are non-empty and every class has a train image.
    Raises UserError for fractions out of range, an unusable report, or a class with too few distinct
    images to deal (3 in the class-folder layout; 1 + the carved splits in train/ otherwise).
    """
    if report.problems:
        raise UserError("the dataset is not usable: " + "; ".join(report.problems))
    fractions = {"val": val, "test": test}
    carve = ["val", "test"] if report.layout == "class_folders" else splits_to_carve(report.layout, report.images)
    _check_fractions(fractions, carve, report)
    groups = _groups(report.images)
    warnings: list[str] = []
    if report.layout == "split_folders":
        assignment = _folder_assignment(groups, warnings)
    else:
        assignment = dict.fromkeys(groups, "train")
    _carve(groups, assignment, report, carve, fractions, seed)
    df = _frame(groups, assignment)
    _check_coverage(df, report)
    df.attrs["warnings"] = warnings
    df.attrs["carved"] = {} if report.layout == "class_folders" else {
        s: carve_sentence(s, fractions[s], report.split_folders, n=int((df["split"] == s).sum()), seed=seed)
        for s in carve
    }
    for message in warnings:
        _log.warning(message)
    for message in df.attrs["carved"].values():
        _log.info(message)
    return df


def split_fingerprint(df: pd.DataFrame) -> str:
    """SHA-256 over the sorted (sha256, label, split) rows: same content and split, same fingerprint,
    wherever the folder lives."""
    rows = sorted(zip(df["sha256"], df["label"], df["split"]))
    digest = hashlib.sha256()
    for sha, label, split in rows:
        digest.update(f"{sha},{label},{split}\n".encode())
    return digest.hexdigest()


def held_out_fingerprint(df: pd.DataFrame) -> str:
    """SHA-256 over the sorted (sha256, label) rows of the test split alone: two runs tested on the same images
    share it, whatever their train/val parts; what pairs two runs for a comparison."""
    test = df[df["split"] == "test"]
    digest = hashlib.sha256()
    for sha, label in sorted(zip(test["sha256"], test["label"])):
        digest.update(f"{sha},{label}\n".encode())
    return digest.hexdigest()


# --- assignment ----------------------------------------------------------------------------------


def _check_fractions(fractions: dict[str, float], carve: list[str], report: ScanReport) -> None:
    """Every fraction in [0, 0.5); one that deals a split must be above 0 (it would carve nothing)."""
    for name, value in fractions.items():
        if not 0 <= value < 0.5:
            raise UserError(f"--{name} must be a fraction above 0 and below 0.5 (got {value})")
        if value == 0 and name in carve:
            if report.layout == "class_folders":
                raise UserError(f"--{name} must be a fraction above 0 and below 0.5 (got {value})")
            raise UserError(
                f"--{name} {value:g} would carve no {SPLIT_TITLES[name]} images, and the dataset has no "
                f"{folder_label(name, report.split_folders)} folder with usable images: use a fraction above 0 "
                f"and below 0.5 (e.g. --{name} 0.1) or add a {folder_label(name, report.split_folders)} folder"
            )
    if len(carve) == 2 and sum(fractions.values()) >= 0.9:
        total = sum(fractions.values())
        raise UserError(f"--val + --test must be below 0.9 to leave training images (got {total:g})")


def _groups(images: list[ImageRecord]) -> dict[str, list[ImageRecord]]:
    """Byte-identical files by sha256, each group sorted by path."""
    groups: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in sorted(images, key=lambda r: r.path):
        groups[record.sha256].append(record)
    return dict(groups)


def _owner(group: list[ImageRecord]) -> str:
    """The class a group is stratified under: its most common label (ties: alphabetical first)."""
    counts = Counter(r.label for r in group)
    return min(counts, key=lambda label: (-counts[label], label))


def _carve(groups, assignment: dict[str, str], report: ScanReport, carve: list[str],
           fractions: dict[str, float], seed: int) -> None:
    """Deal the `carve` splits out of the train groups, per class, in place of `assignment`.

    Groups are ordered by content hash, not path, and classes alphabetically, with one generator, so the
    result is location-free and the same seed gives the same split.
    """
    if not carve:
        return
    by_class: dict[str, list[str]] = {label: [] for label in report.class_names}
    for sha in sorted(groups):
        if assignment[sha] == "train":
            by_class.setdefault(_owner(groups[sha]), []).append(sha)
    rng = np.random.default_rng(seed)
    for label in sorted(by_class):
        shas = by_class[label]
        _check_enough(label, len(shas), carve, report)
        shares = _shares(len(shas), [fractions[s] for s in carve])
        order = [shas[i] for i in rng.permutation(len(shas))]
        bounds = np.cumsum(shares)
        for i, sha in enumerate(order):
            k = int(np.searchsorted(bounds, i, side="right"))
            assignment[sha] = carve[k] if k < len(carve) else "train"


def _check_enough(label: str, n: int, carve: list[str], report: ScanReport) -> None:
    if report.layout == "class_folders":
        if n < 3:
            raise UserError(f"class '{label}' has {n} distinct image{'s' * (n != 1)}; "
                            "at least 3 are needed (train/val/test)")
        return
    shortfall = carve_shortfall(label, n, carve, report.split_folders)
    if shortfall:
        raise UserError(shortfall)


def _shares(n: int, fractions: list[float]) -> list[int]:
    """Groups per carved split: rounded shares, at least 1 each, leaving at least 1 for training
    (the largest share gives way first; ties: the earlier split)."""
    shares = [max(1, math.floor(n * f + 0.5)) for f in fractions]
    while sum(shares) > n - 1:
        candidates = [i for i, s in enumerate(shares) if s > 1]
        shares[max(candidates, key=lambda i: (shares[i], -i))] -= 1
    return shares


def _folder_assignment(groups, warnings: list[str]) -> dict[str, str]:
    """sha256 -> the split folder of its files; a group across folders goes to the earliest split."""
    assignment = {}
    for sha, group in sorted(groups.items()):
        splits = {r.folder_split for r in group}
        chosen = min(splits, key=SPLITS.index)
        assignment[sha] = chosen
        if len(splits) > 1:
            names = ", ".join(r.path.name for r in group)
            warnings.append(f"identical files in several split folders ({names}) all put in {chosen}")
    return assignment


def _check_coverage(df: pd.DataFrame, report: ScanReport) -> None:
    """Training needs every split and a train image of every class; say which folder to fix when not."""
    for split in SPLITS:
        if not (df["split"] == split).any():
            folder = folder_label(split, report.split_folders)
            raise UserError(
                f"the {SPLIT_TITLES[split]} split is empty: every image in {folder} is a byte-identical copy "
                f"of one in an earlier split folder; add distinct images to {folder}"
            )
    trained = set(df.loc[df["split"] == "train", "label"])
    for label in report.class_names:
        if label not in trained:
            where = folder_label("train", report.split_folders) if report.layout == "split_folders" else ""
            raise UserError(f"class '{label}' has no image in the train split; add distinct images to "
                            f"{where}{label}/")


def _frame(groups, assignment: dict[str, str]) -> pd.DataFrame:
    rows = [
        (record.path.resolve().as_posix(), record.label, assignment[sha], sha)
        for sha, group in groups.items()
        for record in group
    ]
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.sort_values("path", kind="stable").reset_index(drop=True)
